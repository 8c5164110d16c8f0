"""infra/cluster/citybrain.env: the settings of CityBrain on a city's cluster load as they are written."""

from __future__ import annotations

import ssl

import pytest

from citybrain.settings import PROJECT_ROOT, SettingsError, load_settings

#: What the secret store puts in place of each <secret>, in the form each setting takes.
SECRETS = {"CITYBRAIN_GATEWAY_API_KEYS": "district-app:3f9c0a77e1b2", "CITYBRAIN_PSEUDONYM_KEY": "k" * 40}


def cluster_env() -> dict[str, str]:
    env = {}
    for line in (PROJECT_ROOT / "infra" / "cluster" / "citybrain.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"not NAME=value: {line!r}"
            env[name] = SECRETS.get(name, "s3cr3t-from-the-store") if value == "<secret>" else value
    return env


def test_the_cluster_settings_load_and_speak_tls_with_scram() -> None:
    settings = load_settings(cluster_env())
    assert not settings.embedded and settings.topic_replicas() == 3
    cfg = settings.kafka_client_config()
    assert cfg["security_protocol"] == "SASL_SSL" and cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert cfg["ssl_cafile"] == "/etc/citybrain/tls/city-ca.pem"
    assert settings.airflow_url == "https://airflow.city.internal" and settings.airflow_user == "citybrain-lake"
    assert (settings.lake.fs.type_name, str(settings.lake)) == ("s3", "s3://city-lake/citybrain")   # no request made
    with pytest.raises((FileNotFoundError, ssl.SSLError)):   # the CA file is the cluster's, not this machine's
        settings.ssl_context()


def test_a_misspelt_cluster_setting_is_refused_with_the_valid_names() -> None:
    env = cluster_env() | {"CITYBRAIN_SSL_CA_FILE": "/etc/ca.pem"}
    with pytest.raises(SettingsError, match="CITYBRAIN_SSL_CA_FILE"):
        load_settings(env)


def test_without_ssl_there_is_no_tls_context() -> None:
    env = cluster_env() | {"CITYBRAIN_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    settings = load_settings(env)
    assert "ssl_cafile" not in settings.kafka_client_config() and settings.ssl_context() is None
