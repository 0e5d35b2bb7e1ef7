"""Archive files: the rows retention takes out of the ledger, kept as gzip JSON lines.

One file per archive (``<name>.jsonl.gz``): a first line holding the header (format, kind,
the rollout and its summary, when and under which cutoff it was made), then one line per row,
``{"table": ..., "row": {...}}``. Beside it, ``<name>.manifest.json`` holds the header again
with the rows counted by table and the file's SHA-256, so a file can be checked before a single
row is deleted or restored. Files are written under a temporary name, flushed to disk, checked,
and only then renamed into place: a file that exists under its final name is whole.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FORMAT = "rollout-archive/1"
SUFFIX = ".jsonl.gz"
MANIFEST_SUFFIX = ".manifest.json"


class ArchiveError(ValueError):
    """An archive file is missing, damaged, or not one of ours (one line says which)."""


@dataclass(frozen=True)
class Written:
    """An archive file in place: its path, checksum and rows by table."""

    path: Path
    sha256: str
    rows: dict[str, int]


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArchiveWriter:
    """Streams rows into a new archive file; :meth:`finish` puts it in place (a writer that
    is abandoned leaves only its temporary file, which the next writer of the name replaces)."""

    def __init__(self, folder: Path, name: str, header: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.name = name
        self.path = folder / f"{name}{SUFFIX}"
        self._partial = folder / f"{name}{SUFFIX}.partial"
        self._header = {"format": FORMAT, **header}
        self._raw: IO[bytes] = self._partial.open("wb")
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6, mtime=0)
        self._counts: Counter[str] = Counter()
        self._line({"header": self._header})

    def _line(self, value: dict[str, Any]) -> None:
        self._gz.write(json.dumps(value, separators=(",", ":"), sort_keys=True).encode() + b"\n")

    def write(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Append rows of ``table``."""
        for row in rows:
            self._line({"table": table, "row": row})
        self._counts[table] += len(rows)

    def finish(self) -> Written:
        """Close, flush to disk, check, move into place and write the manifest."""
        self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        sha = file_sha256(self._partial)
        rows = dict(sorted(self._counts.items()))
        # read it back before anything relies on it: the counts must be what was written
        if count_rows(self._partial) != rows:
            raise ArchiveError(f"{self._partial}: read back differently from what was written")
        os.replace(self._partial, self.path)
        manifest = {**self._header, "file": self.path.name, "sha256": sha, "rows": rows}
        tmp = self.folder / f"{self.name}{MANIFEST_SUFFIX}.partial"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / f"{self.name}{MANIFEST_SUFFIX}")
        _fsync_dir(self.folder)
        return Written(self.path, sha, rows)

    def abandon(self) -> None:
        """Drop the unfinished file."""
        self._gz.close()
        self._raw.close()
        self._partial.unlink(missing_ok=True)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with gzip.open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                try:
                    value = json.loads(line)
                except ValueError:
                    raise ArchiveError(f"{path}: line {number} is not JSON") from None
                if not isinstance(value, dict):
                    raise ArchiveError(f"{path}: line {number} is not a JSON object")
                yield value
    except (OSError, EOFError) as exc:
        raise ArchiveError(f"{path}: not a readable gzip file ({exc})") from None


def header(path: Path) -> dict[str, Any]:
    """The header line of an archive file."""
    for first in _lines(path):
        head = first.get("header")
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise ArchiveError(f"{path}: not a rollout archive ({FORMAT})")
        return head
    raise ArchiveError(f"{path}: empty file")


def rows(path: Path, table: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(table, row)`` for each row of the file (of one table, when given), in file order."""
    lines = _lines(path)
    next(lines, None)  # the header
    for value in lines:
        name, row = value.get("table"), value.get("row")
        if not isinstance(name, str) or not isinstance(row, dict):
            raise ArchiveError(f"{path}: a line is not a table row")
        if table is None or name == table:
            yield name, row


def ids(path: Path, table: str, batch: int) -> Iterator[list[int]]:
    """The ids of ``table``'s rows in the file, ``batch`` at a time."""
    chunk: list[int] = []
    for _, row in rows(path, table):
        chunk.append(int(row["id"]))
        if len(chunk) >= batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def count_rows(path: Path) -> dict[str, int]:
    """Rows by table, read from the file."""
    counts: Counter[str] = Counter(name for name, _ in rows(path))
    return dict(sorted(counts.items()))


def manifest_path(path: Path) -> Path:
    """Where the manifest of the archive file ``path`` is."""
    return path.with_name(path.name.removesuffix(SUFFIX) + MANIFEST_SUFFIX)


def resolve(given: Path) -> Path:
    """The archive file meant by ``given`` (the file itself or its manifest)."""
    if given.name.endswith(MANIFEST_SUFFIX):
        return given.with_name(given.name.removesuffix(MANIFEST_SUFFIX) + SUFFIX)
    return given


def verify(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """Check an archive file against its manifest (and against ``sha256``, the checksum the
    ledger recorded, when given); the manifest. Raises :class:`ArchiveError` naming what is
    wrong."""
    if not path.is_file():
        raise ArchiveError(f"{path}: no such archive file")
    mpath = manifest_path(path)
    try:
        manifest = json.loads(mpath.read_text())
    except OSError:
        raise ArchiveError(f"{path}: its manifest {mpath.name} is missing") from None
    except ValueError:
        raise ArchiveError(f"{mpath}: not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"{mpath}: not a rollout archive manifest ({FORMAT})")
    actual = file_sha256(path)
    if actual != manifest.get("sha256"):
        raise ArchiveError(f"{path}: checksum {actual[:12]}… differs from its manifest's")
    if sha256 is not None and actual != sha256:
        raise ArchiveError(f"{path}: checksum {actual[:12]}… differs from the ledger's record")
    return manifest
