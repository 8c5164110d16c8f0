"""The ``citybrain`` command line: one ``command_<group>.py`` per command group, on one app.

``base`` holds what they share (the app, consoles, exit codes, ``fail``, loaders); the command
modules register on its app when imported here. The logic each command runs lives in the
package it belongs to: a command parses options, calls it and prints the result.
"""

from __future__ import annotations

# In the order `citybrain --help` lists them; importing a command module registers its commands.
from citybrain.cli import command_broker  # noqa: F401,E402
from citybrain.cli import command_contracts  # noqa: F401,E402
from citybrain.cli import command_topics  # noqa: F401,E402
from citybrain.cli import command_records  # noqa: F401,E402
from citybrain.cli import command_demo  # noqa: F401,E402
from citybrain.cli import command_city  # noqa: F401,E402
from citybrain.cli import command_simulate  # noqa: F401,E402
from citybrain.cli import command_gateway  # noqa: F401,E402
from citybrain.cli import command_streams  # noqa: F401,E402
from citybrain.cli import command_lake  # noqa: F401,E402
from citybrain.cli import command_catalog  # noqa: F401,E402
from citybrain.cli import command_dags  # noqa: F401,E402
from citybrain.cli import command_airflow  # noqa: F401,E402
from citybrain.cli import command_quality  # noqa: F401,E402
from citybrain.cli import command_access  # noqa: F401,E402
from citybrain.cli import command_ui  # noqa: F401,E402
from citybrain.cli import command_up  # noqa: F401,E402
from citybrain.cli import command_notify  # noqa: F401,E402
from citybrain.cli.base import app

__all__ = ["app"]

if __name__ == "__main__":  # pragma: no cover
    app()
