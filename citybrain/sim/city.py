"""Build the simulated city of 云州市 (Yunzhou) from a seed.

A fictional northern Chinese city of 12 districts and 108 streets (街道) on a jittered
lattice, so boundaries tile exactly: every point of the city lies in one street. Roads run
along the lattice (arterials on district boundaries) and through each street; sensors sit
on roads, in streets, at underpasses, drains and the river. Area codes start with 99, a
province code no real area uses.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from citybrain.city.model import City, Device, District, Poi, RoadSegment, Street

NX, NY = 12, 9                 # street cells west-east, south-north
BLOCK = 3                      # a district is BLOCK x BLOCK streets
LON0, LAT0 = 117.300, 38.600   # south-west corner
DLON, DLAT = 0.034, 0.027      # one street cell, about 3 km x 3 km
JITTER = 0.004
RIVER_ROW = 4                  # the 云河 runs west-east through this row of streets
CITY_CODE = "9901"

DISTRICT_NAMES = [
    ("鼓楼区", "Gulou"), ("江滨区", "Jiangbin"), ("云湖区", "Yunhu"), ("城南区", "Chengnan"),
    ("高新区", "Gaoxin"), ("临港区", "Lingang"), ("北山区", "Beishan"), ("西岭区", "Xiling"),
    ("东湖区", "Donghu"), ("新城区", "Xincheng"), ("河口区", "Hekou"), ("安平区", "Anping"),
]
PLACE_NAMES = [
    ("朝阳", "Chaoyang"), ("和平", "Heping"), ("新华", "Xinhua"), ("建设", "Jianshe"), ("光明", "Guangming"),
    ("幸福", "Xingfu"), ("人民", "Renmin"), ("解放", "Jiefang"), ("胜利", "Shengli"), ("友谊", "Youyi"),
    ("文化", "Wenhua"), ("长安", "Chang'an"), ("永安", "Yong'an"), ("东风", "Dongfeng"), ("红旗", "Hongqi"),
    ("迎宾", "Yingbin"), ("青年", "Qingnian"), ("育才", "Yucai"), ("学府", "Xuefu"), ("春晖", "Chunhui"),
    ("翠柳", "Cuiliu"), ("桃园", "Taoyuan"), ("杏林", "Xinglin"), ("梧桐", "Wutong"), ("银杏", "Yinxing"),
    ("海棠", "Haitang"), ("紫荆", "Zijing"), ("丁香", "Dingxiang"), ("玉泉", "Yuquan"), ("金桥", "Jinqiao"),
    ("锦绣", "Jinxiu"), ("宝山", "Baoshan"), ("龙潭", "Longtan"), ("凤鸣", "Fengming"), ("鹤岭", "Heling"),
    ("松涛", "Songtao"), ("清河", "Qinghe"), ("白塔", "Baita"), ("石桥", "Shiqiao"), ("柳园", "Liuyuan"),
    ("南苑", "Nanyuan"), ("北苑", "Beiyuan"), ("西关", "Xiguan"), ("东关", "Dongguan"), ("双井", "Shuangjing"),
    ("太平", "Taiping"), ("安康", "Ankang"), ("福安", "Fu'an"), ("康乐", "Kangle"), ("嘉禾", "Jiahe"),
    ("丰收", "Fengshou"), ("秀水", "Xiushui"), ("明湖", "Minghu"), ("望江", "Wangjiang"), ("临河", "Linhe"),
    ("滨湖", "Binhu"), ("天宁", "Tianning"), ("崇文", "Chongwen"), ("振兴", "Zhenxing"), ("兴隆", "Xinglong"),
    ("广济", "Guangji"), ("仁和", "Renhe"), ("大同", "Datong"), ("瑞丰", "Ruifeng"), ("泰和", "Taihe"),
    ("静安", "Jing'an"), ("宁远", "Ningyuan"), ("新民", "Xinmin"), ("平安", "Ping'an"), ("万福", "Wanfu"),
    ("金台", "Jintai"), ("银河", "Yinhe"),
]
DIRECTIONS = [("东", "East "), ("西", "West "), ("南", "South "), ("北", "North ")]
COMMUNITY_SUFFIXES = ["小区", "家园", "花园", "里", "苑", "新村", "公寓", "嘉园"]
VENDORS = {
    "air_quality": [("云州环测科技", "yz-envtech"), ("北辰大气仪器", "beichen-air")],
    "noise": [("声华智能", "shenghua"), ("云州环测科技", "yz-envtech")],
    "traffic_flow": [("通衢交通科技", "tongqu"), ("星图感知", "xingtu")],
    "water_level": [("清源水务仪表", "qingyuan"), ("澄波测控", "chengbo")],
    "weather": [("云州气象仪器", "yz-met")],
}
OWNERS = {"air_quality": "environment", "noise": "environment", "traffic_flow": "transport", "water_level": "water",
          "weather": "environment"}
PREFIX = {"air_quality": "aq", "noise": "nz", "traffic_flow": "tf", "water_level": "wl", "weather": "ws"}
#: Road class -> (lanes, free-flow speed km/h).
ROAD_CLASSES = {"arterial": (6, 60.0), "secondary": (4, 50.0), "branch": (2, 30.0)}
#: Water gauges: (dry-weather level, level counted as flooded) in metres, per site type.
WATER_SITES = {"underpass": (0.0, 0.27), "street": (0.0, 0.15), "drain": (0.35, 1.2), "river": (1.6, 3.5)}


def _vertex_grid(rng: random.Random) -> list[list[tuple[float, float]]]:
    grid = []
    for i in range(NX + 1):
        column = []
        for j in range(NY + 1):
            jx = rng.uniform(-JITTER, JITTER) if 0 < i < NX else 0.0
            jy = rng.uniform(-JITTER, JITTER) if 0 < j < NY else 0.0
            column.append((round(LON0 + i * DLON + jx, 6), round(LAT0 + j * DLAT + jy, 6)))
        grid.append(column)
    return grid


def _ring(points: list[tuple[float, float]]) -> list[list[float]]:
    return [list(p) for p in points] + [list(points[0])]


def _cell_point(v, i: int, j: int, u: float, w: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The point at (u, w) in 0..1 of cell (i, j), by bilinear interpolation of its corners."""
    (x00, y00), (x10, y10), (x11, y11), (x01, y01) = v[i][j], v[i + 1][j], v[i + 1][j + 1], v[i][j + 1]
    x = (1 - u) * (1 - w) * x00 + u * (1 - w) * x10 + u * w * x11 + (1 - u) * w * x01
    y = (1 - u) * (1 - w) * y00 + u * (1 - w) * y10 + u * w * y11 + (1 - u) * w * y01
    return round(x, 6), round(y, 6)


def build_city(seed: int = 7) -> City:
    """The whole city, identical for the same seed."""
    rng = random.Random(f"citybrain-city-{seed}")
    v = _vertex_grid(rng)
    names = list(PLACE_NAMES)
    rng.shuffle(names)
    street_names = names + [(d[0] + n[0], d[1] + n[1]) for d in DIRECTIONS for n in names]
    community_words = [n for n, _ in PLACE_NAMES]

    districts: list[District] = []
    streets: list[Street] = []
    cell_street: dict[tuple[int, int], Street] = {}
    k = 0
    for d_index, (bi, bj) in enumerate((bi, bj) for bj in range(NY // BLOCK) for bi in range(NX // BLOCK)):
        d_code = f"{CITY_CODE}{d_index + 1:02d}"
        d_name, d_en = DISTRICT_NAMES[d_index]
        d_pop = 0
        for s_index, (i, j) in enumerate((i, j) for j in range(bj * BLOCK, bj * BLOCK + BLOCK)
                                         for i in range(bi * BLOCK, bi * BLOCK + BLOCK)):
            zh, en = street_names[k]
            k += 1
            corners = [v[i][j], v[i + 1][j], v[i + 1][j + 1], v[i][j + 1]]
            centrality = 1 - (abs(i + 0.5 - NX / 2) / (NX / 2) + abs(j + 0.5 - NY / 2) / (NY / 2)) / 2
            population = int(rng.uniform(35_000, 60_000) + 80_000 * centrality ** 2)
            communities = tuple(rng.choice(community_words) + rng.choice(COMMUNITY_SUFFIXES)
                                for _ in range(rng.randint(6, 10)))
            street = Street(
                code=f"{d_code}{s_index + 1:03d}", district_code=d_code, name=f"{zh}街道",
                name_en=f"{en} Street", geometry={"type": "Polygon", "coordinates": [_ring(corners)]},
                population=population, centre=_cell_point(v, i, j, 0.5, 0.5), communities=communities,
                zipcode=f"99{d_index + 1:02d}{s_index + 1:02d}",
            )
            streets.append(street)
            cell_street[(i, j)] = street
            d_pop += population
        x0, y0, x1, y1 = bi * BLOCK, bj * BLOCK, bi * BLOCK + BLOCK, bj * BLOCK + BLOCK
        boundary = ([v[i][y0] for i in range(x0, x1 + 1)] + [v[x1][j] for j in range(y0 + 1, y1 + 1)]
                    + [v[i][y1] for i in range(x1 - 1, x0 - 1, -1)] + [v[x0][j] for j in range(y1 - 1, y0, -1)])
        districts.append(District(d_code, d_name, f"{d_en} District",
                                  {"type": "Polygon", "coordinates": [_ring(boundary)]}, d_pop))

    roads = _roads(rng, v, cell_street)
    pois = _pois(rng, v, cell_street)
    devices = _devices(rng, v, cell_street, roads, pois)
    return City(seed=seed, name="云州市", name_en="Yunzhou", jurisdiction_id="yunzhou.gov.cn",
                districts=districts, streets=streets, roads=roads, pois=pois, devices=devices)


def _roads(rng: random.Random, v, cell_street: dict[tuple[int, int], Street]) -> list[RoadSegment]:  # type: ignore[no-untyped-def]
    roads: list[RoadSegment] = []
    row_names = [n for n, _ in PLACE_NAMES[: NY + 1]]
    col_names = [n for n, _ in PLACE_NAMES[NY + 1: NY + NX + 2]]

    def add(name: str, cls: str, a: tuple[float, float], b: tuple[float, float], cell: tuple[int, int]) -> None:
        lanes, speed = ROAD_CLASSES[cls]
        roads.append(RoadSegment(f"seg-{len(roads) + 1:04d}", name, cls, lanes, speed, (a, b), cell_street[cell].code))

    for j in range(NY + 1):
        for i in range(NX):
            cls = "arterial" if j % BLOCK == 0 else "secondary"
            add(row_names[j] + ("大道" if cls == "arterial" else "路"), cls, v[i][j], v[i + 1][j], (i, min(j, NY - 1)))
    for i in range(NX + 1):
        for j in range(NY):
            cls = "arterial" if i % BLOCK == 0 else "secondary"
            add(col_names[i] + ("大街" if cls == "arterial" else "街"), cls, v[i][j], v[i][j + 1], (min(i, NX - 1), j))
    for (i, j), street in cell_street.items():
        add(street.name.removesuffix("街道") + "支路", "branch",
            _cell_point(v, i, j, 0.0, 0.5), _cell_point(v, i, j, 1.0, 0.5), (i, j))
    return roads


def _pois(rng: random.Random, v, cell_street: dict[tuple[int, int], Street]) -> list[Poi]:  # type: ignore[no-untyped-def]
    pois: list[Poi] = []

    def add(name: str, category: str, i: int, j: int, u: float | None = None, w: float | None = None) -> None:
        lon, lat = _cell_point(v, i, j, u if u is not None else rng.uniform(0.1, 0.9),
                               w if w is not None else rng.uniform(0.1, 0.9))
        pois.append(Poi(f"poi-{len(pois) + 1:05d}", name, category, lon, lat, cell_street[(i, j)].code))

    school_no = 0
    for (i, j), street in sorted(cell_street.items(), key=lambda kv: kv[1].code):
        base = street.name.removesuffix("街道")
        school_no += 1
        add(f"云州市第{school_no}中学" if school_no % 2 else f"{base}小学", "school", i, j)
        add(f"{base}公园", "park", i, j)
        add(f"{base}农贸市场", "market", i, j)
        add(f"{base}养老照料中心", "elderly_care_centre", i, j)
        if rng.random() < 0.35:
            add(f"{base}医院" if rng.random() < 0.5 else f"{base}社区卫生服务中心", "hospital", i, j)
        if rng.random() < 0.5:
            add(f"{base}{rng.choice(['商住', '安置房', '地铁上盖', '学校扩建'])}项目工地", "construction_site", i, j)
        if rng.random() < 0.4:
            add(f"{base}地铁站", "metro_station", i, j)
        if i % BLOCK == 0 and i > 0:   # an underpass where the arterial on the west edge crosses the branch road
            add(f"{base}下穿隧道", "underpass", i, j, 0.03, 0.5)
    return pois


def _devices(rng: random.Random, v, cell_street: dict[tuple[int, int], Street],  # type: ignore[no-untyped-def]
             roads: list[RoadSegment], pois: list[Poi]) -> list[Device]:
    devices: list[Device] = []
    counters = {t: 0 for t in PREFIX}
    epoch = datetime(2019, 1, 1, tzinfo=timezone.utc)

    def add(device_type: str, lon: float, lat: float, street: Street, site_type: str, vendor_index: int | None = None,
            segment_id: str | None = None) -> None:
        counters[device_type] += 1
        vendors = VENDORS[device_type]
        vendor, slug = vendors[vendor_index if vendor_index is not None else (0 if rng.random() < 0.6 else 1)]
        base_level = reference_level = None
        if device_type == "water_level":
            base_level, reference_level = WATER_SITES[site_type]
        installed = epoch + timedelta(days=rng.randint(0, 6 * 365))
        devices.append(Device(
            device_id=f"{PREFIX[device_type]}-{counters[device_type]:04d}", device_type=device_type,
            owner_department=OWNERS[device_type], lon=lon, lat=lat, street_code=street.code, site_type=site_type,
            vendor=vendor, serial_number=f"{slug.upper()[:4]}-{installed.year}-{rng.randint(10000, 99999)}",
            installed_at=installed.strftime("%Y-%m-%dT00:00:00Z"), segment_id=segment_id,
            reference_level=reference_level, base_level=base_level,
        ))

    by_code = {s.code: (i, j, s) for (i, j), s in cell_street.items()}
    for seg in roads:
        if seg.road_class == "branch" and rng.random() < 0.5:
            continue
        i, j, street = by_code[seg.street_code]
        mx, my = seg.midpoint
        cx, cy = street.centre
        # Nudge the gauge off the boundary line into its own street, so position and registry agree.
        add("traffic_flow", round(mx + (cx - mx) * 0.05, 6), round(my + (cy - my) * 0.05, 6), street, seg.road_class,
            segment_id=seg.segment_id)
    construction = {p.street_code: p for p in pois if p.category == "construction_site"}
    for (i, j), street in sorted(cell_street.items(), key=lambda kv: kv[1].code):
        for _ in range(5):
            add("air_quality", *_cell_point(v, i, j, rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)), street, "urban_background")
        for n in range(10):
            site = construction.get(street.code)
            if site is not None and n < 2:   # two gauges by the site fence
                add("noise", round(site.lon + rng.uniform(-0.0015, 0.0015), 6),
                    round(site.lat + rng.uniform(-0.0012, 0.0012), 6), street, "construction")
                continue
            kind = rng.choice(["residential", "residential", "arterial", "commercial", "school", "hospital"])
            add("noise", *_cell_point(v, i, j, rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)), street, kind)
        add("water_level", *_cell_point(v, i, j, rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)), street, "street", 0)
        add("water_level", *_cell_point(v, i, j, rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)), street, "drain", 0)
        if j == RIVER_ROW:
            add("water_level", *_cell_point(v, i, j, 0.5, 0.45), street, "river", 0)
    for p in pois:
        if p.category == "underpass":
            i, j, street = by_code[p.street_code]
            # Two gauges per underpass (north and south ramps); the small vendor supplies them.
            for dy in (-0.0004, 0.0004):
                add("water_level", p.lon, round(p.lat + dy, 6), street, "underpass", 1)
    devices += _weather_stations(sorted(cell_street.values(), key=lambda s: s.code))
    return devices


def _weather_stations(streets: list[Street]) -> list[Device]:
    """One automatic weather station per district, at the centre of its first street; placed without the
    city's random stream, so the rest of the city is what it was before stations were added."""
    vendor, slug = VENDORS["weather"][0]
    first: dict[str, Street] = {}
    for street in streets:
        first.setdefault(street.district_code, street)
    return [Device(device_id=f"{PREFIX['weather']}-{n:04d}", device_type="weather", owner_department=OWNERS["weather"],
                   lon=round(street.centre[0], 6), lat=round(street.centre[1], 6), street_code=street.code,
                   site_type="weather_station", vendor=vendor,
                   serial_number=f"{slug.replace('-', '').upper()}-2019-{10000 + n}", installed_at="2019-06-01T00:00:00Z")
            for n, street in enumerate(first.values(), 1)]
