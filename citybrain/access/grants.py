"""The access model: principals, their departments and grants, from ``infra/access.yaml``.

``load`` reads the file and checks it against the contracts and the city's departments, every
broken rule at once; ``who_can``, ``topics_of`` and ``acl_covers`` answer the questions officers
ask of it. What the broker should hold is :mod:`citybrain.access.acls`; the credentials
:mod:`citybrain.access.credentials`; the audit log :mod:`citybrain.access.audit`.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from citybrain.contracts.topics import CONTRACT_REGISTRY
from citybrain.contracts.model import Contract, load_all
from citybrain.contracts.departments import DEPARTMENTS
from citybrain.settings import ADMIN_USER, PROJECT_ROOT, get_settings
from citybrain.errors import InputError

__all__ = ["ACCESS_FILE", "CATALOG_TOPIC", "OPERATIONS", "PRINCIPAL_RE", "AccessError", "AccessModel", "Acl", "Grant",
           "acl_covers", "load", "topics_of", "who_can"]

ACCESS_FILE = PROJECT_ROOT / "infra" / "access.yaml"
#: Granted to every principal: the contract catalogue, so a department can discover its topics' contracts.
CATALOG_TOPIC = CONTRACT_REGISTRY
OPERATIONS = ("read", "write")
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

    def principal_of(self, department_or_principal: str) -> str:
        if department_or_principal in self.departments:
            return department_or_principal
        for principal, dept in self.departments.items():
            if dept == department_or_principal:
                return principal
        raise AccessError(f"{department_or_principal!r} is neither a principal nor a department in {self.source.name}. "
                          f"Known: {', '.join(sorted(self.departments))}. Fix: use one of them, or declare it.")


def load(path: Path = ACCESS_FILE, contracts: dict[str, Contract] | None = None) -> AccessModel:
    """Read and check the access file; every broken rule is reported at once."""
    if not path.exists():
        raise AccessError(f"{path} does not exist. Fix: declare the departments' grants there (see docs/how-to/data-office/access.md).")
    text = path.read_text()
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise AccessError(f"{path.name} is not valid YAML: {exc}") from None
    if contracts is None:
        contracts = load_all(get_settings().schemas_dir)
    topics = contracts                               # keyed by topic
    errors: list[str] = []
    if doc.get("version") != 1:
        errors.append("`version`: must be 1. Fix: add `version: 1` at the top.")
    model = AccessModel(source=path, digest=hashlib.sha256(text.encode()).hexdigest()[:16], departments={})
    principals = doc.get("principals") or {}
    if not isinstance(principals, dict) or not principals:
        errors.append("`principals`: must map principal names to their department and grants. Fix: see the file's header.")
        principals = {}
    for name, spec in principals.items():
        where = f"principals.{name}"
        if not PRINCIPAL_RE.match(str(name)) or name == ADMIN_USER:
            errors.append(f"{where}: a principal name is 3-61 lower-case letters, digits, `._-` and not the platform's "
                          f"{ADMIN_USER}. Fix: rename it, e.g. dept-<department>.")
            continue
        spec = spec or {}
        dept = spec.get("department")
        if dept not in DEPARTMENTS:
            errors.append(f"{where}.department: {dept!r} is not a department of the city. Fix: one of "
                          f"{', '.join(DEPARTMENTS)}.")
            continue
        model.departments[name] = dept
        model.grants.append(Grant(name, "topic", CATALOG_TOPIC, "literal", "read"))
        model.grants.append(Grant(name, "group", f"{name}.", "prefixed", "read"))
        for i, g in enumerate(spec.get("grants") or []):
            errors += _grant(model, name, f"{where}.grants[{i}]", g or {}, topics)
    if errors:
        raise AccessError(f"{path.name} has {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    return model


def _grant(model: AccessModel, principal: str, where: str, g: dict[str, Any], topics: dict[str, Contract]) -> list[str]:
    ops = [op for op in OPERATIONS if op in g]
    unknown = set(g) - {*OPERATIONS, "pattern", "justification"}
    if len(ops) != 1 or unknown:
        return [f"{where}: a grant is one of `read: TOPIC` or `write: TOPIC`, with optional `pattern` and "
                f"`justification`{'; unknown key(s) ' + ', '.join(sorted(unknown)) if unknown else ''}. Fix: e.g. "
                "`{read: dispatch.police.work_order.v1}`."]
    op, name, pattern = ops[0], str(g[ops[0]]), str(g.get("pattern", "literal"))
    if pattern not in ("literal", "prefixed"):
        return [f"{where}.pattern: {pattern!r} is not literal or prefixed. Fix: use one of them."]
    matched = [t for t in topics if (t == name if pattern == "literal" else t.startswith(name))]
    if not matched:
        return [f"{where}: no contract topic {'is' if pattern == 'literal' else 'starts with'} {name!r}. Fix: use a "
                "topic from `citybrain contracts list`."]
    personal = sorted(t for t in matched if topics[t].personal_fields())
    if op == "read" and personal and not str(g.get("justification", "")).strip():
        return [f"{where}: {', '.join(personal)} hold(s) personal data ({', '.join(topics[personal[0]].personal_fields())}); "
                "reading it needs a `justification` the data-security officer has approved. Fix: add one, or grant "
                "the curated topic instead."]
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
