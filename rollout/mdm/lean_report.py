"""Command reports on the hot path: :func:`rollout.mdm.parse_result` with a lean fast path.

Nearly every connect request is one of two tiny plists, ``Idle`` or a result with its
``CommandUUID`` and nothing else. For those, :mod:`plistlib` (an expat parser building the
dictionary event by event) costs about 20 µs of the ~200 µs the endpoint spends on a request;
the fast path below reads them with one regular expression in a few microseconds.

It only accepts bodies laid out exactly as ``plistlib.dumps`` writes them (the XML declaration,
the Apple DOCTYPE, ``<dict>`` with tab-indented pairs), whose values are all non-empty
``<string>`` elements of ``[A-Za-z0-9._:-]`` (so no entity, whitespace or escaping rule can
make plistlib read them differently) no longer than the UDID and CommandUUID bounds
(:mod:`rollout.bounds`), whose keys are ``UDID``, ``Status`` and ``CommandUUID`` only, whose
``Status`` is a known one and which carry what :func:`~rollout.mdm.parse_result` requires. For
such a body the result is the same :class:`~rollout.mdm.CommandResult` that ``parse_result``
builds, with no command-specific keys (an empty ``extra_json``) and nothing out of bounds.
Everything else, including every malformed or over-long body, goes through ``parse_result``
itself, so refusals keep their reasons.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from rollout import bounds
from rollout.mdm.messages import (
    MAX_BODY_BYTES,
    CommandResult,
    Enrollment,
    Status,
    parse_result,
)

__all__ = ["parse_report"]

# A value longer than the tighter of the two bounds takes the full path, which refuses it (or
# accepts it, should the bounds ever differ) with its reason; ASCII never grows in upper case.
_VALUE = rb"[A-Za-z0-9._:\-]{1,%d}" % min(bounds.UDID, bounds.COMMAND_UUID)
_SHAPE = re.compile(
    rb'<\?xml version="1\.0" encoding="UTF-8"\?>\n'
    rb'<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1\.0//EN" '
    rb'"http://www\.apple\.com/DTDs/PropertyList-1\.0\.dtd">\n'
    rb'<plist version="1\.0">\n<dict>\n'
    rb"((?:\t<key>[A-Za-z]+</key>\n\t<string>" + _VALUE + rb"</string>\n){1,3})"
    rb"</dict>\n</plist>\n"
)
_PAIR = re.compile(rb"\t<key>([A-Za-z]+)</key>\n\t<string>(" + _VALUE + rb")</string>\n")
_KEYS = frozenset({"UDID", "Status", "CommandUUID"})
_STATUSES = {s.value: s for s in Status}


def parse_report(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> CommandResult:
    """The parsed report (exactly what :func:`rollout.mdm.parse_result` returns)."""
    if isinstance(body, bytes) and len(body) <= max_bytes:
        found = _SHAPE.fullmatch(body)
        if found is not None:
            top = {k.decode("ascii"): v.decode("ascii") for k, v in _PAIR.findall(found[1])}
            status = _STATUSES.get(top.get("Status", ""))
            if (
                status is not None
                and "UDID" in top
                and top.keys() <= _KEYS
                and (status is Status.IDLE or "CommandUUID" in top)
            ):
                return CommandResult(
                    status=status,
                    command_uuid=None if status is Status.IDLE else top["CommandUUID"],
                    # UDID is the only identity key here, a non-empty string: what
                    # Enrollment.from_plist would read, without its six lookups.
                    enrollment=Enrollment(udid=top["UDID"]),
                    raw=MappingProxyType(top),
                    extra_json={},
                )
    return parse_result(body, max_bytes=max_bytes)
