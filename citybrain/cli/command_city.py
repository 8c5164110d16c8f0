"""`citybrain city ...`: the simulated city 云州市, its reference files and departmental exports."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from citybrain.cli.base import EXIT_USAGE, current_contracts, current_settings, fail, group, out

city_app = group("city", "The simulated city 云州市 (Yunzhou): districts, streets, roads, devices.")


@city_app.command("show")
def city_show(seed: int = typer.Option(7, help="City seed.")) -> None:
    """What the simulated city holds, district by district."""
    from collections import Counter

    from citybrain.city.build import build_city

    city = build_city(seed)
    table = Table("district", "code", "streets", "population", "devices", title=f"{city.name} ({city.name_en}), seed {seed}")
    streets = Counter(s.district_code for s in city.streets)
    district_of = {s.code: s.district_code for s in city.streets}
    devices = Counter(district_of[d.street_code] for d in city.devices)
    for d in city.districts:
        table.add_row(f"{d.name} {d.name_en}", d.code, str(streets[d.code]), f"{d.population:,}", str(devices[d.code]))
    out.print(table)
    kinds = Counter(d.device_type for d in city.devices)
    pois = Counter(p.category for p in city.pois)
    out.print(f"{len(city.streets)} streets, {len(city.roads)} road segments, {len(city.pois)} points of interest "
              f"({', '.join(f'{k} {v}' for k, v in sorted(pois.items()))}), {len(city.devices)} devices "
              f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); population {city.population:,}",
              highlight=False)


@city_app.command("export")
def city_export(directory: Path = typer.Argument(..., help="Where to write the files."),
                seed: int = typer.Option(7, help="City seed.")) -> None:
    """Write the city as GeoJSON (districts, streets) and one JSONL file per reference contract."""
    from citybrain.city.build import build_city
    from citybrain.city.reference import write_city_files
    from citybrain.sim.clock import default_start
    from citybrain.times import iso

    for path in write_city_files(build_city(seed), directory, iso(default_start())):
        out.print(str(path), highlight=False)


@city_app.command("exports")
def city_exports(
    directory: Path = typer.Argument(..., help="Where to write the export files."),
    hours: float = typer.Option(24.0, help="Simulated hours of departmental records."),
    seed: int = typer.Option(7, help="Seed."),
    scale: float = typer.Option(0.2, help="Share of the city's volume."),
) -> None:
    """Write departmental export files (police 110 in GB18030, urban inspections, the elderly-care
    register, the device registry) from a simulated day, ready for `citybrain load`."""
    from citybrain.ingest.feeds import FeedError, load_feeds
    from citybrain.sim.exports import write_exports
    from citybrain.sim.model import SimConfig

    try:
        feeds = load_feeds(current_settings().feeds_dir, current_contracts())
    except FeedError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    table = Table("feed", "file", "encoding", "rows", "broken rows")
    for written in write_exports(SimConfig(seed=seed, hours=hours, scale=scale, incidents=()), feeds, directory):
        table.add_row(written.feed, str(written.path), written.encoding, str(written.rows), str(written.broken))
    out.print(table)
