"""Read feed declarations as YAML without YAML 1.1's surprise booleans.

PyYAML (YAML 1.1) reads the plain words yes/no/on/off (as ``yes``, ``Yes`` or ``YES``) as booleans:
a column named ``No`` (a row-number column) becomes the key ``False``, a value ``on`` in a map becomes
``True``. A feed declaration is refused when any such word is written without quotes, naming the file,
the line, the word and the boolean PyYAML would make of it; ``true`` and ``false`` stay the booleans
they are in every YAML version (``required: true``), except as keys. The refused words are exactly
those PyYAML's resolver tags as booleans (``y``/``n``, a YAML 1.1 spec's boolean but not PyYAML's,
stay the words they are).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

__all__ = ["BooleanWordError", "load_yaml"]

_BOOL_TAG = "tag:yaml.org,2002:bool"
#: The boolean words a feed may write as values: true and false in every YAML version.
_BOOLEANS = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class BooleanWordError(yaml.YAMLError):
    """A plain YAML word that PyYAML turns into a boolean."""


def _check(node: yaml.Node, where: str, is_key: bool = False) -> None:
    if isinstance(node, yaml.ScalarNode):
        if node.style is not None or node.tag != _BOOL_TAG:   # quoted, a block or folded scalar, not a boolean
            return
        if is_key or not _BOOLEANS.match(node.value):
            role = "key" if is_key else "value"
            boolean = SafeConstructor.bool_values[node.value.lower()]
            raise BooleanWordError(
                f"{where}, line {node.start_mark.line + 1}, column {node.start_mark.column + 1}: the {role} "
                f"{node.value} is unquoted, and the YAML reader (PyYAML, YAML 1.1) reads it as the boolean "
                f"{boolean}. Fix: quote it, \"{node.value}\"")
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _check(key, where, is_key=True)
            _check(value, where)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check(item, where)


def load_yaml(text: str, where: str | Path) -> Any:
    """One YAML document, refused (BooleanWordError, a yaml.YAMLError) if it holds an unquoted word PyYAML reads
    as a boolean; ``where`` names the file in messages."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node, str(where))
        return loader.construct_document(node)
    finally:
        loader.dispose()
