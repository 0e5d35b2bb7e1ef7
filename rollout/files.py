"""Reading a file a person named on the command line, with a size cap.

``Path.read_bytes()`` trusts the file: ``/dev/zero`` or a FIFO that never closes is read until
memory runs out, and ``stat().st_size`` is 0 for both, so a size check before reading does not
help. :func:`read_capped` reads in chunks and stops after ``limit + 1`` bytes, whatever the path
is (regular file, character device, FIFO, process substitution).
"""

from __future__ import annotations

import os
import stat
from os import PathLike

_CHUNK = 1024 * 1024


class FileReadError(OSError):
    """A file could not be read; ``str()`` is one line naming the path and the reason.

    An ``OSError``, so callers that already catch those keep working; print ``str(exc)``
    (``strerror`` is not set).
    """


class FileTooLargeError(FileReadError):
    """The file holds more than the caller's limit."""


def read_capped(path: str | PathLike[str], limit: int) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them; never reads more than ``limit + 1``.

    Raises :class:`FileTooLargeError` when there is more, and :class:`FileReadError` (with the
    operating system's reason) when the path cannot be opened or read.
    """
    if limit < 0:
        raise ValueError("limit must not be negative")
    name = os.fspath(path)
    try:
        with open(name, "rb", buffering=0) as file:
            info = os.fstat(file.fileno())
            # a regular file's size is known up front: refuse it without reading anything
            if stat.S_ISREG(info.st_mode) and info.st_size > limit:
                raise FileTooLargeError(
                    f"{name}: {info.st_size} bytes is over the {limit}-byte limit"
                )
            chunks: list[bytes] = []
            total = 0
            while total <= limit:
                chunk = file.read(min(_CHUNK, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except FileReadError:
        raise
    except OSError as exc:
        raise FileReadError(f"{name}: {exc.strerror or exc}") from exc
    if total > limit:
        # devices and pipes report no size; say what was seen rather than guess a total
        raise FileTooLargeError(f"{name}: over the {limit}-byte limit")
    return b"".join(chunks)
