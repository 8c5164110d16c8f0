"""Read feed declarations as YAML without YAML 1.1's surprise booleans.

YAML 1.1 (PyYAML's ``safe_load``) reads the plain words yes/no/on/off (any case) as booleans, and
YAML 1.1 itself adds y/n: a column named ``No`` (a row-number column) becomes the key ``False``,
a wind direction ``N`` in a value map becomes ``False``. A feed declaration is refused when any
such word is written without quotes, naming the file, the line and the word; ``true`` and
``false`` stay the booleans they are in every YAML version (``required: true``), except as keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BooleanWordError", "load_yaml"]

#: Plain scalars YAML 1.1 reads as booleans but YAML 1.2 (and people) read as words.
_WORDS_11 = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")
_BOOLEANS = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class BooleanWordError(yaml.YAMLError):
    """A plain YAML word that YAML 1.1 turns into a boolean."""


def _check(node: yaml.Node, where: str, is_key: bool = False) -> None:
    if isinstance(node, yaml.ScalarNode):
        if node.style is not None or not isinstance(node.value, str):   # quoted, a block or folded scalar
            return
        if _WORDS_11.match(node.value) or (is_key and _BOOLEANS.match(node.value)):
            role = "key" if is_key else "value"
            raise BooleanWordError(
                f"{where}, line {node.start_mark.line + 1}, column {node.start_mark.column + 1}: the {role} "
                f"{node.value} is unquoted, and YAML 1.1 reads it as the boolean "
                f"{not node.value.lower().startswith(('n', 'of', 'f'))}. Fix: quote it, \"{node.value}\"")
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _check(key, where, is_key=True)
            _check(value, where)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check(item, where)


def load_yaml(text: str, where: str | Path) -> Any:
    """One YAML document, refused (BooleanWordError, a yaml.YAMLError) if it holds an unquoted YAML 1.1 boolean
    word; ``where`` names the file in messages."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node, str(where))
        return loader.construct_document(node)
    finally:
        loader.dispose()
