"""`citybrain city ...`: the simulated city 云州市 and city packs (generate, check, import, export); sample
departmental exports under `citybrain dev city exports`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from citybrain.cli.base import (ExitCode, audit, current_contracts, current_settings, dev_app, err, fail, fail_with,
                                group, json_option, moved, out)

city_app = group("city", "The city: city packs (generate, check) and the simulated city 云州市 (Yunzhou).")
dev_city_app = group("city", "Sample departmental export files from the simulated city.", parent=dev_app)


@city_app.command("show")
def city_show(seed: int = typer.Option(7, help="City seed."), as_json: bool = json_option()) -> None:
    """What the simulated city holds, district by district."""
    from citybrain.sim.city import build_city

    city = build_city(seed)
    table = Table("district", "code", "streets", "population", "devices", title=f"{city.name} ({city.name_en}), seed {seed}")
    streets = Counter(s.district_code for s in city.streets)
    district_of = {s.code: s.district_code for s in city.streets}
    devices = Counter(district_of[d.street_code] for d in city.devices)
    kinds = Counter(d.device_type for d in city.devices)
    pois = Counter(p.category for p in city.pois)
    if as_json:
        out.print_json(json.dumps({
            "name": city.name, "name_en": city.name_en, "seed": seed, "population": city.population,
            "districts": [{"name": d.name, "name_en": d.name_en, "code": d.code, "streets": streets[d.code],
                           "population": d.population, "devices": devices[d.code]} for d in city.districts],
            "streets": len(city.streets), "road_segments": len(city.roads),
            "points_of_interest": dict(sorted(pois.items())), "devices": dict(sorted(kinds.items())),
        }, ensure_ascii=False))
        return
    for d in city.districts:
        table.add_row(f"{d.name} {d.name_en}", d.code, str(streets[d.code]), f"{d.population:,}", str(devices[d.code]))
    out.print(table)
    out.print(f"{len(city.streets)} streets, {len(city.roads)} road segments, {len(city.pois)} points of interest "
              f"({', '.join(f'{k} {v}' for k, v in sorted(pois.items()))}), {len(city.devices)} devices "
              f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); population {city.population:,}",
              highlight=False)


@city_app.command("export")
def city_export(directory: Path = typer.Argument(..., file_okay=False, help="Where to write the pack (a folder).")) -> None:
    """Write the city as the reference topics hold it now as a city pack: the start of the next pack.

    Its positions are WGS84 and its manifest has no `geometry` (raw.ref.city does not keep it): a city
    imported with a `geometry.tolerance_m2` above the default needs that block carried over from its
    last manifest, or the exported pack may not pass `city check`."""
    from citybrain.city.pack_check import check_pack
    from citybrain.city.pack_export import export_pack
    from citybrain.errors import InputError

    settings = current_settings()
    try:
        with err.status(f"reading the reference topics from {settings.bootstrap} ..."):
            pack = export_pack(settings)
    except InputError as exc:
        raise fail_with(exc) from None
    pack.write(directory)
    audit("export", "reference topics", directory=directory.name)
    _pack, problems = check_pack(directory)
    out.print(f"{pack.summary()} written to {directory}" + (f"; it has {len(problems)} problem(s): `citybrain city "
              f"check {directory}`" if problems else "; it passes `city check`"), highlight=False)


@dev_city_app.command("exports")
@moved(city_app, "exports", "citybrain city exports", "citybrain dev city exports")
def city_exports(
    directory: Path = typer.Argument(..., help="Where to write the export files."),
    hours: float = typer.Option(24.0, help="Simulated hours of departmental records."),
    seed: int = typer.Option(7, help="Seed."),
    scale: float = typer.Option(0.2, help="Share of the city's volume."),
    as_json: bool = json_option("The files written, as JSON."),
) -> None:
    """Write departmental export files (police 110 in GB18030, urban inspections, the elderly-care
    register, the device registry) from a simulated day, ready for `citybrain load`."""
    from citybrain.ingest.feeds import FeedError, load_feeds
    from citybrain.sim.exports import write_exports
    from citybrain.sim.model import SimConfig

    try:
        feeds = load_feeds(current_settings().feeds_dir, current_contracts())
    except FeedError as exc:
        raise fail_with(exc) from None
    files = write_exports(SimConfig(seed=seed, hours=hours, scale=scale, incidents=()), feeds, directory)
    if as_json:
        out.print_json(json.dumps([{"feed": w.feed, "path": str(w.path), "encoding": w.encoding, "rows": w.rows,
                                    "broken_rows": w.broken} for w in files], ensure_ascii=False))
        return
    table = Table("feed", "file", "encoding", "rows", "broken rows")
    for written in files:
        table.add_row(written.feed, str(written.path), written.encoding, str(written.rows), str(written.broken))
    out.print(table)


@city_app.command("generate")
def city_generate(directory: Path = typer.Argument(..., help="Where to write the pack (a folder)."),
                  seed: int = typer.Option(7, help="City seed."),
                  version: str = typer.Option("1.0.0", help="The pack's version (manifest.json).")) -> None:
    """Write the simulated city 云州市 as a city pack: areas down to communities and grids, departments,
    services, routing rules, devices (see docs/reference/city-pack.md)."""
    from citybrain.sim.city import build_city
    from citybrain.city.pack import pack_from_city

    pack = pack_from_city(build_city(seed), version=version)
    for path in pack.write(directory):
        out.print(f"{path}  ({path.stat().st_size:,} bytes)", highlight=False)
    out.print(pack.summary(), highlight=False)


def _print_problems(problems: list, title: str) -> None:  # type: ignore[type-arg]
    table = Table("file", "where", "rule", "problem", "fix", title=title)
    for p in problems:
        table.add_row(p.file, p.where, p.rule, p.message, p.fix)
    out.print(table)


@city_app.command("check")
def city_check(directory: Path = typer.Argument(..., exists=True, file_okay=False, help="The city pack (a folder)."),
               as_json: bool = json_option("The problems as JSON.")) -> None:
    """Check a city pack against its contracts and rules, then its records against the reference topics'
    contracts; name every problem at once (file, line or feature, rule, fix). Show what importing it would
    create for the departments it declares beyond CityBrain's roles: dispatch topics, principals, grants.

    Exit 0 when it passes, 1 when not."""
    from citybrain.city.pack_check import review_pack
    from citybrain.city.pack_departments import creation_plan, department_problems
    from citybrain.city.pack_import import contract_problems

    with err.status(f"checking {directory} ..."):
        report = review_pack(directory)
        pack, problems, notes = report.pack, report.problems, report.notes
        if pack is not None and not problems:      # as the records would be published, under the topics' contracts
            problems = (contract_problems(pack, current_contracts())
                        + department_problems(pack, current_settings().city_contracts_dir))
        plan = creation_plan(pack) if pack is not None else []
    if as_json:
        out.print_json(json.dumps({"pack": str(directory), "passed": not problems,
                                   "version": pack.manifest.get("version") if pack else None,
                                   "problems": [p.__dict__ for p in problems],
                                   "notes": [n.__dict__ for n in notes],
                                   "creates": [{**c.__dict__, "grants": list(c.grants)} for c in plan]},
                                  ensure_ascii=False))
        raise typer.Exit(ExitCode.FAILURE if problems else ExitCode.OK)
    if problems:
        _print_problems(problems, f"{len(problems)} problem(s) in {directory}")
    if notes:
        _print_notes(notes)
    if plan:
        _print_plan(plan)
    if not problems:
        assert pack is not None
        out.print(f"[green]✓[/] passes: {pack.summary()}", highlight=False)
    raise typer.Exit(ExitCode.FAILURE if problems else ExitCode.OK)


def _print_plan(plan: list) -> None:  # type: ignore[type-arg]
    table = Table("department", "name", "dispatch topic (its contract from the template)", "principal", "grants",
                  title=f"import creates, for {len(plan)} department(s) beyond CityBrain's roles")
    for c in plan:
        table.add_row(c.department, f"{c.name} ({c.name_en})", c.topic, c.principal, "\n".join(c.grants))
    out.print(table)


def _print_notes(notes: list) -> None:  # type: ignore[type-arg]
    table = Table("file", "where", "note", "what it means", "to have it otherwise",
                  title=f"{len(notes)} note(s): the pack passes with them")
    for n in notes:
        table.add_row(n.file, n.where, n.rule, n.message, n.fix)
    out.print(table)


@city_app.command("import")
def city_import(directory: Path = typer.Argument(..., exists=True, file_okay=False, help="The city pack (a folder)."),
                as_json: bool = json_option("What was published, as JSON."),
                force: bool = typer.Option(False, "--force", help="Withdraw areas and services the pack leaves out even "
                                                                  "where open tickets still refer to them.")) -> None:
    """Check a city pack whole, then publish what is new or changed to the reference topics (compacted, keyed:
    an updated area, rule or device replaces only itself), mark what it leaves out withdrawn (devices retired),
    and record the pack's version.

    Nothing of a pack with problems is published (exit 2), nor of one that leaves out an area or a service
    open tickets still refer to (unless --force). Exit 4 when the broker did not take the records."""
    from citybrain.access.grants import department_principal
    from citybrain.city.pack_import import PackError, import_pack
    from citybrain.ingest.producer import DeliveryError

    settings = current_settings()
    try:
        with err.status(f"importing {directory} ..."):
            result = import_pack(settings, current_contracts(), directory, force=force)
    except PackError as exc:
        _print_problems(exc.problems, f"{len(exc.problems)} problem(s): nothing imported")
        raise fail(str(exc), ExitCode.BAD_INPUT) from None
    except (DeliveryError, LookupError, TimeoutError) as exc:
        code = ExitCode.FAILURE if isinstance(exc, LookupError) else ExitCode.SERVICE_UNAVAILABLE
        raise fail(f"{exc} The pack's version was not recorded; importing again publishes what is missing.", code) from None
    audit("pack_import", str(result.version), directory=directory.name, published=sum(result.published.values()))
    if as_json:
        out.print_json(json.dumps(result.__dict__, default=str, ensure_ascii=False))
        return
    for topic in result.published:
        withdrawn = result.withdrawn.get(topic, 0)
        out.print(f"{topic:<26} {result.published[topic]:>6,} published  {result.unchanged[topic]:>6,} unchanged"
                  + (f"  {withdrawn:>6,} withdrawn (left out of the pack)" if withdrawn else ""), highlight=False)
    for department, topic in result.departments.items():
        out.print(f"department {department}: topic {topic}, principal {department_principal(department)}",
                  highlight=False)
    if result.access:
        out.print(f"the city's own departments: {result.access}", highlight=False)
    out.print(f"pack {result.version} imported; recorded in {result.record}.", highlight=False)
