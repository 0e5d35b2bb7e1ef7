"""A watched folder: operators (or a script) drop renewed profile files there.

Every ``.mobileprovision`` / ``.provisionprofile`` file in the folder (not in sub-folders) is
offered to the renewal scan, which verifies each one and keeps the good ones in the library; a
file that is not a valid, trusted profile is refused by the scan and left where it is.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from rollout.files import FileReadError, read_capped
from rollout.ledger import ProfileEntry

log = logging.getLogger(__name__)

SUFFIXES = (".mobileprovision", ".provisionprofile")
MAX_PROFILE_BYTES = 4 * 1024 * 1024  # real profiles are a few to a few hundred KB
MAX_FILES = 1000


class FolderSource:
    """Profile files in one folder."""

    name = "folder"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def fetch(self, old: ProfileEntry, now: dt.datetime) -> list[bytes]:
        """Every profile file in the folder (the scan picks what renews ``old``)."""
        if not self.folder.is_dir():
            raise FileNotFoundError(f"profile folder {self.folder} is not a folder")
        paths = sorted(
            p for p in self.folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()
        )
        if len(paths) > MAX_FILES:
            log.warning("profile folder %s: reading the first %d files", self.folder, MAX_FILES)
        files = []
        for path in paths[:MAX_FILES]:
            try:
                files.append(read_capped(path, MAX_PROFILE_BYTES))
            except FileReadError as exc:
                log.warning("profile folder: %s", exc)
        return files
