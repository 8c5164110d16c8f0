"""The embedded broker's pure parts."""

from __future__ import annotations

from pathlib import Path


def test_kraft_cluster_ids_never_start_with_a_dash() -> None:
    """Regression: an id starting with '-' made `kafka-storage format -t <id>` fail (1 in 64 fresh set-ups)."""
    import base64
    import uuid
    from unittest import mock

    from citybrain.broker.local import new_cluster_id

    dash_first = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    with mock.patch("citybrain.broker.local.uuid.uuid4", side_effect=[dash_first, uuid.UUID(int=7)]):
        assert new_cluster_id() == base64.urlsafe_b64encode(uuid.UUID(int=7).bytes).decode().rstrip("=")
    assert all(not new_cluster_id().startswith("-") for _ in range(2000))


def test_the_broker_config_is_secured_and_owner_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import stat

    from citybrain.broker.local import LocalBroker
    from citybrain.settings import load_settings

    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    broker = LocalBroker(settings)
    props = broker._write_config()
    text = props.read_text()
    assert "listeners=SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093" in text
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in text
    assert "allow.everyone.if.no.acl.found=false" in text and "PLAINTEXT:PLAINTEXT" not in text
    assert "super.users=User:citybrain-admin;User:citybrain-controller" in text
    for path in (props, broker.credentials_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # The platform's clients log in as the admin with the password the broker was given.
    protocol, mechanism, user, password = settings.client_auth()
    assert (protocol, mechanism, user) == ("SASL_PLAINTEXT", "SCRAM-SHA-512", "citybrain-admin")
    assert f'password="{password}"' in text


def test_storage_formatted_before_security_asks_for_a_reset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from citybrain.broker.local import BrokerError, LocalBroker
    from citybrain.settings import SettingsError, load_settings

    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    with pytest.raises(SettingsError, match="citybrain broker up"):
        settings.client_auth()
    broker = LocalBroker(settings)
    broker.data_dir.mkdir(parents=True)
    (broker.data_dir / "meta.properties").write_text("cluster.id=old\n")
    with pytest.raises(BrokerError, match="citybrain broker reset"):
        broker._write_config()


def test_missing_java_gives_a_clear_error(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No broker is started: the set-up check refuses before anything runs."""
    import pytest

    from citybrain.broker.local import BrokerError, LocalBroker
    from citybrain.settings import load_settings

    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn on PATH
    fresh = LocalBroker(load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path), "CITYBRAIN_CACHE_DIR": str(tmp_path / "cache"),
                                       "CITYBRAIN_BROKER_PORT": "19392", "CITYBRAIN_CONTROLLER_PORT": "19393"}))
    with pytest.raises(BrokerError, match="`java` was not found on PATH.*Java 17"):
        fresh.up()


def test_formatting_never_puts_the_admin_password_on_a_command_line(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 33: `ps` showed the super user's password while the storage was formatted. The tool's arguments now
    reach java in an owner-only argument file (`java @file`), deleted once the tool ran."""
    import stat
    import subprocess

    from citybrain.broker import local
    from citybrain.settings import load_settings

    broker = local.LocalBroker(load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)}))
    props = broker._write_config()
    password = broker._credentials()["admin_password"]
    seen: dict[str, object] = {}

    def run(cmd: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        args_file = Path(cmd[-1].removeprefix("@"))
        seen.update(cmd=cmd, mode=stat.S_IMODE(args_file.stat().st_mode), args=args_file.read_text().split("\n"))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(local, "_require_tool", lambda *_a: "java")
    monkeypatch.setattr(local.subprocess, "run", run)
    broker._format_storage(props)
    cmd = seen["cmd"]
    assert isinstance(cmd, list) and not [a for a in cmd if password in a]
    assert cmd[-1].startswith("@") and seen["mode"] == 0o600
    args = seen["args"]
    assert isinstance(args, list) and args[:2] == ["kafka.tools.StorageTool", "format"]
    assert f"SCRAM-SHA-512=[name=citybrain-admin,password={password}]" in args and f'"{props}"' in args
    assert not Path(cmd[-1][1:]).exists()
