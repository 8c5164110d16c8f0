"""infra/cluster/airflow.cfg names only options Airflow 3.3 has (or that the image's providers add)."""

from __future__ import annotations

import configparser
from pathlib import Path

import yaml

from citybrain.settings import PROJECT_ROOT

#: Sections a provider adds, and the provider the Airflow image installs for it.
PROVIDER_SECTIONS = {"celery": "apache-airflow-providers-celery"}


def test_the_cluster_config_names_real_airflow_options() -> None:
    import airflow

    known = yaml.safe_load((Path(airflow.__file__).parent / "config_templates" / "config.yml").read_text())
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(PROJECT_ROOT / "infra" / "cluster" / "airflow.cfg")
    image = (PROJECT_ROOT / "infra" / "docker" / "airflow.Dockerfile").read_text()
    assert cfg.sections(), "infra/cluster/airflow.cfg is empty"
    for section in cfg.sections():
        if section in PROVIDER_SECTIONS:
            assert PROVIDER_SECTIONS[section] in image, f"[{section}] needs {PROVIDER_SECTIONS[section]} in the image"
            continue
        assert section in known, f"[{section}] is not a section of Airflow's configuration"
        for option in cfg[section]:
            assert option in known[section]["options"], f"[{section}] {option} is not an Airflow option"
    assert cfg["core"]["executor"] in ("CeleryExecutor", "KubernetesExecutor")
    assert cfg["database"]["sql_alchemy_conn"].startswith("postgresql")
    assert cfg["core"]["auth_manager"].startswith("airflow.providers.fab.")
    assert "apache-airflow-providers-fab" in image
