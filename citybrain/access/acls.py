"""The broker's side of the grants: the ACLs it should hold against those it does, and the changes.

``declared_acl_set`` turns the access model into the ACLs the broker should hold (the security
DAG compares them with ``broker_acl_set``); ``topic_access`` says who can read and write a topic,
drift included; ``apply`` reconciles the broker with the model (SCRAM-SHA-512 credentials for
every principal, the departments' and the platform services', ACLs added and removed) and
``rotate`` replaces one principal's password, each change appended to the audit log.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from citybrain.access.audit import AuditLog
from citybrain.access.credentials import CredentialStore
from citybrain.access.grants import AccessError, AccessModel, Acl, acl_covers, who_can
from citybrain.kafka import clients
from citybrain.settings import Settings

__all__ = ["ApplyResult", "apply", "broker_acl_set", "broker_acl_set_if_up", "declared_acl_set", "rotate",
           "topic_access"]


def declared_acl_set(model: AccessModel) -> set[Acl]:
    """The ALLOW ACLs the broker should hold, in the security DAG's grant format."""
    return {g.acl() for g in model.grants}


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
    rows = [{"principal": g.principal, "department": model.holder(g.principal), "operation": op,
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
        create = sorted(p for p in model.principals() if p not in existing or p not in managed)
        delete = sorted(p for p in managed & existing if p not in model.principals())
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
