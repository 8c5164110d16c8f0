"""What the city's hotline offers and who is responsible: the service catalogue and routing.

The 12345 service catalogue (Open311 ``services.json`` is built from it), the routing rules
of dispatch (派单: category -> department, SLA, priority) and each department's remit.
Fixed data, reviewed like code; the simulator and the gateway both read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from citybrain.contracts.departments import DEPARTMENTS


@dataclass(frozen=True)
class Service:
    """One hotline service (an Open311 service) and how it is routed."""

    service_code: str
    service_name: str          # Chinese, as callers and operators say it
    service_name_en: str
    category: str              # hotline category (routing key)
    group: str                 # Open311 service group
    department: str            # responsible department id
    sla_hours: float
    priority: str = "normal"
    co_departments: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    daily_share: float = 0.05  # share of a normal day's tickets
    profile: str = "day"       # diurnal profile: day | evening | night | flat
    templates: tuple[str, ...] = ()


SERVICES: tuple[Service, ...] = (
    Service("noise.construction", "施工噪声", "Construction noise", "noise", "environment_noise", "urban_management", 72,
            keywords=("噪声", "施工", "夜间施工"), daily_share=0.06, profile="night", templates=(
                "{place}附近工地{hour}点了还在施工，机器轰鸣，严重影响休息。",
                "{place}旁边的工地夜间打桩，噪声太大，孩子睡不着，请尽快处理。",
                "{place}周边施工噪声扰民，晚上十点以后仍有渣土车进出。")),
    Service("noise.social", "社会生活噪声", "Neighbourhood noise", "noise", "environment_noise", "police", 48,
            keywords=("噪声", "广场舞", "装修"), daily_share=0.05, profile="evening", templates=(
                "{place}楼下广场舞音响声音太大，每天晚上持续到九点多。",
                "{place}楼上装修电钻声不断，周末一大早就开始。",
                "{place}附近烧烤店深夜喧哗，影响居民休息。")),
    Service("garbage.collection", "垃圾清运不及时", "Garbage not collected", "garbage", "city_appearance", "urban_management", 48,
            keywords=("垃圾", "清运"), daily_share=0.08, profile="day", templates=(
                "{place}垃圾桶已满两天无人清运，气味很大。",
                "{place}路边堆放大量建筑垃圾，影响通行。",
                "{place}小区垃圾分类站点长时间未清理，招来蚊蝇。")),
    Service("water.leak", "供水管道漏水", "Water main leak", "water_leak", "water_supply", "water", 24, "urgent",
            keywords=("漏水", "水管"), daily_share=0.04, profile="day", templates=(
                "{place}路面有自来水冒出，疑似地下水管破裂。",
                "{place}小区门口水管漏水，已经流了半天。")),
    Service("water.outage", "停水", "Water outage", "water_outage", "water_supply", "water", 12, "urgent",
            keywords=("停水",), daily_share=0.03, profile="day", templates=(
                "{place}从早上开始停水，没有收到任何通知。",
                "{place}水压很低，高层住户基本没水。")),
    Service("water.waterlogging", "道路积水", "Road waterlogging", "waterlogging", "water_supply", "water", 2, "urgent",
            co_departments=("transport", "emergency"), keywords=("积水", "内涝"), daily_share=0.005, profile="flat", templates=(
                "{place}下穿隧道积水很深，有车辆熄火被困。",
                "{place}路面积水没过脚踝，行人无法通行。",
                "{place}雨水倒灌进小区地下车库，请尽快排水。")),
    Service("road.damage", "道路破损", "Road damage", "road_damage", "roads", "transport", 72,
            keywords=("坑洼", "道路"), daily_share=0.05, profile="day", templates=(
                "{place}路面有一个大坑，电动车经过很危险。",
                "{place}人行道地砖松动破损，老人容易绊倒。")),
    Service("traffic.illegal_parking", "违章停车", "Illegal parking", "illegal_parking", "roads", "police", 24,
            keywords=("停车", "占道"), daily_share=0.09, profile="day", templates=(
                "{place}消防通道被私家车长期占用。",
                "{place}路口车辆乱停乱放，造成拥堵。",
                "{place}小区门口有车辆堵住出入口。")),
    Service("traffic.signal", "信号灯故障", "Traffic signal fault", "traffic_signal", "roads", "police", 12, "urgent",
            keywords=("红绿灯", "信号灯"), daily_share=0.015, profile="day", templates=(
                "{place}路口红绿灯不亮，车辆通行混乱。",
                "{place}信号灯配时不合理，左转等待时间过长。")),
    Service("street_light", "路灯故障", "Street light out", "street_light", "city_appearance", "urban_management", 72,
            keywords=("路灯",), daily_share=0.03, profile="evening", templates=(
                "{place}一整排路灯晚上都不亮，走夜路不安全。",
                "{place}路灯白天也亮着，浪费电。")),
    Service("heating.insufficient", "供暖不热", "Heating insufficient", "heating", "housing", "housing", 24,
            keywords=("供暖", "暖气"), daily_share=0.10, profile="evening", templates=(
                "{place}暖气片温度很低，室内只有十五度左右。",
                "{place}今年供暖一直不热，家里有老人孩子，请协调热力公司。",
                "{place}单元暖气不热，物业说是管道问题一直没修。")),
    Service("property.management", "物业纠纷", "Property management dispute", "property", "housing", "housing", 120,
            keywords=("物业",), daily_share=0.07, profile="day", templates=(
                "{place}物业不作为，电梯坏了一周没人修。",
                "{place}物业乱收停车费，业主意见很大。")),
    Service("elderly.assistance", "养老服务求助", "Elderly assistance", "elderly_assistance", "social_services", "civil_affairs", 24,
            keywords=("老人", "养老", "助餐"), daily_share=0.04, profile="day", templates=(
                "{place}独居老人行动不便，希望社区提供助餐服务。",
                "{place}家里老人需要上门护理，不知道怎么申请。",
                "{place}邻居独居老人几天没出门，电话也打不通，请社区上门看看。")),
    Service("environment.air", "空气污染异味", "Air pollution / odour", "air_pollution", "environment_noise", "environment", 72,
            keywords=("异味", "烟尘", "空气"), daily_share=0.03, profile="day", templates=(
                "{place}附近工厂排放刺鼻气味，晚上尤其严重。",
                "{place}有人露天焚烧垃圾，烟很大。")),
    Service("market.food_safety", "食品安全", "Food safety", "food_safety", "market", "market_regulation", 72,
            keywords=("食品", "餐馆"), daily_share=0.03, profile="day", templates=(
                "{place}一家餐馆卫生条件很差，吃完后肠胃不适。",
                "{place}超市出售过期食品。")),
    Service("health.service", "医疗服务", "Health services", "medical_service", "social_services", "health", 120,
            keywords=("医院", "挂号"), daily_share=0.03, profile="day", templates=(
                "{place}社区卫生服务中心挂号难，希望增加号源。",
                "{place}附近医院停车难，周边道路拥堵。")),
    Service("emergency.hazard", "安全隐患", "Safety hazard", "safety_hazard", "public_safety", "emergency", 24, "urgent",
            keywords=("隐患", "安全"), daily_share=0.02, profile="day", templates=(
                "{place}楼道里堆满杂物，存在消防隐患。",
                "{place}广告牌松动，大风天可能掉落。")),
    Service("consultation.policy", "政策咨询", "Policy question", "consultation", "information", "hotline_12345", 24,
            keywords=("咨询",), daily_share=0.195, profile="day", templates=(
                "想咨询一下{place}所在社区的居住证办理流程。",
                "请问{place}附近的社保经办点在哪里，周末是否办公？",
                "咨询{place}老旧小区改造的政策和时间安排。")),
)

SERVICES_BY_CODE: dict[str, Service] = {s.service_code: s for s in SERVICES}

#: City-event categories the fusion layer raises, and who must act on them.
EVENT_ROUTES: dict[str, tuple[str, float, str, tuple[str, ...]]] = {
    # category: (department, sla hours, priority, co-departments)
    "flood": ("water", 1, "emergency", ("transport", "emergency", "police")),
    "noise_disturbance": ("urban_management", 24, "normal", ("environment",)),
    "air_pollution_episode": ("environment", 12, "urgent", ("health",)),
    "traffic_congestion": ("transport", 2, "urgent", ("police",)),
    "water_supply": ("water", 2, "urgent", ("transport",)),
    "complaint_hotspot": ("hotline_12345", 48, "normal", ()),
    "sensor_fault": ("data_bureau", 72, "normal", ()),
    "security_incident": ("data_bureau", 4, "urgent", ()),
}


def routing_rules(effective_from: str) -> list[dict[str, object]]:
    """``raw.ref.routing_rule`` records: one per hotline service, one per city-event category."""
    rules: list[dict[str, object]] = []
    for s in SERVICES:
        rule: dict[str, object] = {
            "rule_id": s.service_code, "category": s.category, "service_code": s.service_code,
            "department": s.department, "sla_hours": s.sla_hours, "priority": s.priority,
            "effective_from": effective_from,
        }
        if s.co_departments:
            rule["co_departments"] = list(s.co_departments)
        rules.append(rule)
    for category, (dept, sla, priority, co) in EVENT_ROUTES.items():
        rule = {"rule_id": f"event.{category}", "category": category, "department": dept,
                "sla_hours": sla, "priority": priority, "effective_from": effective_from}
        if co:
            rule["co_departments"] = list(co)
        rules.append(rule)
    return rules


def department_remits() -> dict[str, list[str]]:
    """Department id -> the categories it is responsible (or co-responsible) for."""
    remit: dict[str, list[str]] = {d: [] for d in DEPARTMENTS}
    for s in SERVICES:
        for d in (s.department, *s.co_departments):
            if s.category not in remit[d]:
                remit[d].append(s.category)
    for category, (dept, _sla, _prio, co) in EVENT_ROUTES.items():
        for d in (dept, *co):
            if category not in remit[d]:
                remit[d].append(category)
    return remit
