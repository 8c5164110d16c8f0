"""The access model: principals, their departments and grants, from ``infra/access.yaml``.

Two kinds of principal: a department's (``principals:``, with the contract catalogue and its own consumer groups
added) and a platform service's (``services:``, e.g. ``svc-gateway``: exactly the grants listed, nothing added),
which the service connects as when its settings name it (``CITYBRAIN_PRINCIPAL``).

``load`` reads the file and checks it against the contracts and the city's departments, every
broken rule at once, with the city's own file (``<state>/city/access.yaml``): the principals and
grants ``citybrain city import`` made from this module's templates for the departments a city pack
declares beyond the built-in roles; ``who_can``, ``topics_of`` and ``acl_covers`` answer the questions officers
ask of it. What the broker should hold is :mod:`citybrain.access.acls`; the credentials
:mod:`citybrain.access.credentials`; the audit log :mod:`citybrain.access.audit`.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from citybrain.contracts.topics import CONTRACT_REGISTRY, REPLIES, URGES, WHISTLES, work_orders
from citybrain.contracts.model import Contract, load_platform
from citybrain.contracts.departments import DEPARTMENTS, city_departments
from citybrain.settings import ADMIN_USER, get_settings, packaged
from citybrain.errors import InputError

__all__ = ["ACCESS_FILE", "CATALOG_TOPIC", "CITY_ACCESS_FILE", "GUARDED_WRITE_ZONES", "OPERATIONS", "PRINCIPAL_RE",
           "SERVICE_PREFIX", "AccessError", "AccessModel", "Acl", "Grant", "acl_covers", "city_access_text",
           "department_grants", "department_principal", "load", "topics_of", "who_can"]

#: The access model shipped with the package (``infra/access.yaml`` in a checkout): the template of a deployment's
#: own, which ``Settings.access_file`` names (``CITYBRAIN_CONFIG_DIR``).
ACCESS_FILE = packaged("access.yaml")
#: The city's access file in the state's city folder: what ``citybrain city import`` granted its own departments.
CITY_ACCESS_FILE = "access.yaml"
#: Granted to every principal: the contract catalogue, so a department can discover its topics' contracts.
CATALOG_TOPIC = CONTRACT_REGISTRY
OPERATIONS = ("read", "write")
#: A service's grant may also name a consumer group it reads as (``group: NAME``).
GROUP_KEY = "group"
#: Writing to these zones puts records where the edge's checks are trusted (raw) or where failures are kept (dlq):
#: a write grant on them needs a ``justification``.
GUARDED_WRITE_ZONES = ("raw.", "dlq.")
#: How every platform service's principal starts (``svc-gateway``), so no department's can be taken for one.
SERVICE_PREFIX = "svc-"
PRINCIPAL_RE = re.compile(r"^[a-z][a-z0-9_.-]{2,60}$")

#: One ACL as the broker shows it: (principal, resource type, resource name, pattern type, operation).
Acl = tuple[str, str, str, str, str]


class AccessError(InputError):
    """``infra/access.yaml`` breaks a rule; the message names the entry, the rule and the fix."""


@dataclass(frozen=True)
class Grant:
    """One permission of a principal: read or write a topic, or read as a consumer group, by name or prefix."""

    principal: str
    resource_type: str          # "topic" or "group"
    name: str
    pattern: str                # "literal" or "prefixed"
    operation: str              # "read" or "write"
    justification: str | None = None

    def acl(self) -> Acl:
        return (f"User:{self.principal}", self.resource_type.upper(), self.name, self.pattern.upper(),
                self.operation.upper())

    def covers(self, topic: str) -> bool:
        return topic == self.name if self.pattern == "literal" else topic.startswith(self.name)


@dataclass
class AccessModel:
    """The checked access file: each principal's department and every grant, with the file's digest for the audit."""

    source: Path
    digest: str
    departments: dict[str, str]                       # principal -> department
    grants: list[Grant] = field(default_factory=list)
    services: dict[str, str] = field(default_factory=dict)   # principal -> platform service (gateway, lake-bronze, ...)

    def principals(self) -> list[str]:
        """Every principal the broker should know: the departments' and the services'."""
        return sorted({*self.departments, *self.services})

    def holder(self, principal: str) -> str:
        """Who a principal stands for: its department, or ``service <name>``."""
        return self.departments.get(principal) or f"service {self.services[principal]}"

    def principal_of(self, department_or_principal: str) -> str:
        """The principal named, or the department's (a platform service's is named by its principal)."""
        if department_or_principal in self.departments or department_or_principal in self.services:
            return department_or_principal
        for principal, dept in self.departments.items():
            if dept == department_or_principal:
                return principal
        raise AccessError(f"{department_or_principal!r} is neither a principal nor a department in {self.source.name}. "
                          f"Known: {', '.join(self.principals())}. Fix: use one of them, or declare it.")


def load(path: Path = ACCESS_FILE, contracts: dict[str, Contract] | None = None,
         city_dir: Path | None = None) -> AccessModel:
    """Read and check the access file, with the principals and grants ``citybrain city import`` wrote for the
    city's departments beyond the built-in roles (``<city_dir>/access.yaml``; by default the settings' state);
    every broken rule is reported at once."""
    if not path.exists():
        raise AccessError(f"{path} does not exist. Fix: declare the departments' grants there (see docs/how-to/data-office/access.md).")
    if contracts is None or city_dir is None:
        settings = get_settings()
        contracts = load_platform(settings) if contracts is None else contracts
        city_dir = settings.city_dir if city_dir is None else city_dir
    city = city_dir / CITY_ACCESS_FILE
    texts = [path.read_text()] + ([city.read_text()] if city.exists() else [])
    errors: list[str] = []
    model = AccessModel(source=path, digest=hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16], departments={})
    _principals(model, path, texts[0], DEPARTMENTS, contracts, errors)
    _services(model, path, texts[0], contracts, errors)
    if len(texts) > 1:
        _principals(model, city, texts[1], city_departments(city_dir), contracts, errors)
    if errors:
        names = " and ".join([path.name] + ([f"the city's {CITY_ACCESS_FILE}"] if len(texts) > 1 else []))
        raise AccessError(f"{names} {'has' if len(texts) == 1 else 'have'} {len(errors)} problem(s):\n  "
                          + "\n  ".join(errors))
    return model


def _principals(model: AccessModel, path: Path, text: str, departments: Mapping[str, tuple[str, str]],
                topics: dict[str, Contract], errors: list[str]) -> None:
    """The principals of one access file (the platform's, or the city's with its own ``departments``) into
    ``model``; every broken rule into ``errors``."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        errors.append(f"{path.name} is not valid YAML: {exc}")
        return
    if doc.get("version") != 1:
        errors.append(f"{path.name} `version`: must be 1. Fix: add `version: 1` at the top.")
    principals = doc.get("principals") or {}
    if not isinstance(principals, dict) or not principals:
        errors.append(f"{path.name} `principals`: must map principal names to their department and grants. Fix: see "
                      "the file's header.")
        principals = {}
    for name, spec in principals.items():
        where = f"principals.{name}"
        if not PRINCIPAL_RE.match(str(name)) or name == ADMIN_USER:
            errors.append(f"{where}: a principal name is 3-61 lower-case letters, digits, `._-` and not the platform's "
                          f"{ADMIN_USER}. Fix: rename it, e.g. dept-<department>.")
            continue
        if name in model.departments:
            errors.append(f"{where} in {path.name}: the principal is already declared. Fix: declare each principal once.")
            continue
        spec = spec or {}
        dept = spec.get("department")
        if dept not in departments:
            errors.append(f"{where}.department: {dept!r} is not a department of the city. Fix: one of "
                          f"{', '.join(departments) or '(none: import the city pack that declares it)'}.")
            continue
        model.departments[name] = dept
        model.grants.append(Grant(name, "topic", CATALOG_TOPIC, "literal", "read"))
        model.grants.append(Grant(name, "group", f"{name}.", "prefixed", "read"))
        for i, g in enumerate(spec.get("grants") or []):
            errors += _grant(model, name, f"{where}.grants[{i}]", g or {}, topics)


def _services(model: AccessModel, path: Path, text: str, topics: dict[str, Contract], errors: list[str]) -> None:
    """The platform services' principals (``services:``) into ``model``: each exactly the grants it lists, no
    catalogue or consumer group added; every broken rule into ``errors``."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return      # reported once by _principals
    services = doc.get("services") or {}
    if not isinstance(services, dict):
        errors.append(f"{path.name} `services`: must map principal names to their service and grants. Fix: see the "
                      "file's header.")
        return
    for name, spec in services.items():
        where = f"services.{name}"
        spec = spec or {}
        if not PRINCIPAL_RE.match(str(name)) or name == ADMIN_USER or not str(name).startswith(SERVICE_PREFIX):
            errors.append(f"{where}: a service's principal is {SERVICE_PREFIX}<service>, 3-61 lower-case letters, "
                          f"digits and `._-`, and not the platform's {ADMIN_USER}. Fix: rename it, e.g. "
                          f"{SERVICE_PREFIX}gateway.")
            continue
        if name in model.departments or name in model.services:
            errors.append(f"{where} in {path.name}: the principal is already declared. Fix: declare each principal "
                          "once.")
            continue
        service = spec.get("service")
        if not isinstance(service, str) or not service.strip():
            errors.append(f"{where}.service: names the platform service that connects as {name}. Fix: e.g. "
                          "`service: gateway`.")
            continue
        model.services[name] = service
        for i, g in enumerate(spec.get("grants") or []):
            errors += _grant(model, name, f"{where}.grants[{i}]", g or {}, topics, groups=True)


# -- the city's own departments: their principal and grants from templates ------------------------


def department_principal(department: str) -> str:
    """The broker principal of a department, as every department's is named (``dept-<department>``)."""
    return f"dept-{department}"


def department_grants(department: str) -> list[dict[str, str]]:
    """The grants of a city's own department, as the built-in roles without feeds of their own have them: its work
    orders, which carry the tickets and the fused city events in its remit (lead or support), the urges and
    whistles of the operations view, which may summon it, and the departments' replies to them. The contract
    catalogue and its own consumer groups come with every principal."""
    return [{"read": work_orders(department)}, {"read": URGES}, {"read": WHISTLES}, {"read": REPLIES}]


def city_access_text(departments: Iterable[str]) -> str:
    """The city's access file (``infra/access.yaml``'s format): one principal per department, from the template."""
    doc = {"version": 1, "principals": {department_principal(d): {"department": d, "grants": department_grants(d)}
                                        for d in departments}}
    return CITY_ACCESS_HEADER + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


CITY_ACCESS_HEADER = """\
# Written by `citybrain city import` from the templates of citybrain/access/grants.py: the principals and
# grants of the city pack's departments beyond CityBrain's roles (docs/how-to/data-office/access.md).
# Loaded with infra/access.yaml; change the pack and import it again rather than this file.
"""


def _grant(model: AccessModel, principal: str, where: str, g: dict[str, Any], topics: dict[str, Contract],
           groups: bool = False) -> list[str]:
    """One grant of ``principal`` into ``model``, or what is wrong with it; ``groups``: a service's, which may name
    a consumer group (``group: NAME``)."""
    kinds = (*OPERATIONS, GROUP_KEY) if groups else OPERATIONS
    ops = [op for op in kinds if op in g]
    unknown = set(g) - {*kinds, "pattern", "justification"}
    if len(ops) != 1 or unknown:
        return [f"{where}: a grant is one of {' or '.join(f'`{k}: NAME`' for k in kinds)}, with optional `pattern` and "
                f"`justification`{'; unknown key(s) ' + ', '.join(sorted(unknown)) if unknown else ''}. Fix: e.g. "
                "`{read: dispatch.police.work_order.v1}`."]
    op, name, pattern = ops[0], str(g[ops[0]] or ""), str(g.get("pattern", "literal"))
    justified = bool(str(g.get("justification") or "").strip())
    if pattern not in ("literal", "prefixed"):
        return [f"{where}.pattern: {pattern!r} is not literal or prefixed. Fix: use one of them."]
    if pattern == "prefixed" and (not name or not name.endswith(".")):
        return [f"{where}: the prefix {name!r} is not whole name segments ending in `.`; an empty or partial prefix "
                "grants names nobody has reviewed (an empty one: every topic). Fix: name the topics, or a prefix "
                "such as `alert.`."]
    if op == GROUP_KEY:
        if not name:
            return [f"{where}: a consumer group needs a name. Fix: the group_id the service reads as."]
        model.grants.append(Grant(principal, "group", name, pattern, "read", g.get("justification")))
        return []
    matched = [t for t in topics if (t == name if pattern == "literal" else t.startswith(name))]
    if not matched:
        return [f"{where}: no contract topic {'is' if pattern == 'literal' else 'starts with'} {name!r}. Fix: use a "
                "topic from `citybrain contracts list`."]
    personal = sorted(t for t in matched if topics[t].personal_fields())
    if op == "read" and personal and not justified:
        return [f"{where}: {', '.join(personal)} hold(s) personal data ({', '.join(topics[personal[0]].personal_fields())}); "
                "reading it needs a `justification` the data-security officer has approved. Fix: add one, or grant "
                "the curated topic instead."]
    guarded = sorted(t for t in matched if t.startswith(GUARDED_WRITE_ZONES))
    if op == "write" and guarded and not justified:
        return [f"{where}: writing {', '.join(guarded[:3])}{' ...' if len(guarded) > 3 else ''} puts records in the "
                "raw zone, which the platform trusts as checked by the edge, or in the dead letters, which record "
                "its failures; it needs a `justification` saying which checks the writer makes. Fix: add one, or "
                "deliver through the edge (gateway, file loader)."]
    model.grants.append(Grant(principal, "topic", name, pattern, op, g.get("justification")))
    return []


# -- questions officers ask -----------------------------------------------------------------------


def who_can(model: AccessModel, topic: str, operation: str = "read") -> list[Grant]:
    """Grants that let a principal do ``operation`` on ``topic`` (the platform's super user aside)."""
    return [g for g in model.grants if g.resource_type == "topic" and g.operation == operation and g.covers(topic)]


def topics_of(model: AccessModel, principal: str, topics: Iterable[str], operation: str = "read") -> dict[str, Grant]:
    """Topic -> the grant that lets ``principal`` do ``operation`` on it."""
    mine = [g for g in model.grants if g.principal == principal and g.resource_type == "topic" and g.operation == operation]
    return {t: g for t in sorted(topics) for g in mine if g.covers(t)}


def acl_covers(acl: Acl, topic: str) -> bool:
    """Does a broker ACL (topic, literal, prefixed or the ``*`` wildcard) apply to ``topic``?"""
    _principal, rtype, name, pattern, _op = acl
    if rtype != "TOPIC":
        return False
    return name == "*" or (topic.startswith(name) if pattern == "PREFIXED" else topic == name)


#: Names that lived here before the split, and the module that holds them now: callers that still import
#: them from ``citybrain.access.grants`` get them, loaded on first use (``from citybrain.access import X``
#: is the public way; drop an entry once no caller imports it from here).
_MOVED = {"apply": "acls", "broker_acl_set": "acls", "broker_acl_set_if_up": "acls", "rotate": "acls",
          "topic_access": "acls", "CredentialStore": "credentials", "client_config": "credentials",
          "audit_path": "audit", "read_audit": "audit"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(f"citybrain.access.{_MOVED[name]}"), name)
    raise AttributeError(f"module 'citybrain.access.grants' has no attribute {name!r}")
