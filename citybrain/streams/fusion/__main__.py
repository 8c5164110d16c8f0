"""``python -m citybrain.streams.fusion worker -l info --without-web``: the fusion worker, from the installed package
(what ``citybrain streams fusion`` and the supervisor run)."""

from __future__ import annotations

from citybrain.streams.fusion.app import main

main()
