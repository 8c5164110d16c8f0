"""Department access as code: principals, credentials and ACL grants from ``infra/access.yaml``.

``load`` reads and checks the file against the contracts and the city's departments;
``declared_acl_set`` turns it into the ACLs the broker should hold (the security DAG
compares them with the broker's); ``apply`` reconciles the broker with it (SCRAM-SHA-512
credentials for every principal, ACLs added and removed) and appends every change to the
audit log ``<state_dir>/access/audit.jsonl``. Department passwords are generated once and
kept, owner-only, in ``<state_dir>/access/credentials.json``; ``client_config`` hands a
department what its client needs.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import yaml

from citybrain.contracts.model import Contract, load_all
from citybrain.contracts.departments import DEPARTMENTS
from citybrain.settings import ADMIN_USER, PROJECT_ROOT, SASL_MECHANISM, Settings, get_settings, write_private
from citybrain.errors import InputError
from citybrain.kafka import clients

ACCESS_FILE = PROJECT_ROOT / "infra" / "access.yaml"
#: Granted to every principal: the contract catalogue, so a department can discover its topics' contracts.
CATALOG_TOPIC = "catalog.contracts.registry.v1"
OPERATIONS = ("read", "write")
PRINCIPAL_RE = re.compile(r"^[a-z][a-z0-9_.-]{2,60}$")

#: One ACL as the broker shows it: (principal, resource type, resource name, pattern type, operation).
Acl = tuple[str, str, str, str, str]


class AccessError(InputError):
    """``infra/access.yaml`` breaks a rule; the message names the entry, the rule and the fix."""


@dataclass(frozen=True)
class Grant:
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
        raise AccessError(f"{path} does not exist. Fix: declare the departments' grants there (see the README).")
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


def declared_acl_set(model: AccessModel) -> set[Acl]:
    """The ALLOW ACLs the broker should hold, in the security DAG's grant format."""
    return {g.acl() for g in model.grants}


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


# -- the broker -----------------------------------------------------------------------------------


def broker_acl_set_if_up(settings: Settings) -> set[Acl] | None:
    """The broker's ACLs when it answers; None when it is down (or has no authoriser)."""
    if settings.embedded:
        from citybrain.broker.local import LocalBroker

        if not LocalBroker(settings).status().running:
            return None
    try:
        return broker_acl_set(settings)
    except Exception:  # unreachable or refused: the caller shows the declared grants only
        return None


def topic_access(model: AccessModel, topic: str, actual: set[Acl] | None) -> list[dict[str, Any]]:
    """Who can read and write ``topic``: each declared grant (and whether the broker has it; None when the
    broker was not asked), then what the broker allows beyond the file, which is access too (the
    security DAG calls it drift)."""
    rows = [{"principal": g.principal, "department": model.departments[g.principal], "operation": op,
             "grant": g.name + ("*" if g.pattern == "prefixed" else ""), "justification": g.justification,
             "on_broker": None if actual is None else g.acl() in actual}
            for op in ("read", "write") for g in who_can(model, topic, op)]
    declared = declared_acl_set(model)
    rows += [{"principal": a[0].removeprefix("User:"), "department": "?", "operation": a[4].lower(),
              "grant": a[2] + ("*" if a[3] == "PREFIXED" else ""), "justification": "NOT DECLARED in the access file",
              "on_broker": True}
             for a in sorted(actual or ()) if a not in declared and acl_covers(a, topic)]
    return rows


def broker_acl_set(settings: Settings) -> set[Acl] | None:
    """The broker's ALLOW ACLs, or None when it runs without an authoriser."""
    admin = clients.admin(settings)
    try:
        return _allow_acls(admin)
    finally:
        admin.close()


def _allow_acls(admin: Any) -> set[Acl] | None:
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             ResourcePatternFilter, ResourceType)
    from kafka.errors import SecurityDisabledError

    try:
        acls, error = admin.describe_acls(ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                                                    permission_type=ACLPermissionType.ANY,
                                                    resource_pattern=ResourcePatternFilter(ResourceType.ANY, None,
                                                                                           ACLResourcePatternType.ANY)))
    except SecurityDisabledError:
        return None
    if error is not None and "SecurityDisabled" in type(error).__name__:
        return None
    return {(a.principal, a.resource_pattern.resource_type.name, a.resource_pattern.resource_name,
             a.resource_pattern.pattern_type.name, a.operation.name) for a in acls
            if a.permission_type == ACLPermissionType.ALLOW}


@dataclass
class ApplyResult:
    added: list[Acl]
    removed: list[Acl]
    users_created: list[str]
    users_deleted: list[str]
    unchanged: int
    dry_run: bool

    @property
    def changes(self) -> int:
        return len(self.added) + len(self.removed) + len(self.users_created) + len(self.users_deleted)


def apply(settings: Settings, model: AccessModel, dry_run: bool = False, actor: str | None = None) -> ApplyResult:
    """Make the broker's principals and ACLs match the model; record each change in the audit log."""
    from kafka.admin import ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType
    from kafka.admin._users import ScramMechanism, UserScramCredentialDeletion, UserScramCredentialUpsertion

    store = CredentialStore(settings.access_dir)
    admin = clients.admin(settings)
    try:
        actual = _allow_acls(admin)
        if actual is None:
            raise AccessError(f"The broker at {settings.bootstrap} runs without an ACL authoriser, so grants cannot be "
                              "enforced. Fix: run the embedded broker (secured by default) or set "
                              "authorizer.class.name on the cluster.")
        declared = declared_acl_set(model)
        added, removed = sorted(declared - actual), sorted(actual - declared)
        existing = set(admin.describe_user_scram_credentials())
        managed = set(store.passwords)
        create = sorted(p for p in model.departments if p not in existing or p not in managed)
        delete = sorted(p for p in managed & existing if p not in model.departments)
        result = ApplyResult(added, removed, create, delete, len(declared & actual), dry_run)
        if dry_run:
            return result
        audit = AuditLog(settings.access_dir, actor, model)
        if create:
            ups = [UserScramCredentialUpsertion(p, ScramMechanism.SCRAM_SHA_512, store.password(p)) for p in create]
            for user, error in admin.alter_user_scram_credentials(ups).items():
                audit.record("create_credential", user, error=error)
        if delete:
            dels = [UserScramCredentialDeletion(p, ScramMechanism.SCRAM_SHA_512) for p in delete]
            for user, error in admin.alter_user_scram_credentials(dels).items():
                audit.record("delete_credential", user, error=error)
                if error is None:
                    store.forget(user)

        def acl(a: Acl) -> ACL:
            return ACL(principal=a[0], host="*", operation=ACLOperation[a[4]], permission_type=ACLPermissionType.ALLOW,
                       resource_pattern=ResourcePattern(ResourceType[a[1]], a[2], ACLResourcePatternType[a[3]]))

        for a in added:   # one request each, so the audit log says exactly which grant failed
            outcome = admin.create_acls([acl(a)])
            audit.record("grant", a[0], acl=a, error=", ".join(e.__name__ for e in outcome["failed"]) or None)
        if removed:
            filters = [ACLFilter(principal=a[0], host="*", operation=ACLOperation[a[4]],
                                 permission_type=ACLPermissionType.ALLOW,
                                 resource_pattern=ResourcePattern(ResourceType[a[1]], a[2], ACLResourcePatternType[a[3]]))
                       for a in removed]
            for (_f, _matched, error), a in zip(admin.delete_acls(filters), removed):
                audit.record("revoke", a[0], acl=a, error=None if error.__name__ == "NoError" else error.__name__)
    finally:
        admin.close()
    if audit.failures:
        raise AccessError(f"{len(audit.failures)} change(s) failed on the broker: {audit.failures[:3]}. "
                          f"The audit log {audit.path} records each. Fix: read the errors, then apply again.")
    return result


def rotate(settings: Settings, model: AccessModel, principal: str, actor: str | None = None) -> None:
    """A new password for ``principal``: the old one stops working at once."""
    from kafka.admin._users import ScramMechanism, UserScramCredentialUpsertion

    password = secrets.token_urlsafe(24)
    admin = clients.admin(settings)
    try:
        errors = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(principal, ScramMechanism.SCRAM_SHA_512, password)])
    finally:
        admin.close()
    audit = AuditLog(settings.access_dir, actor, model)
    audit.record("rotate_credential", principal, error=errors.get(principal))
    if audit.failures:
        raise AccessError(f"rotating {principal}'s password failed: {audit.failures[0]}")
    CredentialStore(settings.access_dir).set(principal, password)   # kept only once the broker took it


def client_config(settings: Settings, model: AccessModel, department: str) -> dict[str, Any]:
    """What a department's Kafka client needs to connect as its own principal."""
    principal = model.principal_of(department)
    store = CredentialStore(settings.access_dir)
    if principal not in store.passwords:
        raise AccessError(f"{principal} has no credential yet. Fix: `citybrain access apply` creates it.")
    protocol = "SASL_PLAINTEXT" if settings.embedded else settings.security_protocol
    return {"principal": principal, "department": model.departments[principal],
            "bootstrap_servers": settings.bootstrap, "security_protocol": protocol,
            "sasl_mechanism": SASL_MECHANISM, "sasl_username": principal, "sasl_password": store.passwords[principal],
            "group_prefix": f"{principal}."}


def try_read(settings: Settings, config: dict[str, Any], topic: str, idle_s: float = 3.0) -> tuple[bool, int | str]:
    """Read ``topic`` as a department would (its own credentials from ``config``, subscribed by name,
    nothing committed): (True, records read) or (False, the broker's refusal). aiokafka, because it
    raises on a refused topic where kafka-python's consumer silently reads nothing."""
    import asyncio

    from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

    department = settings.as_principal(config["sasl_username"], config["sasl_password"])

    async def run() -> tuple[bool, int | str]:
        consumer = clients.aio_consumer(department, topic, group_id=config["group_prefix"] + "probe",
                                        auto_offset_reset="earliest", enable_auto_commit=False)
        read = 0
        try:
            await consumer.start()
            while batches := await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=10_000):
                read += sum(len(b) for b in batches.values())
        except TopicAuthorizationFailedError:
            return False, "TopicAuthorizationFailed"
        except KafkaConnectionError as exc:
            return False, "SaslAuthenticationFailed" if "SaslAuthenticationFailed" in str(exc) else str(exc)
        finally:
            await consumer.stop()
        return True, read

    return asyncio.run(run())


# -- local state: credentials and the audit log ---------------------------------------------------


class CredentialStore:
    """Department passwords, generated once; the file is readable by its owner only."""

    def __init__(self, access_dir: Path) -> None:
        self.path = access_dir / "credentials.json"
        self.passwords: dict[str, str] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def password(self, principal: str) -> str:
        """The principal's password, generated on first use."""
        if principal not in self.passwords:
            self.set(principal, secrets.token_urlsafe(24))
        return self.passwords[principal]

    def set(self, principal: str, password: str) -> None:
        self.passwords[principal] = password
        self._save()

    def forget(self, principal: str) -> None:
        self.passwords.pop(principal, None)
        self._save()

    def _save(self) -> None:
        write_private(self.path, json.dumps(self.passwords, indent=1, sort_keys=True))


class AuditLog:
    """Append-only JSON lines: who changed which grant or credential, when, from which file version."""

    def __init__(self, access_dir: Path, actor: str | None, model: AccessModel) -> None:
        self.path = audit_path(access_dir)
        self.actor = actor or _actor()
        self.model = model
        self.failures: list[str] = []

    def record(self, action: str, principal: str, acl: Acl | None = None, error: str | None = None) -> None:
        entry: dict[str, Any] = {"at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                                 "actor": self.actor, "action": action, "principal": principal.removeprefix("User:"),
                                 "source": self.model.source.name, "source_digest": self.model.digest,
                                 "result": "ok" if error is None else f"failed: {error}"}
        if acl is not None:
            entry.update(resource_type=acl[1].lower(), resource=acl[2], pattern=acl[3].lower(), operation=acl[4].lower())
        if error is not None:
            self.failures.append(f"{action} {principal}: {error}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def audit_path(access_dir: Path) -> Path:
    return access_dir / "audit.jsonl"


def read_audit(access_dir: Path, last: int = 50) -> list[dict[str, Any]]:
    path = audit_path(access_dir)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()[-last:] if line.strip()]


def _actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"
