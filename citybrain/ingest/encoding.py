"""Tell UTF-8 from GB18030 (and UTF-16 with a BOM) in the files departments export.

Chinese government systems export both: newer ones UTF-8 (often with a BOM, for Excel),
older ones GB2312/GBK, which GB18030 decodes. The test is per line over a sample: a line
that is valid UTF-8 and not ASCII votes UTF-8; a line that is not UTF-8 but decodes as
GB18030 votes GB18030. A file of ASCII only is UTF-8.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

SAMPLE_BYTES = 4 * 1024 * 1024
SUPPORTED = ("utf-8", "utf-8-sig", "gb18030", "utf-16")


@dataclass(frozen=True)
class Detected:
    encoding: str          # a Python codec name
    reason: str            # why, for the report
    utf8_lines: int = 0
    gb18030_lines: int = 0
    undecodable_lines: int = 0


def detect_encoding(path: Path, sample_bytes: int = SAMPLE_BYTES) -> Detected:
    with open(path, "rb") as f:
        sample = f.read(sample_bytes)
    if sample.startswith(codecs.BOM_UTF8):
        return Detected("utf-8-sig", "UTF-8 byte-order mark")
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return Detected("utf-16", "UTF-16 byte-order mark")
    if len(sample) == sample_bytes and b"\n" in sample:
        sample = sample[: sample.rindex(b"\n")]   # do not judge a character cut by the sample's end
    utf8 = gb = bad = 0
    for line in sample.splitlines():
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
            utf8 += 1
            continue
        except UnicodeDecodeError:
            pass
        try:
            line.decode("gb18030")
            gb += 1
        except UnicodeDecodeError:
            bad += 1
    if gb > utf8:
        return Detected("gb18030", f"{gb} line(s) decode only as GB18030, {utf8} as UTF-8", utf8, gb, bad)
    if utf8:
        return Detected("utf-8", f"{utf8} non-ASCII line(s) are UTF-8" + (f", {gb} are not" if gb else ""), utf8, gb, bad)
    if bad:
        return Detected("utf-8", f"{bad} line(s) are neither UTF-8 nor GB18030; treated as UTF-8 and refused line by line",
                        utf8, gb, bad)
    return Detected("utf-8", "ASCII only")


def check_encoding(name: str) -> str:
    """The codec name for ``--encoding``, or a ValueError naming the choices."""
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}; use auto or one of {', '.join(SUPPORTED)}") from None
    aliases = {"gbk": "gb18030", "gb2312": "gb18030"}
    return aliases.get(codec, codec)
