"""The ``citybrain`` command line: one ``command_<group>.py`` per command group, on one app.

``base`` holds what they share (the app and the ``dev`` group, consoles, exit codes, ``fail``, the
shared options, loaders); the command modules register on its app when imported here. The logic each
command runs lives in the package it belongs to: a command parses options, calls it and prints the result.
"""

from __future__ import annotations

# In the order `citybrain --help` lists them; importing a command module registers its commands.
from citybrain.cli import (command_broker, command_contracts, command_topics, command_records,  # isort: skip
                           command_demo, command_city, command_simulate, command_gateway, command_streams,
                           command_lake, command_catalog, command_dags, command_airflow, command_quality,
                           command_access, command_accounts, command_audit, command_ui, command_up, command_notify,
                           command_deploy)
from citybrain.cli.base import app

#: Every command module, registered on :data:`app` by being imported.
COMMAND_MODULES = (command_broker, command_contracts, command_topics, command_records, command_demo, command_city,
                   command_simulate, command_gateway, command_streams, command_lake, command_catalog, command_dags,
                   command_airflow, command_quality, command_access, command_accounts, command_audit, command_ui,
                   command_up, command_notify, command_deploy)

__all__ = ["COMMAND_MODULES", "app"]

if __name__ == "__main__":  # pragma: no cover
    app()
