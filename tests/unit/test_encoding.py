"""Departments export UTF-8 (with or without BOM) and GB18030: tell them apart per line."""

from __future__ import annotations

from pathlib import Path

import pytest

from citybrain.ingest.encoding import check_encoding, detect_encoding

TEXT = "警情编号,报警时间\n110-20261122-00001,2026/11/22 14:32:10\n道路积水,下穿隧道\n"


@pytest.mark.parametrize("encoding, expected", [
    ("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("gb18030", "gb18030"), ("gbk", "gb18030"), ("utf-16", "utf-16"),
])
def test_detects_the_encodings_departments_use(tmp_path: Path, encoding: str, expected: str) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(TEXT.encode(encoding))
    assert detect_encoding(path).encoding == expected


def test_ascii_only_is_utf8_and_a_stray_bad_line_does_not_flip_a_utf8_file(tmp_path: Path) -> None:
    ascii_file = tmp_path / "a.csv"
    ascii_file.write_bytes(b"id,value\n1,2\n")
    assert detect_encoding(ascii_file).encoding == "utf-8"
    mixed = tmp_path / "m.csv"
    mixed.write_bytes((TEXT * 5).encode("utf-8") + "道路积水\n".encode("gb18030"))
    found = detect_encoding(mixed)
    assert found.encoding == "utf-8" and found.gb18030_lines == 1


def test_unknown_encoding_names_the_choices() -> None:
    assert check_encoding("GBK") == "gb18030"
    with pytest.raises(ValueError, match="auto or one of"):
        check_encoding("klingon")
