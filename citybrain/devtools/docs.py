"""The docs' reference pages, generated from the code on every build (a mkdocs hook).

``mkdocs.yml`` names this file under ``hooks:``; ``on_files`` adds these pages to the build, so a
reference page is never older than the code the site was built from, and none is committed:

    reference/cli.md           every ``citybrain`` command, from the click tree of the installed program
    reference/settings.md      every CITYBRAIN_* variable, from citybrain.settings.Settings
    reference/topics.md        every topic and its fields, from the contracts in schemas/
    reference/dead-letters.md  every dead-letter rule and its fix, from citybrain.contracts.validate.FIXES
    reference/package.md       the package's rooms and modules, from their docstrings

The CLI sits above the developer tools in the layers (it imports the bench and the demo from here),
so the command tree is loaded the way a shell finds it: the ``citybrain`` console script's entry point.
The pages name no machine's paths: defaults under the repository are written relative to it.
"""

from __future__ import annotations

import ast
import inspect
import re
import logging
from importlib.metadata import entry_points
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from pydantic.fields import FieldInfo

from citybrain.contracts.model import Contract, load_all
from citybrain.contracts.validate import FIXES
from citybrain.errors import ExitCode
from citybrain.settings import ENV_PREFIX, PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

#: The console script whose command tree the CLI reference documents (pyproject's [project.scripts]).
SCRIPT = "citybrain"
GENERATED_NOTE = "<!-- generated on every docs build by citybrain/devtools/docs.py: edits here are lost -->"


def scrub(text: str) -> str:
    """The text without this checkout's location: paths under the repository become relative to it."""
    return text.replace(str(PROJECT_ROOT) + "/", "").replace(str(PROJECT_ROOT), ".")


def _cell(text: object) -> str:
    """A value fit for one cell of a Markdown table."""
    return scrub(str(text)).replace("|", "\\|").replace("\n", " ").strip()


# -- the command line ----------------------------------------------------------------------------


def installed_cli() -> Any:
    """The click command behind the installed ``citybrain`` program (typer's own click)."""
    found = entry_points(group="console_scripts", name=SCRIPT)
    if not found:
        raise LookupError(f"no console script {SCRIPT!r} is installed, so the CLI reference cannot be written. "
                          "Fix: install the package into this environment (`pip install -e .`).")
    import typer.main

    return typer.main.get_command(next(iter(found)).load())


#: Hidden from ``--help``'s first screen, documented all the same: the developer tools (``citybrain dev ...``).
DOCUMENTED_HIDDEN = {(SCRIPT, "dev")}


def _shown(path: tuple[str, ...], sub: Any) -> bool:
    """Documented: visible commands, and hidden groups that are places of their own (not old names kept as aliases)."""
    return sub is not None and (not sub.hidden or path in DOCUMENTED_HIDDEN)


def commands(command: Any, ctx: Any = None, path: tuple[str, ...] = (SCRIPT,)) -> list[tuple[tuple[str, ...], Any, Any]]:
    """Every documented command and group under ``command`` with its path and context, depth first, in the CLI's order.

    Typer vendors its own click, so commands are told apart by what they do (a group lists commands),
    and each context is made by the command's own context class.
    """
    ctx = command.context_class(command, info_name=path[-1], parent=ctx)
    found = [(path, command, ctx)]
    for name in command.list_commands(ctx) if hasattr(command, "list_commands") else ():
        sub = command.get_command(ctx, name)
        if _shown(path + (name,), sub):
            found += commands(sub, ctx, path + (name,))
    return found


def exit_codes() -> list[tuple[int, str, str]]:
    """(code, name, meaning) of every :class:`~citybrain.errors.ExitCode`, the meaning from its ``#:`` comment."""
    notes: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(ExitCode).splitlines():
        line = line.strip()
        if line.startswith("#:"):
            pending.append(line[2:].strip())
        elif "=" in line:
            notes[line.split("=", 1)[0].strip()] = re.sub(r":class:`([^`]+)`", r"`\1`", " ".join(pending))
            pending = []
    return [(int(c), c.name, notes.get(c.name) or "Done.") for c in ExitCode]


def cli_page(root: Any) -> str:
    """The CLI reference: the exit codes, then each command's usage, help and parameters, as ``--help`` gives them."""
    lines = ["# Command line", "", GENERATED_NOTE, "",
             f"Every command of `{SCRIPT}`, read from the program itself; `{SCRIPT} COMMAND --help` prints the same.", "",
             "## Exit codes", "", f"Every command of `{SCRIPT}` exits with one of these (`citybrain.errors.ExitCode`).", "",
             "| code | name | meaning |", "| --- | --- | --- |"]
    lines += [f"| {code} | `{name}` | {_cell(scrub(meaning))} |" for code, name, meaning in exit_codes()]
    lines.append("")
    for path, command, ctx in commands(root):
        lines += [f"## `{' '.join(path)}`", "", "```text", scrub(command.get_usage(ctx)).strip(), "```", ""]
        if command.help:
            lines += [scrub(inspect.cleandoc(command.help)), ""]
        records = [r for r in (p.get_help_record(ctx) for p in command.get_params(ctx) if p.name != "help") if r]
        if records:
            lines += ["| parameter | meaning |", "| --- | --- |"]
            lines += [f"| `{_cell(names)}` | {_cell(help_text)} |" for names, help_text in records]
            lines.append("")
        if hasattr(command, "list_commands"):
            subs = [(n, command.get_command(ctx, n)) for n in command.list_commands(ctx)]
            lines += ["| command | does |", "| --- | --- |"]
            lines += [f"| [`{' '.join(path)} {n}`](#{_anchor(path + (n,))}) | {_cell(c.get_short_help_str(limit=120))} |"
                      for n, c in subs if _shown(path + (n,), c)]
            lines.append("")
    return "\n".join(lines)


def _anchor(path: tuple[str, ...]) -> str:
    """The id mkdocs gives the heading of a command (its words joined by dashes)."""
    return "-".join(path).lower()


# -- settings ------------------------------------------------------------------------------------


def setting_notes() -> tuple[dict[str, str], dict[str, str]]:
    """The comments of ``Settings``' source: each field's own note, and the heading of the block it is in.

    A comment after a blank line heads the block of fields below it; a comment between two fields of
    a block is the note of the field right after it.
    """
    source = inspect.cleandoc("\n" + inspect.getsource(Settings))
    notes: dict[str, str] = {}
    headings: dict[str, str] = {}
    heading, pending, after_field = "", [], False
    for line in source.splitlines()[1:]:
        text = line.strip()
        if not text:
            heading, pending, after_field = "", [], False
        elif text.startswith("#"):
            pending.append(text.lstrip("#").strip())
        else:
            name = text.split(":", 1)[0].strip()
            if name in Settings.model_fields:
                if pending and (after_field or heading):
                    notes[name] = " ".join(pending)
                elif pending:
                    heading = " ".join(pending)
                headings[name] = heading
                pending, after_field = [], True
            else:
                pending = []
    return notes, headings


def _type_name(annotation: Any) -> str:
    """A setting's type in words: ``int``, ``secret``, one of its literal values."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if args and get_origin(annotation) in (Union, UnionType):
        return " or ".join(_type_name(a) for a in args)
    name = getattr(annotation, "__name__", str(annotation))
    return {"SecretStr": "secret", "Path": "path"}.get(name, name)


def _default(info: FieldInfo) -> str:
    """A setting's default as the docs show it: paths relative to the repository, an empty one said so."""
    if info.default is None:
        return "–"
    if info.default == "":
        return "(empty)"
    if isinstance(info.default, Path):
        return f"`{scrub(str(info.default))}/`"
    return f"`{info.default}`"


def _limits(info: FieldInfo) -> str:
    """The bounds and pattern pydantic checks a setting's value against."""
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "pattern": "matches"}
    found = []
    for item in info.metadata:
        for key, sign in words.items():
            value = getattr(item, key, None)
            if value is not None:
                found.append(f"{sign} `{value}`")
    return ", ".join(found)


def settings_page() -> str:
    """Every CITYBRAIN_* variable, in the blocks ``Settings`` declares them in."""
    notes, headings = setting_notes()
    lines = ["# Settings", "", GENERATED_NOTE, "",
             f"All settings are `{ENV_PREFIX}*` environment variables, read into one typed object "
             "(`citybrain/settings.py`). An unknown `CITYBRAIN_*` variable is refused with the valid names; "
             "secrets are never printed. Paths default to folders of the repository; installed from a wheel, to the "
             "package's own data and the state to `$XDG_STATE_HOME/citybrain` "
             "([installing from a wheel](../how-to/operator/install.md)).", ""]
    block = None
    for name, info in Settings.model_fields.items():
        if headings.get(name, "") != block:
            block = headings.get(name, "")
            lines += ["", scrub(block) if block else "", "",
                      "| variable | type | default | limits | meaning |", "| --- | --- | --- | --- | --- |"]
        meaning = info.description or notes.get(name, "")
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | {_type_name(info.annotation)} | {_cell(_default(info))} | "
                     f"{_cell(_limits(info))} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


# -- topics and dead letters ---------------------------------------------------------------------


def _property(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema of the field at ``path`` (``a.b``, ``a[].b``)."""
    node: dict[str, Any] = schema
    for part in path.split("."):
        items = part.endswith("[]")
        node = (node.get("properties") or {}).get(part.removesuffix("[]"), {})
        if items:
            node = node.get("items") or {}
    return node


def _retention(contract: Contract) -> str:
    return str(contract.raw["topic"].get("retention", "broker default"))


def topics_page(schemas_dir: Path) -> str:
    """Every topic: the table of all, then each with its fields."""
    contracts = sorted(load_all(schemas_dir).values(), key=lambda c: c.topic)
    lines = ["# Topics", "", GENERATED_NOTE, "",
             f"The {len(contracts)} topics of the contracts in `schemas/` (one file per topic; see "
             "[the contract format](contracts.md)). `citybrain contracts show TOPIC` prints the same on the command line.",
             "", "| topic | version | owner | partitions | cleanup | retention | key | personal fields | what |",
             "| --- | --- | --- | ---: | --- | --- | --- | ---: | --- |"]
    for c in contracts:
        lines.append(f"| [`{c.topic}`](#{c.topic.replace('.', '')}) | {c.version} | {c.owner} | {c.partitions} | "
                     f"{c.cleanup_policy} | {_retention(c)} | `{'`, `'.join(c.key_fields)}` | "
                     f"{len(c.personal_fields())} | {_cell(c.raw['title'])} |")
    for c in contracts:
        lines += ["", f"## {c.topic}", "", _cell(c.raw["description"]), ""]
        facts = [f"owner `{c.owner}`", f"version {c.version}", f"compatibility `{c.compatibility}`"]
        if c.raw.get("standard"):
            facts.append(f"standard: {c.raw['standard']}")
        if c.event_id_field:
            facts.append(f"event id `{c.event_id_field}`")
        if c.raw.get("deprecated"):
            facts.append("**deprecated**")
        lines += ["; ".join(facts) + ".", "",
                  "| field | type | required | classification | personal | leaves the raw zone | meaning |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for path, f in c.fields.items():
            prop = _property(c.schema, path)
            unit = f" ({prop['x-unit']})" if prop.get("x-unit") else ""
            lines.append(f"| `{path}` | {'/'.join(f.types) or 'any'} | {'yes' if f.required else ''} | "
                         f"{f.classification or ''} | {'yes' if f.personal else ''} | {f.protect or ''} | "
                         f"{_cell((prop.get('description') or '') + unit)} |")
    return "\n".join(lines) + "\n"


def dead_letters_page() -> str:
    """Every rule a record can be dead-lettered under, with the fix its dead letter carries."""
    lines = ["# Dead-letter rules", "", GENERATED_NOTE, "",
             "A record the edge refuses goes to `dlq.ingest.rejected.v1` with its rule in the `dlq-rule` header and "
             "in the envelope, beside the fix below. Rules of the JSON Schema not listed here carry the fix "
             "\"see the contract\".", "", "| rule | fix |", "| --- | --- |"]
    lines += [f"| `{rule}` | {_cell(fix)} |" for rule, fix in FIXES.items()]
    return "\n".join(lines) + "\n"


# -- the package ---------------------------------------------------------------------------------


def _summary(path: Path) -> str:
    """The first paragraph of a module's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def package_page(package: Path = PROJECT_ROOT / "citybrain") -> str:
    """Each room of the package and its modules, as their docstrings describe them."""
    lines = ["# The package", "", GENERATED_NOTE, "",
             "`citybrain/` is the one shared package: the foundation at its root, then one room per stage of the "
             "data's way. Imports point down the layers written in `pyproject.toml` (`lint-imports` checks them).", "",
             "| module | holds |", "| --- | --- |"]
    lines += [f"| `{p.name}` | {_cell(_summary(p))} |" for p in sorted(package.glob("*.py")) if p.name != "__init__.py"]
    for room in sorted(p for p in package.iterdir() if (p / "__init__.py").exists()):
        lines += ["", f"## `{room.name}/`", "", _cell(_summary(room / "__init__.py")), "",
                  "| module | holds |", "| --- | --- |"]
        lines += [f"| `{p.name}` | {_cell(_summary(p))} |" for p in sorted(room.glob("*.py")) if p.name != "__init__.py"]
    return "\n".join(lines) + "\n"


# -- the hook ------------------------------------------------------------------------------------


def pages() -> dict[str, str]:
    """Every generated page by its place in the docs."""
    schemas_dir = Settings.model_fields["schemas_dir"].default
    return {
        "reference/cli.md": cli_page(installed_cli()),
        "reference/settings.md": settings_page(),
        "reference/topics.md": topics_page(schemas_dir),
        "reference/dead-letters.md": dead_letters_page(),
        "reference/package.md": package_page(),
    }


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """mkdocs hook: add the generated reference pages to the build."""
    for src_uri, content in pages().items():
        if files.get_file_from_path(src_uri) is not None:
            raise FileExistsError(f"docs/{src_uri} exists, but it is generated on every build. "
                                  "Fix: delete the file; change the code it is generated from instead.")
        files.append(File.generated(config, src_uri, content=content))
        log.debug("generated %s (%d characters)", src_uri, len(content))
    return files
