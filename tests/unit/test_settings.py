"""Settings: unknown or invalid CITYBRAIN_* variables are refused with the valid names."""

from __future__ import annotations

import pytest

from citybrain.settings import SettingsError, load_settings


def test_defaults_use_the_embedded_broker() -> None:
    s = load_settings({})
    assert s.embedded and s.bootstrap == "127.0.0.1:9092"


def test_external_cluster_with_sasl() -> None:
    s = load_settings({
        "CITYBRAIN_BOOTSTRAP_SERVERS": "kafka-1.city:9093,kafka-2.city:9093",
        "CITYBRAIN_SECURITY_PROTOCOL": "SASL_SSL", "CITYBRAIN_SASL_MECHANISM": "SCRAM-SHA-512",
        "CITYBRAIN_SASL_USERNAME": "citybrain", "CITYBRAIN_SASL_PASSWORD": "secret",
    })
    cfg = s.kafka_client_config()
    assert not s.embedded and cfg["bootstrap_servers"] == ["kafka-1.city:9093", "kafka-2.city:9093"]
    assert cfg["sasl_plain_password"] == "secret" and "secret" not in repr(s)


def test_unknown_setting_is_refused_with_valid_names() -> None:
    with pytest.raises(SettingsError, match="CITYBRAIN_BROKR_PORT.*CITYBRAIN_BROKER_PORT"):
        load_settings({"CITYBRAIN_BROKR_PORT": "1"})


def test_invalid_value_is_refused() -> None:
    with pytest.raises(SettingsError, match="broker_port"):
        load_settings({"CITYBRAIN_BROKER_PORT": "80"})

