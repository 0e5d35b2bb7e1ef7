"""The push certificate as a file on disk, read again when it is replaced.

A push certificate is renewed once a year at Apple's portal, and the renewal keeps its topic.
:class:`CertificateFile` looks at the file (and the separate key file) at most every
``check_every`` seconds; when either changed, it loads them again. A usable renewal with the
same topic becomes :attr:`CertificateFile.certificate` and :meth:`CertificateFile.poll` hands
it to the client, whose new connections present it (open ones drain). A replacement for
another topic is refused: every enrolled device registered its push token for the old topic,
so pushing with another one would reach no device until each re-enrolls. The old certificate
stays in use, an error is logged, and :attr:`CertificateFile.refused` says why until a file
with the right topic is put back. A file that cannot be read (half-written, wrong password) is
refused the same way, and read again once it changes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from rollout.apns.certs import PushCertificate, load_push_certificate
from rollout.apns.errors import CertificateError
from rollout.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("rollout.apns")

CHECK_EVERY_S = 10.0
"""How often (at most) the files are looked at: a stat() each, before a batch."""

RefusalHook = Callable[[str], None]
_Stamp = tuple[tuple[int, int, int, int], ...]


class CertificateFile:
    """The push certificate at ``path`` (with ``password`` and ``key_path``), kept current.

    Raises :class:`CertificateError` at once when the file cannot be used at the start; later
    problems never raise: the certificate in use stays, and the problem is logged, kept in
    :attr:`refused` and passed to ``on_refused``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        password: str | None = None,
        key_path: str | os.PathLike[str] | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        check_every: float = CHECK_EVERY_S,
        on_refused: RefusalHook | None = None,
    ) -> None:
        self.path = Path(path)
        self.key_path = Path(key_path) if key_path is not None else None
        self._password = password
        self._clock = clock
        self._check_every = check_every
        self.on_refused = on_refused
        self._lock = threading.Lock()  # several threads of one worker may push at once
        self._stamp = self._read_stamp()
        self.certificate: PushCertificate = self._load()
        self._next_check = clock.monotonic() + check_every
        self.refused: str | None = None
        """Why the file on disk is not the certificate in use (None: it is)."""

    def _load(self) -> PushCertificate:
        return load_push_certificate(self.path, self._password, self.key_path)

    def _read_stamp(self) -> _Stamp:
        stamps = []
        for path in (self.path, self.key_path):
            if path is None:
                continue
            try:
                st = path.stat()
            except OSError:
                stamps.append((-1, -1, -1, -1))
                continue
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))
        return tuple(stamps)

    def poll(self) -> PushCertificate | None:
        """The renewed certificate to use from now on, when the file was replaced since the
        last look by a usable one with the same topic; else None. Cheap: a stat() per file at
        most every ``check_every`` seconds."""
        with self._lock:
            now = self._clock.monotonic()
            if now < self._next_check:
                return None
            self._next_check = now + self._check_every
            stamp = self._read_stamp()
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            return self._reload()

    def _reload(self) -> PushCertificate | None:
        current = self.certificate
        try:
            renewed = self._load()
        except (CertificateError, OSError, ValueError) as exc:
            self._refuse(
                f"push certificate {self.path} changed but cannot be used ({exc}); "
                f"still pushing with the previous one (topic {current.topic})"
            )
            return None
        if renewed.topic != current.topic:
            self._refuse(
                f"push certificate {self.path} was replaced by one for another topic "
                f"({renewed.topic}, in use: {current.topic}): refused, still pushing with the "
                "previous certificate. Devices only accept pushes for the topic they enrolled "
                "with, so a new topic means every device must re-enroll; put back a renewal of "
                "the same certificate (renew it at Apple's portal, do not create a new one)"
            )
            return None
        self.refused = None
        if renewed.cert == current.cert:  # touched or copied again: nothing new
            return None
        self.certificate = renewed
        log.info(
            "push certificate %s renewed (topic %s, expires %s): new connections use it",
            self.path,
            renewed.topic,
            f"{renewed.not_after:%Y-%m-%d}",
        )
        return renewed

    def _refuse(self, reason: str) -> None:
        self.refused = reason
        log.error("%s", reason)
        if self.on_refused is not None:
            try:
                self.on_refused(reason)
            except Exception:  # what watches the certificate must never break pushing
                log.exception("push certificate refusal hook failed")
