"""Subscriptions: which department's system gets which topic as NGSI-LD notifications (``infra/subscriptions.yaml``).

Subscriptions are code, like the grants, reviewed like code: each names the department principal it serves,
the topic and the endpoint of the department's system, and is only taken for a topic the principal may read
(``infra/access.yaml``).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from citybrain.contracts.model import Contract
from citybrain.errors import InputError
from citybrain.notify.ngsi import ACCEPT, ENTITY_TYPES, FORMATS
from citybrain.settings import Settings, packaged

__all__ = ["ID_RE", "SUBSCRIPTIONS_FILE", "Subscription", "SubscriptionError", "load_subscriptions", "passwords_for"]

#: The subscriptions shipped with the package (``infra/subscriptions.yaml`` in a checkout): the template of a
#: deployment's own, which ``Settings.subscriptions_file`` names (``CITYBRAIN_CONFIG_DIR``).
SUBSCRIPTIONS_FILE = packaged("subscriptions.yaml")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


class SubscriptionError(InputError):
    """A subscriptions file the notifier cannot take."""


@dataclass(frozen=True)
class Subscription:
    id: str
    principal: str
    topic: str
    endpoint: str
    accept: str = "application/ld+json"
    format: str = "normalized"

    @property
    def urn(self) -> str:
        return f"urn:ngsi-ld:Subscription:{self.id}"

    @property
    def group(self) -> str:
        return f"{self.principal}.notify.{self.id}"


def load_subscriptions(path: Path, contracts: dict[str, Contract], access_model: Any) -> list[Subscription]:
    """The subscriptions of ``path``, each checked: a known principal, a notifiable contract topic the
    principal may read, an http(s) endpoint; an error names the entry, the field, the rule and the fix."""
    from citybrain.access.grants import topics_of

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SubscriptionError(f"{path.name}: no such file. Fix: create it (see infra/subscriptions.yaml).") from None
    except yaml.YAMLError as exc:
        raise SubscriptionError(f"{path.name}: not YAML ({exc}).") from None
    entries = doc.get("subscriptions") or []
    if doc.get("version") != 1 or not isinstance(entries, list):
        raise SubscriptionError(f"{path.name}: needs `version: 1` and a list `subscriptions`.")
    out, seen = [], set()
    for n, e in enumerate(entries):
        where = f"{path.name} subscription {n + 1}"
        if not isinstance(e, dict):
            raise SubscriptionError(f"{where}: must be a mapping with id, principal, topic, endpoint.")
        unknown = sorted(set(e) - {"id", "principal", "topic", "endpoint", "accept", "format"})
        if unknown:
            raise SubscriptionError(f"{where}: unknown key(s) {', '.join(unknown)}. Fix: leave them out.")
        sid = str(e.get("id") or "")
        if not ID_RE.match(sid) or sid in seen:
            raise SubscriptionError(f"{where}: `id` {sid!r} must be unique, lower case letters, digits and dashes. "
                                    "Fix: e.g. water-duty-desk.")
        seen.add(sid)
        where = f"{path.name} subscription {sid!r}"
        principal = str(e.get("principal") or "")
        if principal not in access_model.departments:
            raise SubscriptionError(f"{where}: `principal` {principal!r} is not in {access_model.source.name}. Fix: one "
                                    f"of {', '.join(sorted(access_model.departments))}.")
        topic = str(e.get("topic") or "")
        contract = contracts.get(topic)
        if contract is None or not any(topic.startswith(p) for p in ENTITY_TYPES):
            raise SubscriptionError(f"{where}: `topic` {topic!r} is not a notifiable contract topic. Fix: a "
                                    f"dispatch.<department>.work_order, city.event.incident, alert.early_warning or "
                                    f"alert.sla topic.")
        if topic not in topics_of(access_model, principal, [topic]):
            raise SubscriptionError(f"{where}: {principal} may not read {topic} (no grant in "
                                    f"{access_model.source.name}): a subscription sends nothing a department is not "
                                    "entitled to. Fix: subscribe to a topic it may read, or grant it first.")
        endpoint = str(e.get("endpoint") or "")
        parsed = urllib.parse.urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SubscriptionError(f"{where}: `endpoint` {endpoint!r} is not an http(s) URL. Fix: the URL of the "
                                    "department system's notification endpoint.")
        accept, form = e.get("accept", ACCEPT[0]), e.get("format", FORMATS[0])
        if accept not in ACCEPT or form not in FORMATS:
            raise SubscriptionError(f"{where}: `accept` is one of {', '.join(ACCEPT)}, `format` one of "
                                    f"{', '.join(FORMATS)}. Fix: leave them out for the defaults.")
        out.append(Subscription(sid, principal, topic, endpoint, accept, form))
    return out


def passwords_for(settings: Settings, subscriptions: list[Subscription]) -> dict[str, str]:
    """Each subscribed principal's own password, from the credential store ``citybrain access apply`` keeps."""
    from citybrain.access.credentials import CredentialStore

    store = CredentialStore(settings.access_dir).passwords
    missing = sorted({s.principal for s in subscriptions} - set(store))
    if missing:
        raise SubscriptionError(f"{', '.join(missing)} have no credential yet. Fix: `citybrain access apply`.")
    return {s.principal: store[s.principal] for s in subscriptions}
