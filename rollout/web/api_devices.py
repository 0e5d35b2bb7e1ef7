"""The operator API's device routes: the registry a page at a time, and one device with its
targets across rollouts and the profiles it holds.

No answer carries a device's push token, push magic or identity certificate hash: what a
device is, where it stands and what it holds, never what would let someone act as it or wake
it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from rollout.access import Role
from rollout.ledger import DeviceFilter, DeviceInfo, DeviceTarget, InstalledProfile, Ledger
from rollout.states import EnrollmentState, TokenState
from rollout.web.api_access import BEARER, NOT_FOUND, REFUSALS, Access
from rollout.web.api_models import INVALID, DeviceDetail, DevicePage

TARGETS_SHOWN = 200
"""A device's targets shown by ``GET /api/v1/devices/{key}``: its newest rollouts."""
Filter = Annotated[str | None, Query(max_length=512)]


def _when(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def device_json(d: DeviceInfo) -> dict[str, Any]:
    """A device as the API lists it (the keys of ``rollout devices list --json`` and more)."""
    return {
        "id": d.id,
        "enrollment_id": d.enrollment_id,
        "udid": d.udid,
        "enrollment_type": d.enrollment_type,
        "state": d.state,
        "token": d.token_state,
        "platform": d.platform,
        "os_version": d.os_version,
        "model": d.model,
        "product_name": d.product_name,
        "serial_number": d.serial_number,
        "device_name": d.device_name,
        "tags": list(d.tags),
        "access_rights": d.access_rights,
        "identity_bound": d.identity_sha256 is not None,
        "last_seen_at": _when(d.last_seen_at),
    }


def _held(p: InstalledProfile) -> dict[str, Any]:
    return {
        "uuid": p.profile_uuid,
        "name": p.name,
        "expires_at": _when(p.expires_at),
        "source": p.source,
        "seen_at": p.seen_at.isoformat(),
    }


def _target(t: DeviceTarget) -> dict[str, Any]:
    return {
        "rollout": t.rollout_id,
        "rollout_name": t.rollout_name,
        "rollout_state": t.rollout_state,
        "profile": t.profile_uuid,
        "target": t.target_id,
        "stage": t.stage,
        "state": t.state,
        "reason": t.reason,
        "pushes": t.push_count,
        "notnow": t.notnow_count,
        "error_chain": t.error_chain,
        "updated_at": t.updated_at.isoformat(),
        "finished_at": _when(t.finished_at),
    }


def _text(name: str, value: str | None) -> str | None:
    """A filter's text, stripped (None when empty); 422 for a NUL, which no value holds."""
    if value is not None and "\x00" in value:
        raise HTTPException(status_code=422, detail=f"{name}: a NUL character")
    if value is None:
        return None
    return value.strip() or None


def _split(name: str, value: str | None, allowed: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A comma-separated filter's values; 422 naming one that is not ``allowed``."""
    given = _text(name, value) or ""
    values = tuple(dict.fromkeys(v.strip() for v in given.split(",") if v.strip()))
    for v in values:
        if allowed and v not in allowed:
            raise HTTPException(
                status_code=422, detail=f"{name}: {v[:64]!r} is not one of {', '.join(allowed)}"
            )
    return values


def devices_router(ledger: Ledger, access: Access) -> APIRouter:
    """``/api/v1/devices``: reads for viewers."""
    router = APIRouter(
        prefix="/api/v1/devices", tags=["devices"], dependencies=[BEARER], responses=REFUSALS
    )

    @router.get("", response_model=DevicePage, responses=INVALID)
    def devices(
        request: Request,
        platform: Filter = None,
        model: Filter = None,
        tag: Filter = None,
        state: Filter = None,
        token: Filter = None,
        holds: Annotated[str | None, Query(max_length=64)] = None,
        serial: Annotated[str | None, Query(max_length=64)] = None,
        key: Annotated[str | None, Query(max_length=256)] = None,
        after: Annotated[int, Query(ge=0, lt=2**63)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The registry in id order, a page at a time (``next`` is the ``after`` of the next
        page, null on the last). Filters, all of which must hold: ``platform``, any of a
        comma-separated list; ``model``, the model or product name (``iPhone14,2``);
        ``tag``, all of a list; ``state`` (enrollment) and ``token``, any of a list; ``holds``,
        a profile UUID the inventory says the device holds; ``serial`` and ``key`` (UDID or
        EnrollmentID), a start of it."""
        access.require(request, Role.VIEWER)
        holder = _text("holds", holds)
        where = DeviceFilter(
            states=_split("state", state, tuple(s.value for s in EnrollmentState)),
            tags=_split("tag", tag),
            platforms=_split("platform", platform),
            holders_of=holder.lower() if holder else None,
            models=(m,) if (m := _text("model", model)) else (),
            token_states=_split("token", token, tuple(s.value for s in TokenState)),
            key_prefix=_text("key", key),
            serial_prefix=_text("serial", serial),
        )
        with ledger.registry() as store:
            page = store.page(after_id=after, limit=limit, where=where)
        return {
            "items": [device_json(d) for d in page],
            "next": page[-1].id if len(page) == limit else None,
        }

    @router.get("/{key}", response_model=DeviceDetail, responses={**NOT_FOUND, **INVALID})
    def device(request: Request, key: str) -> dict[str, Any]:
        """One device by UDID (any case) or EnrollmentID: its enrollment and push-token state,
        the profiles it is known to hold (and where that came from), and its targets across
        rollouts, newest first (at most 200)."""
        access.require(request, Role.VIEWER)
        wanted = key.strip()[:256]
        with ledger.registry() as store:
            found = None
            if wanted and "\x00" not in wanted:
                found = store.get(wanted) or store.get(wanted.upper())
            if found is None:
                raise HTTPException(status_code=404, detail=f"no device {wanted[:64]!r}")
            held = store.installed(found.id)
            targets = store.targets_of(found.id, limit=TARGETS_SHOWN)
        return {
            **device_json(found),
            "enrolled_at": _when(found.enrolled_at),
            "checked_out_at": _when(found.checked_out_at),
            "token_dead_at": _when(found.token_dead_at),
            "profiles": [_held(p) for p in held],
            "targets": [_target(t) for t in targets],
        }

    return router
