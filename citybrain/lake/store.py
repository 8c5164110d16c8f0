"""The lake's storage: a local folder or object storage, behind one path type over ``pyarrow.fs``.

``CITYBRAIN_LAKE_URI`` names the lake's root as a pyarrow filesystem URI (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``file:///srv/lake``); unset, the lake is the local folder ``<state>/lake``
reached through the same code (pyarrow's local filesystem). Every module reaches the lake through
``LakePath``: the small part of ``pathlib`` the lake needs (``/``, ``glob``, ``exists``, reading and
writing, ``replace``), plus Parquet and DuckDB helpers that pass the filesystem along.

Writes are atomic on both kinds of storage, which is what the sink's exactly-once protocol needs: on a
local filesystem a file is written under a hidden temporary name and renamed into place; on object
storage an object is written by one upload that becomes visible whole when it completes (there is no
rename there: a "move" is a copy and a delete). Locally they are durable too: the temporary file is fsynced
before its rename and its folder after it (and a new folder's parent once it is made), so a power cut leaves
the old file or the new one, never a renamed name over data still in the page cache.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import IO, Any, Iterator, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from citybrain.errors import InputError

__all__ = ["LakePath", "LakeStorageError", "as_lake", "dataset", "open_lake", "read_metadata", "read_table",
           "register", "sync_dir", "write_table"]

#: URI schemes the lake root may have (pyarrow's filesystems).
SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "abfs", "abfss")


class LakeStorageError(InputError):
    """The lake's root cannot be opened, or an operation needs a local lake."""


def open_lake(uri: str) -> LakePath:
    """The lake rooted at ``uri`` (a pyarrow filesystem URI, or a plain local path)."""
    text = uri.strip()
    if "://" not in text:
        path = Path(text).expanduser().resolve()
        return LakePath(pafs.LocalFileSystem(), path.as_posix())
    scheme = text.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise LakeStorageError(f"CITYBRAIN_LAKE_URI={uri!r}: scheme {scheme!r} is not a lake storage pyarrow knows. "
                               f"Use one of {', '.join(s + '://' for s in SCHEMES)} (e.g. s3://city-lake/citybrain).")
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
        raise LakeStorageError(f"CITYBRAIN_LAKE_URI={uri!r}: pyarrow cannot open it ({exc}). Fix: check the bucket "
                               "and the options (s3: ?region=...&endpoint_override=host:port&scheme=https), and that "
                               "the credentials are in the environment (AWS_ACCESS_KEY_ID, ...).") from exc
    root = f"{scheme}://" if fs.type_name != "local" else ""
    return LakePath(fs, path.rstrip("/") or "/", root)


def as_lake(where: LakePath | Path | str) -> LakePath:
    """``where`` as a lake path: a LakePath as is, a local path or a URI opened."""
    if isinstance(where, LakePath):
        return where
    return open_lake(str(where))


@dataclass(frozen=True)
class LakePath:
    """A file or folder of the lake: ``path`` inside the filesystem ``fs`` (``root``: the URI scheme shown)."""

    fs: pafs.FileSystem = field(compare=False, hash=False, repr=False)
    path: str
    root: str = ""

    # -- names -------------------------------------------------------------------------------------------

    @property
    def local(self) -> bool:
        """True on a local filesystem (files can be renamed atomically and handed to local tools)."""
        return self.fs.type_name == "local"

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> LakePath:
        return LakePath(self.fs, posixpath.dirname(self.path) or self.path, self.root)

    @property
    def parts(self) -> tuple[str, ...]:
        return PurePosixPath(self.path).parts

    def __truediv__(self, other: str | PurePosixPath) -> LakePath:
        return LakePath(self.fs, posixpath.join(self.path, str(other)), self.root)

    def with_name(self, name: str) -> LakePath:
        return self.parent / name

    def relative_to(self, other: LakePath | str) -> PurePosixPath:
        base = other.path if isinstance(other, LakePath) else str(other)
        return PurePosixPath(self.path).relative_to(base)

    def __str__(self) -> str:
        return self.root + self.path

    def __fspath__(self) -> str:
        """The local path, for tools that take only local files; refused on object storage."""
        if not self.local:
            raise LakeStorageError(f"{self} is on object storage: this step needs a local lake. Fix: run it with "
                                   "CITYBRAIN_LAKE_URI unset, or report it (every lake step should use citybrain.lake.store).")
        return self.path

    def __lt__(self, other: LakePath) -> bool:
        return self.path < other.path

    # -- looking -----------------------------------------------------------------------------------------

    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def stat(self) -> SimpleNamespace:
        """Size and modification time (``st_size``, ``st_mtime``, ``st_mtime_ns``) like ``os.stat``."""
        info = self._info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(str(self))
        mtime_ns = info.mtime_ns or 0
        return SimpleNamespace(st_size=info.size or 0, st_mtime=mtime_ns / 1e9, st_mtime_ns=mtime_ns)

    def _list(self, recursive: bool) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive))

    def iterdir(self) -> Iterator[LakePath]:
        for info in sorted(self._list(False), key=lambda i: i.path):
            yield LakePath(self.fs, info.path, self.root)

    def glob(self, pattern: str) -> Iterator[LakePath]:
        """The paths below this folder matching ``pattern`` (``*``, ``?``, ``[...]`` within one name)."""
        parts = [p for p in pattern.split("/") if p]
        fixed = 0
        while fixed < len(parts) - 1 and not _wild(parts[fixed]):
            fixed += 1
        base = self / "/".join(parts[:fixed]) if fixed else self
        rest = parts[fixed:]
        if self.local or len(rest) == 1:   # one listing per folder on the way down
            level = [base]
            for i, part in enumerate(rest):
                last = i == len(rest) - 1
                level = [LakePath(self.fs, info.path, self.root) for d in level for info in d._list(False)
                         if fnmatch.fnmatchcase(posixpath.basename(info.path), part)
                         and (last or info.type == pafs.FileType.Directory)]
            yield from sorted(level)
        else:   # object storage: one recursive (paged) listing beats a request per folder
            yield from _match_tree(base, rest)

    def rglob(self, pattern: str) -> Iterator[LakePath]:
        """Every path at any depth below this folder whose name matches ``pattern``."""
        for info in self._list(True):
            if fnmatch.fnmatchcase(posixpath.basename(info.path), pattern):
                yield LakePath(self.fs, info.path, self.root)

    # -- reading and writing -----------------------------------------------------------------------------

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def open(self, mode: str = "rb") -> IO[bytes]:
        """For reading (writes go through ``write_bytes`` or ``write_table``, which are atomic)."""
        if mode != "rb":
            raise ValueError(f"LakePath.open: mode {mode!r} is not supported; read with 'rb', write with write_bytes")
        return self.fs.open_input_stream(self.path)

    def write_bytes(self, data: bytes) -> None:
        """Write the file atomically (readers see the old content or the new, never part of it)."""
        self._atomic(lambda sink: sink.write(data))

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def _atomic(self, write: Any) -> None:
        if self.local:
            self.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.with_name(f".{self.name}.tmp")
            with open(tmp.path, "wb") as sink:
                write(sink)
                sink.flush()
                os.fsync(sink.fileno())   # the data on disk before the name points at it
            self.fs.move(tmp.path, self.path)
            sync_dir(self.parent)        # the rename itself on disk
        else:
            try:
                stream = self.fs.open_output_stream(self.path)
            except FileNotFoundError:   # a filesystem with folders after all (HDFS, a sub-tree of a local one)
                self.fs.create_dir(self.parent.path, recursive=True)
                stream = self.fs.open_output_stream(self.path)
            with stream as sink:
                write(sink)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        if not self.local:
            return   # object storage has no folders: a key's prefix exists once an object is written under it
        if self.exists():
            if not exist_ok:
                raise FileExistsError(str(self))
            return
        if parents and not self.parent.exists():
            self.parent.mkdir(parents=True, exist_ok=True)
        self.fs.create_dir(self.path, recursive=False)
        sync_dir(self.parent)   # the new folder's entry on disk, so files renamed into it survive a power cut

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmdir(self) -> None:
        """Remove an empty folder (OSError when it is not empty, as ``Path.rmdir``)."""
        if self._list(False):
            raise OSError(f"{self}: folder not empty")
        if self.local:
            self.fs.delete_dir(self.path)

    def rmtree(self) -> None:
        self.fs.delete_dir(self.path)

    def replace(self, target: LakePath) -> LakePath:
        """Move this file to ``target`` (atomic rename locally; copy and delete on object storage)."""
        if self.local:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.move(self.path, target.path)
            sync_dir(target.parent)
            if target.parent != self.parent:
                sync_dir(self.parent)
        else:
            target.write_bytes(self.read_bytes())
            self.unlink()
        return target


def sync_dir(folder: LakePath) -> None:
    """Make the names in a local folder durable (renames, deletions, new entries); nothing on object storage,
    where an upload or a delete is durable once it returns."""
    if not folder.local:
        return
    fd = os.open(folder.path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wild(part: str) -> bool:
    return any(c in part for c in "*?[")


def _match_tree(base: LakePath, parts: list[str]) -> Iterator[LakePath]:
    """Paths ``len(parts)`` levels below ``base`` whose names match ``parts`` one for one, from one recursive
    listing (folders are implicit on object storage: a deeper key names the folders above it)."""
    found: set[str] = set()
    for info in base._list(True):
        rel = posixpath.relpath(info.path, base.path).split("/")
        head = rel[:len(parts)]
        if len(head) == len(parts) and all(fnmatch.fnmatchcase(n, p) for n, p in zip(head, parts)):
            found.add(posixpath.join(base.path, *head))
    return iter([LakePath(base.fs, p, base.root) for p in sorted(found)])


# -- Parquet and DuckDB over the lake ------------------------------------------------------------------------

def read_table(source: LakePath | Sequence[LakePath], columns: Sequence[str] | None = None,
               schema: pa.Schema | None = None) -> pa.Table:
    """One file, or several (as one table), read from the lake."""
    files = [source] if isinstance(source, LakePath) else [as_lake(f) for f in source]
    if not files:
        return pa.table({})
    cols = list(columns) if columns else None
    if len(files) == 1:
        return pq.read_table(files[0].path, filesystem=files[0].fs, columns=cols, schema=schema)
    return pq.ParquetDataset([f.path for f in files], filesystem=files[0].fs, schema=schema).read(columns=cols)


def read_metadata(path: LakePath) -> pq.FileMetaData:
    with path.fs.open_input_file(path.path) as f:
        return pq.read_metadata(f)


def write_table(table: pa.Table, path: LakePath, **options: Any) -> int:
    """Write ``table`` as Parquet at ``path``, atomically (see the module's docstring); the file's size in bytes."""
    options.setdefault("compression", "zstd")
    size = [0]

    def write(sink: Any) -> None:
        pq.write_table(table, sink, **options)
        size[0] = sink.tell()
    path._atomic(write)
    return size[0]


def upload_tree(local: Path, target: LakePath) -> int:
    """Copy the files of a local folder to ``target`` that it lacks or that changed since they were copied
    (newer than the copy, or of another size); the number copied."""
    have = {posixpath.relpath(i.path, target.path): i for i in target._list(True) if i.type == pafs.FileType.File}
    copied = 0
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = f.relative_to(local).as_posix()
        old, st = have.get(rel), f.stat()
        if old is None or old.size != st.st_size or (old.mtime_ns or 0) < st.st_mtime_ns:
            (target / rel).write_bytes(f.read_bytes())
            copied += 1
    return copied


def dataset(files: Sequence[LakePath]) -> Any:
    """The files as one pyarrow dataset (DuckDB scans it with projection and filter pushdown)."""
    import pyarrow.dataset as ds

    files = [as_lake(f) for f in files]
    return ds.dataset([f.path for f in files], filesystem=files[0].fs, format="parquet")


def register(con: Any, name: str, files: Sequence[LakePath]) -> str:
    """Make ``files`` the DuckDB view ``name`` on ``con`` (the same on local disk and object storage); ``name``."""
    con.register(name, dataset(files))
    return name
