"""The operator API's profile routes: the library, one profile with who holds it, the expiry
calendar, and adding a profile file (admins)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from rollout.access import Role
from rollout.clock import Clock
from rollout.ledger import Ledger, ProfileConflictError, ProfileEntry, RolloutInfo
from rollout.operations import keep_profile
from rollout.profiles import MAX_PROFILE_BYTES, ProfileError, parse_profile
from rollout.web.api_access import BEARER, NOT_FOUND, REFUSALS, Access, ErrorBody
from rollout.web.api_models import INVALID, CalendarEntry, ProfileDetail, ProfileOut


def profile_json(p: ProfileEntry) -> dict[str, Any]:
    """A library profile as the API shows it (its own description and when it was added)."""
    return {**p.metadata, "added_at": p.added_at.isoformat()}


CALENDAR_HORIZON = dt.timedelta(days=3650)
PROFILE_TYPES = ("application/octet-stream", "application/x-apple-aspen-mobileprovision")
"""What an uploaded profile file may be sent as (or with no Content-Type)."""
UPLOAD: dict[int | str, dict[str, Any]] = {
    200: {"model": ProfileOut, "description": "The same file is in the library already."},
    400: {
        "model": ErrorBody,
        "description": "Not a profile, or one that must be refused: damaged or tampered "
        "(its signature does not match), or its chain is not trusted.",
    },
    409: {"model": ErrorBody, "description": "A different file has this UUID in the library."},
    413: {"model": ErrorBody, "description": f"The file is over {MAX_PROFILE_BYTES} bytes."},
    415: {"model": ErrorBody, "description": "Not sent as application/octet-stream."},
    **INVALID,
}


def profiles_router(
    ledger: Ledger,
    clock: Clock,
    access: Access,
    *,
    trust_anchors: Sequence[x509.Certificate] = (),
) -> APIRouter:
    """``/api/v1/profiles`` and ``/api/v1/profiles/calendar``: reads for viewers; adding a
    profile (checked against ``trust_anchors``) for admins."""
    router = APIRouter(
        prefix="/api/v1/profiles", tags=["profiles"], dependencies=[BEARER], responses=REFUSALS
    )

    @router.get("/calendar", response_model=list[CalendarEntry])
    def calendar(request: Request) -> list[dict[str, Any]]:
        """Every profile devices hold, soonest expiry first: days left, how many devices hold
        it, and its latest renewal rollout (if any)."""
        access.require(request, Role.VIEWER)
        now = clock.now()
        with ledger.unit() as unit:
            held = unit.registry.expiring(now + CALENDAR_HORIZON)
            renewals: dict[str, RolloutInfo] = {}
            for found in unit.rollouts.renewing([h.profile_uuid for h in held]):
                renewals[found.replaces_uuid or ""] = found  # the latest wins (oldest first)
        out = []
        for h in held:
            r = renewals.get(h.profile_uuid)
            out.append(
                {
                    "profile": h.profile_uuid,
                    "name": h.name,
                    "app_id": h.app_id,
                    "expires_at": h.expires_at.isoformat(),
                    "days_left": (h.expires_at - now) // dt.timedelta(days=1),
                    "devices": h.devices,
                    "renewal": (
                        {"rollout": r.id, "state": r.state, "profile": r.profile_uuid}
                        if r
                        else None
                    ),
                }
            )
        return out

    @router.get("", response_model=list[ProfileOut])
    def list_(request: Request) -> list[dict[str, Any]]:
        """The library, soonest expiry first."""
        access.require(request, Role.VIEWER)
        with ledger.library() as store:
            return [profile_json(p) for p in store.profiles()]

    @router.post(
        "",
        status_code=201,
        response_model=ProfileOut,
        responses=UPLOAD,
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": f"A signed .mobileprovision file, at most {MAX_PROFILE_BYTES} "
                "bytes.",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def add(
        request: Request, response: Response, allow_untrusted: bool = False
    ) -> dict[str, Any]:
        """Add a signed profile file (the raw body) to the library, verified as ``rollout
        profiles add`` does: a file whose signature does not match its content is refused, and
        so is one whose chain does not reach ``ROLLOUT_TRUST_ANCHORS`` unless
        ``?allow_untrusted=true``. 201 with the profile; the same file again is 200 and writes
        nothing; a different file under a UUID already in the library is 409."""
        actor = await run_in_threadpool(access.require, request, Role.ADMIN)
        given = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if given and given not in PROFILE_TYPES:
            raise HTTPException(
                status_code=415,
                detail=f"send the profile file as application/octet-stream (not {given[:80]})",
            )
        data = await _body(request, MAX_PROFILE_BYTES)

        def keep() -> tuple[ProfileEntry, bool]:
            try:
                profile = parse_profile(data, trust_anchors=trust_anchors)
            except ProfileError as exc:
                raise HTTPException(
                    status_code=400, detail=f"not a usable profile: {exc}"
                ) from None
            try:
                return keep_profile(
                    ledger,
                    profile,
                    data,
                    actor=actor,
                    now=clock.now(),
                    require_trusted_chain=not allow_untrusted,
                )
            except ProfileError as exc:
                why = "" if profile.signature.valid else " (tampered or damaged file)"
                if profile.signature.valid and not profile.signature.chain_trusted:
                    why = "; configure ROLLOUT_TRUST_ANCHORS or add ?allow_untrusted=true"
                raise HTTPException(
                    status_code=400, detail=f"profile {profile.uuid} refused: {exc}{why}"
                ) from None
            except ProfileConflictError as exc:
                raise HTTPException(status_code=409, detail=str(exc)) from None

        entry, created = await run_in_threadpool(keep)
        if created:
            response.headers["Location"] = f"/api/v1/profiles/{entry.uuid}"
        else:
            response.status_code = 200
        return profile_json(entry)

    @router.get("/{uuid}", response_model=ProfileDetail, responses={**NOT_FOUND, **INVALID})
    def show(request: Request, uuid: str) -> dict[str, Any]:
        """One profile, with how many devices hold it (and the first of them) and the renewal
        rollouts that replace it."""
        access.require(request, Role.VIEWER)
        with ledger.unit() as unit:
            entry = unit.library.get(uuid.strip().lower()[:64])
            if entry is None:
                raise HTTPException(status_code=404, detail=f"no profile {uuid[:64]}")
            holders, sample = unit.registry.lacking(entry.uuid, None, sample=20)
            renewals = unit.rollouts.renewing([entry.uuid])
        return {
            **profile_json(entry),
            "held_by": {"devices": holders, "sample": sample},
            "renewals": [
                {"rollout": r.id, "state": r.state, "profile": r.profile_uuid} for r in renewals
            ],
        }

    return router


async def _body(request: Request, cap: int) -> bytes:
    """The request's whole body; 413 past ``cap`` bytes (refused before reading when it says
    so)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise HTTPException(status_code=413, detail=f"body over {cap} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise HTTPException(status_code=413, detail=f"body over {cap} bytes")
    return bytes(body)
