"""The departments of CityBrain's city government: contract owners and topic subscribers.

Ids are stable, lower snake case, and appear in contract ``owner`` fields, in routing rules
and in ``dispatch.<dept>.*`` topic names. :data:`DEPARTMENTS` are the built-in roles; a city pack
may declare more, and ``citybrain city import`` records them in ``<state>/city/departments.json``
(:func:`city_departments`) beside the dispatch contracts and grants it writes for them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

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
#: A department id: lower snake case words of letters and digits, 2-40 characters, starting with a letter.
DEPARTMENT_ID_RE = re.compile(r"^(?=.{2,40}$)[a-z][a-z0-9]*(_[a-z0-9]+)*$")
#: Ids no city department may take: ``dispatch.territorial.work_order`` is the city's area offices' topic.
RESERVED_IDS = ("territorial",)
#: The file, in the state's city folder, naming the imported city's departments beyond the roles.
CITY_DEPARTMENTS_FILE = "departments.json"


def city_departments(city_dir: Path) -> dict[str, tuple[str, str]]:
    """The imported city's departments beyond the built-in roles (id -> (name, English name)); empty before
    a pack that declares any was imported."""
    path = city_dir / CITY_DEPARTMENTS_FILE
    if not path.exists():
        return {}
    return {d: (names["name"], names["name_en"]) for d, names in json.loads(path.read_text(encoding="utf-8")).items()}


def known_departments(city_dir: Path) -> dict[str, tuple[str, str]]:
    """The built-in roles and the imported city's own departments."""
    return {**DEPARTMENTS, **city_departments(city_dir)}
