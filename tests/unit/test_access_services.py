"""The platform services' principals in ``infra/access.yaml``: each gets what its code reads and writes and
nothing else, the rules refuse an empty or partial prefix and an unjustified raw or dead-letter write, and a
service's settings log in as its own principal with the password from the credential store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from citybrain import access
from citybrain.contracts import topics
from citybrain.gateway.fiware import ENTITY_CONTRACTS
from citybrain.gateway.server import PRINCIPAL as GATEWAY
from citybrain.lake.layout import ZONES
from citybrain.notify.alert_bridge import GROUP as BRIDGE_GROUP, PRINCIPAL as BRIDGE
from citybrain.notify.alertmanager import BRIDGED
from citybrain.notify.notifier import PRINCIPAL as NOTIFY
from citybrain.settings import ADMIN_USER, SettingsError, load_settings
from citybrain.streams.lake_sink import PRINCIPALS as LAKE


@pytest.fixture(scope="module")
def model(contracts):  # type: ignore[no-untyped-def]
    return access.load(access.ACCESS_FILE, contracts)


def _can(model: access.AccessModel, principal: str, contracts, operation: str) -> set[str]:  # type: ignore[no-untyped-def]
    return set(access.topics_of(model, principal, [c.topic for c in contracts.values()], operation))


def _services(tmp_path: Path, services: dict) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "access.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "principals": {"dept-police": {"department": "police"}},
                                    "services": services}, allow_unicode=True))
    return path


def test_each_service_entry_point_names_a_principal_of_the_access_file(model) -> None:  # type: ignore[no-untyped-def]
    assert set(model.services) == {GATEWAY, NOTIFY, BRIDGE, *LAKE.values()}
    assert not set(model.services) & set(model.departments)
    assert ADMIN_USER not in model.principals() and set(model.services) <= set(model.principals())


def test_the_gateway_writes_its_feeds_and_reads_only_the_requests_it_answers_from(model, contracts) -> None:  # type: ignore[no-untyped-def]
    sensors = {c.topic for c in contracts.values() if c.id in set(ENTITY_CONTRACTS.values())}   # FIWARE entities
    assert len(sensors) == len(ENTITY_CONTRACTS)
    assert _can(model, GATEWAY, contracts, "write") == sensors | {topics.SERVICE_REQUESTS, topics.TICKET_EVENTS,
                                                                  topics.INGEST_DEAD_LETTERS}
    reads = _can(model, GATEWAY, contracts, "read")
    assert reads == {topics.SERVICE_REQUESTS, topics.REF_AREAS, topics.REF_CITY, topics.REF_SERVICES,
                     topics.REF_DEPARTMENTS}
    # The hotline's lifecycle, the police's and civil affairs' raw records, the fused and dispatched ones: never.
    for refused in (topics.TICKET_EVENTS, topics.POLICE_INCIDENTS, topics.ELDERLY_CARE, topics.CITY_EVENTS,
                    "dispatch.police.work_order.v1", topics.AUDIT_EVENTS, topics.CONTRACT_REGISTRY):
        assert refused not in reads
    assert not [g for g in model.grants if g.principal == GATEWAY and g.resource_type == "group"]


def test_the_lake_sinks_read_their_layer_and_write_only_their_announcements(model, contracts) -> None:  # type: ignore[no-untyped-def]
    for layer, principal in LAKE.items():
        layer_topics = {c.topic for c in contracts.values() if c.zone in ZONES[layer]}
        assert _can(model, principal, contracts, "read") == layer_topics, layer
        assert _can(model, principal, contracts, "write") == {topics.LAKE_COMPACTIONS, topics.INGEST_DEAD_LETTERS}
    assert topics.SERVICE_REQUESTS not in _can(model, LAKE["silver"], contracts, "read")


def test_the_notifier_and_the_bridge_write_their_dead_letters_and_read_no_more_than_they_send(model, contracts) -> None:  # type: ignore[no-untyped-def]
    assert _can(model, NOTIFY, contracts, "read") == set()       # subscriptions are read as each department
    assert _can(model, NOTIFY, contracts, "write") == {topics.NOTIFY_DEAD_LETTERS, topics.INGEST_DEAD_LETTERS}
    assert _can(model, BRIDGE, contracts, "read") == set(BRIDGED)
    assert _can(model, BRIDGE, contracts, "write") == {topics.NOTIFY_DEAD_LETTERS, topics.INGEST_DEAD_LETTERS}
    groups = {g.acl() for g in model.grants if g.resource_type == "group" and g.principal in (NOTIFY, BRIDGE)}
    assert groups == {(f"User:{BRIDGE}", "GROUP", BRIDGE_GROUP, "LITERAL", "READ")}


def test_every_raw_or_dead_letter_write_of_the_committed_file_is_justified(model) -> None:  # type: ignore[no-untyped-def]
    guarded = [g for g in model.grants if g.operation == "write" and g.name.startswith(access.GUARDED_WRITE_ZONES)]
    assert guarded and all(g.justification for g in guarded)


@pytest.mark.parametrize("prefix", ["", "raw", "dispatch.pol"])
def test_an_empty_or_partial_prefix_is_refused(contracts, tmp_path: Path, prefix: str) -> None:  # type: ignore[no-untyped-def]
    path = _services(tmp_path, {"svc-ui": {"service": "ui", "grants": [{"read": prefix, "pattern": "prefixed"}]}})
    with pytest.raises(access.AccessError, match=r"services.svc-ui.grants\[0\]: the prefix .* whole name segments"):
        access.load(path, contracts)
    # The same rule for a department's grants.
    path.write_text(yaml.safe_dump({"version": 1, "principals": {"dept-water": {
        "department": "water", "grants": [{"read": prefix, "pattern": "prefixed"}]}}}))
    with pytest.raises(access.AccessError, match=r"principals.dept-water.grants\[0\]: the prefix"):
        access.load(path, contracts)


@pytest.mark.parametrize("grant", [{"write": "raw.", "pattern": "prefixed"}, {"write": "dlq.", "pattern": "prefixed"},
                                   {"write": "raw.sensor.weather.v1"}, {"write": "dlq.ingest.rejected.v1",
                                                                        "justification": "  "}])
def test_a_raw_or_dead_letter_write_without_a_justification_is_refused(contracts, tmp_path: Path, grant) -> None:  # type: ignore[no-untyped-def]
    path = _services(tmp_path, {"svc-feeds": {"service": "simulate", "grants": [grant]}})
    with pytest.raises(access.AccessError, match="needs a `justification` saying which checks the writer makes"):
        access.load(path, contracts)
    justified = {**grant, "justification": "The loader checks every record against its contract."}
    model = access.load(_services(tmp_path, {"svc-feeds": {"service": "simulate", "grants": [justified]}}), contracts)
    assert [g.justification for g in model.grants if g.principal == "svc-feeds"] == [justified["justification"]]
    # A curated topic's write needs none.
    access.load(_services(tmp_path, {"svc-x": {"service": "x", "grants": [{"write": topics.LAKE_COMPACTIONS}]}}),
                contracts)


def test_a_service_principal_breaking_the_rules_is_named_with_its_fix(contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _services(tmp_path, {
        "gateway": {"service": "gateway"},                          # not svc-...
        "svc-nothing": {"grants": [{"read": topics.CITY_EVENTS}]},  # no service named
        "svc-ui": {"service": "ui", "grants": [{"group": ""}, {"read": topics.CITY_EVENTS, "group": "g"},
                                               {"read": topics.ELDERLY_CARE}]},
    })
    with pytest.raises(access.AccessError) as err:
        access.load(path, contracts)
    text = str(err.value)
    assert "5 problem(s)" in text and text.count("Fix:") >= 5
    assert "services.gateway: a service's principal is svc-<service>" in text
    assert "services.svc-nothing.service" in text
    assert "services.svc-ui.grants[0]: a consumer group needs a name" in text
    assert "services.svc-ui.grants[1]: a grant is one of" in text
    assert "services.svc-ui.grants[2]" in text and "personal data" in text
    # A department cannot name a consumer group grant: it has its own `<principal>.` groups.
    path.write_text(yaml.safe_dump({"version": 1, "principals": {"dept-water": {
        "department": "water", "grants": [{"group": "anything"}]}}}))
    with pytest.raises(access.AccessError, match=r"dept-water.grants\[0\]: a grant is one of `read: NAME` or `write: NAME`,"):
        access.load(path, contracts)


def test_a_service_logs_in_as_its_principal_with_the_stored_password(tmp_path: Path) -> None:
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var")})
    credentials = settings.kafka_dir / "config" / "credentials.json"
    credentials.parent.mkdir(parents=True)
    credentials.write_text(json.dumps({"admin_user": ADMIN_USER, "admin_password": "admin-secret"}))
    assert settings.client_auth()[2] == ADMIN_USER                  # administration
    gateway = settings.as_service(GATEWAY)
    with pytest.raises(SettingsError, match="CITYBRAIN_PRINCIPAL=svc-gateway has no password .* `citybrain access apply`"):
        gateway.client_auth()
    password = access.CredentialStore(settings.access_dir).password(GATEWAY)
    assert gateway.client_auth() == ("SASL_PLAINTEXT", "SCRAM-SHA-512", GATEWAY, password)
    assert gateway.kafka_client_config()["sasl_plain_username"] == GATEWAY
    # Set from the environment as the supervisor or a systemd unit would.
    assert load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var"), "CITYBRAIN_PRINCIPAL": GATEWAY}).client_auth()[2:] \
        == (GATEWAY, password)
    # A department's own credentials, when given, win (the notifier reads each subscription as its department).
    assert gateway.as_principal("dept-water", "w").client_auth()[2:] == ("dept-water", "w")
    # On a city's own cluster the environment file's login is the administrator's: a service leaves it for its own.
    cluster = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var"), "CITYBRAIN_BOOTSTRAP_SERVERS": "kafka:9093",
                             "CITYBRAIN_SECURITY_PROTOCOL": "SASL_SSL", "CITYBRAIN_SASL_MECHANISM": "SCRAM-SHA-512",
                             "CITYBRAIN_SASL_USERNAME": "city-admin", "CITYBRAIN_SASL_PASSWORD": "admin-secret"})
    assert cluster.client_auth()[2] == "city-admin"
    assert cluster.as_service(GATEWAY).client_auth() == ("SASL_SSL", "SCRAM-SHA-512", GATEWAY, password)
    with pytest.raises(SettingsError, match="CITYBRAIN_PRINCIPAL='citybrain-admin' is not a platform service's"):
        load_settings({"CITYBRAIN_PRINCIPAL": ADMIN_USER})           # never the super user by this road


class _Ran(Exception):
    """Raised by a stand-in for a service's loop, once it has seen the settings it was given."""


def test_each_service_command_connects_as_its_own_principal(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The entry points (`citybrain gateway`, `lake bronze|silver`, `notify run`, `notify alertmanager`) hand their
    service the settings of its principal; the gateway's broker preparation stays the administrator's."""
    import signal

    import typer

    import citybrain.gateway.server
    import citybrain.notify.alert_bridge
    import citybrain.notify.notifier
    import citybrain.notify.subscriptions
    import citybrain.platform.readiness
    import citybrain.streams.lake_sink
    from citybrain import metrics
    from citybrain.cli import command_gateway, command_lake, command_notify

    seen: list[str | None] = []

    def ran(settings, *_a, **_kw):  # type: ignore[no-untyped-def]
        seen.append(settings.principal)
        raise _Ran

    class Ready:
        broker = "stand-in"

    def ready(settings, *_a):  # type: ignore[no-untyped-def]
        seen.append(settings.principal)
        return Ready()

    monkeypatch.setattr(signal, "signal", lambda *_a: None)     # the test run's own handlers stay
    monkeypatch.setattr(metrics, "serve", lambda *_a, **_kw: None)
    monkeypatch.setattr(citybrain.streams.lake_sink, "run_sink", ran)
    monkeypatch.setattr(citybrain.gateway.server, "run_gateway", ran)
    monkeypatch.setattr(citybrain.platform.readiness, "ensure_ready", ready)
    monkeypatch.setattr(citybrain.notify.alert_bridge, "run", ran)
    monkeypatch.setattr(citybrain.notify.notifier, "Notifier", ran)
    monkeypatch.setattr(citybrain.notify.subscriptions, "passwords_for", lambda *_a: {})
    for layer in ("bronze", "silver"):
        with pytest.raises(_Ran):
            command_lake._lake_sink(layer, 10, 1.0, None)
    with pytest.raises(_Ran):
        command_gateway.gateway(host=None, port=None)
    with pytest.raises(_Ran):
        command_notify.run_cmd(path=None, exit_when_idle=None, until_idle=None, retry_base=0.5, pause_max=60.0)
    with pytest.raises(typer.Exit):   # the bridge's loop failing is the command's failure
        command_notify.alertmanager_cmd(url="http://127.0.0.1:9093", exit_when_idle=None, retry_base=1.0,
                                        retry_max=60.0, generator_url=None)
    assert seen == [LAKE["bronze"], LAKE["silver"], None, GATEWAY, NOTIFY, BRIDGE]


def test_officers_name_a_service_by_its_principal_and_its_password_stays_with_it(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert model.principal_of(GATEWAY) == GATEWAY and model.holder(GATEWAY) == "service gateway"
    assert model.holder("dept-water") == "water"
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var")})
    access.CredentialStore(settings.access_dir).password(GATEWAY)
    with pytest.raises(access.AccessError, match="svc-gateway is the platform's service gateway.*Fix: name a department"):
        access.client_config(settings, model, GATEWAY)
