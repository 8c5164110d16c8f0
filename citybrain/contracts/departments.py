"""The departments of CityBrain's city government: contract owners and topic subscribers.

Ids are stable, lower snake case, and appear in contract ``owner`` fields, in routing rules
and in ``dispatch.<dept>.*`` topic names.
"""

from __future__ import annotations

#: department id -> (Chinese name, English name)
DEPARTMENTS: dict[str, tuple[str, str]] = {
    "data_bureau": ("市大数据局", "Big Data Bureau (platform operator)"),
    "hotline_12345": ("12345市民服务热线", "12345 Citizen Service Hotline"),
    "police": ("市公安局", "Public Security Bureau"),
    "urban_management": ("市城市管理局", "Urban Management Bureau"),
    "transport": ("市交通运输局", "Transport Bureau"),
    "environment": ("市生态环境局", "Ecology and Environment Bureau"),
    "water": ("市水务局", "Water Affairs Bureau"),
    "civil_affairs": ("市民政局", "Civil Affairs Bureau"),
    "housing": ("市住房和城乡建设局", "Housing and Urban-Rural Development Bureau"),
    "health": ("市卫生健康委员会", "Health Commission"),
    "emergency": ("市应急管理局", "Emergency Management Bureau"),
    "market_regulation": ("市市场监督管理局", "Market Regulation Administration"),
}
