"""What the operator API answers: one pydantic model per JSON shape, so that the OpenAPI
document says exactly what each route returns (HTTP only).

The routes build these shapes from the ledger's values (and from the JSON the CLI prints, so the
two never differ); FastAPI checks each answer against its model on the way out. Times are ISO
8601 strings in UTC. Refusals are :class:`~rollout.web.api_access.ErrorBody`, request
validation included (:func:`refuse_invalid`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from rollout.web.api_access import ErrorBody

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
"""An ISO 8601 time in UTC (``2026-01-31T12:00:00+00:00``, or ending in ``Z``)."""

INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "A parameter or value is not valid (which, why)."}
}


async def refuse_invalid(request: Request, exc: Exception) -> JSONResponse:
    """A request whose parameters do not fit the route: 422 with one line naming the first
    one that does not and why, like every other refusal of the API."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    if not errors:
        return JSONResponse({"detail": "the request is not valid"}, status_code=422)
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
    return JSONResponse({"detail": f"{where}: {first.get('msg', 'not valid')}"}, status_code=422)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- access --------------------------------------------------------------------------------


class WhoAmI(_Out):
    """The caller: the actor its events name, and its role."""

    actor: str
    role: Literal["viewer", "operator", "admin"]


class TokenOut(_Out):
    """An API token, never the token itself (what ``rollout tokens list --json`` prints)."""

    id: int
    name: str
    role: Literal["viewer", "operator", "admin"]
    created_by: str | None
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class NewToken(TokenOut):
    """A token just made: ``token`` is shown this once (the ledger keeps its hash)."""

    token: str


class TokenRequest(_Out):
    """The body of ``POST /api/v1/tokens``."""

    name: str = Field(pattern=r"^[A-Za-z0-9._@+-]{1,64}$", description="Who or what holds it.")
    role: Literal["viewer", "operator", "admin"]


# ---- rollouts ------------------------------------------------------------------------------


class RolloutListed(_Out):
    """A rollout in the list."""

    id: int
    name: str
    state: str
    profile: str | None
    created_at: Timestamp


class RolloutHead(RolloutListed):
    """A rollout's own row, as its summary shows it."""

    started_at: Timestamp | None
    finished_at: Timestamp | None


class RolloutHeadNow(RolloutHead):
    """A rollout's own row with why it stands as it does and its open stage."""

    reason: str | None
    current_stage: int


class StageCounts(_Out):
    """One stage's targets by state."""

    stage: int
    states: dict[str, int]


class GateVerdict(_Out):
    """A stage's gate judged now, with the figures it was judged on."""

    verdict: Literal["wait", "pass", "fail"]
    why: str
    eligible: int
    final: int
    succeeded: int
    failed: int
    final_share: float
    success_rate: float


class StageReport(_Out):
    """One stage: its reach, state, targets by state and gate verdict."""

    stage: int
    reach: str
    state: str
    states: dict[str, int]
    gate: GateVerdict


class _ByReason(BaseModel):
    """Beside the declared keys, one key per side exit (``ineligible``, ``failed``, ...): its
    targets by reason."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, dict[str, int]] = Field(init=False)


class RolloutSummaryOut(_ByReason):
    """A rollout just created: its targets by state, by stage, and by reason for the side
    exits (what ``rollouts create --json`` prints)."""

    rollout: RolloutHead
    states: dict[str, int]
    stages: list[StageCounts]


class RolloutReport(_ByReason):
    """A rollout now: its targets by state and by reason, each stage with its gate's verdict
    (what ``rollouts show --json`` prints)."""

    rollout: RolloutHeadNow
    states: dict[str, int]
    stages: list[StageReport]


class ControlOut(RolloutReport):
    """What a control did (``done`` false when nothing changed; ``result`` what it returned:
    how many targets, the stage opened, ...) and the rollout afterwards."""

    done: bool
    result: bool | int | None


class PlannedStage(_Out):
    """How many devices a stage would reach."""

    stage: int
    reach: str
    devices: int


class PlanOut(_Out):
    """A dry run: the profile, the command, per stage how many devices, per exclusion reason
    how many."""

    profile: str | None
    command: str
    eligible: int
    stages: list[PlannedStage]
    excluded: dict[str, int]


class RolloutDevice(_Out):
    """One device of a rollout: its target's stage, state, reason, pushes and error chain."""

    target: int
    device: str
    stage: int
    state: str
    reason: str | None
    pushes: int
    notnow: int
    error_chain: list[dict[str, Any]] | None


class RolloutDevicePage(_Out):
    """A page of a rollout's devices; ``next`` is the ``after`` of the next page."""

    items: list[RolloutDevice]
    next: int | None


# ---- events and alerts ---------------------------------------------------------------------


class EventOut(_Out):
    """One journal entry."""

    id: int
    at: Timestamp
    kind: str
    rollout: int | None
    device: str | None
    command: str | None
    data: dict[str, Any]


class EventPage(_Out):
    """A page of the journal, newest first; ``next`` is the ``before`` of the next page."""

    items: list[EventOut]
    next: int | None


class AlertOut(_Out):
    """An alert (what ``alerts list --json`` prints)."""

    id: int
    key: str
    kind: str
    severity: str
    state: str
    title: str
    data: dict[str, Any]
    opened_at: Timestamp
    notified_at: Timestamp | None
    acknowledged_by: str | None
    resolved_by: str | None
    resolved_at: Timestamp | None


# ---- profiles ------------------------------------------------------------------------------


class DeveloperCertificateOut(_Out):
    """A certificate the profile lets sign code."""

    subject: str
    common_name: str | None
    serial: str
    not_after: Timestamp
    sha256: str


class SignatureOut(_Out):
    """The verdict on the profile's signature and signer chain."""

    valid: bool
    chain_trusted: bool
    signer: str | None
    signed_at: Timestamp | None
    reason: str | None


class ProfileOut(BaseModel):
    """A library profile: its own description (what ``profiles inspect --json`` prints) and
    when it was added."""

    model_config = ConfigDict(extra="allow")  # a description kept by a later version

    uuid: str
    name: str
    app_id_name: str
    app_id: str
    team_id: str
    team_name: str
    platforms: list[str]
    kind: str
    created_at: Timestamp
    expires_at: Timestamp
    provisions_all_devices: bool
    provisioned_devices: list[str]
    developer_certificates: list[DeveloperCertificateOut]
    signature: SignatureOut
    sha256: str
    added_at: Timestamp


class HeldBy(_Out):
    """How many devices hold a profile, and the first of them."""

    devices: int
    sample: list[str]


class RenewalRef(_Out):
    """A renewal rollout: its id, state and the profile it installs."""

    rollout: int
    state: str
    profile: str | None


class ProfileDetail(ProfileOut):
    """A library profile with who holds it and the renewal rollouts that replace it."""

    held_by: HeldBy
    renewals: list[RenewalRef]


class CalendarEntry(_Out):
    """A profile devices hold: its expiry, days left, holders, latest renewal rollout."""

    profile: str
    name: str | None
    app_id: str | None
    expires_at: Timestamp
    days_left: int
    devices: int
    renewal: RenewalRef | None


# ---- devices -------------------------------------------------------------------------------


class DeviceOut(_Out):
    """A device in the registry, never its push token, push magic or identity."""

    id: int
    enrollment_id: str = Field(description="The UDID, or a User Enrollment's EnrollmentID.")
    udid: str | None
    enrollment_type: str
    state: str = Field(description="Its enrollment: imported, authenticated, enrolled, ...")
    token: str = Field(description="Its push token: missing, active or dead.")
    platform: str | None
    os_version: str | None
    model: str | None
    product_name: str | None
    serial_number: str | None
    device_name: str | None
    tags: list[str]
    access_rights: int | None
    identity_bound: bool = Field(description="Whether an identity certificate is bound to it.")
    last_seen_at: Timestamp | None


class DevicePage(_Out):
    """A page of devices in id order; ``next`` is the ``after`` of the next page."""

    items: list[DeviceOut]
    next: int | None


class HeldProfile(_Out):
    """A profile the device is known to hold: where that fact came from, and when."""

    uuid: str
    name: str | None
    expires_at: Timestamp | None
    source: str
    seen_at: Timestamp


class DeviceTargetOut(_Out):
    """The device's target in one rollout."""

    rollout: int
    rollout_name: str
    rollout_state: str
    profile: str | None
    target: int
    stage: int
    state: str
    reason: str | None
    pushes: int
    notnow: int
    error_chain: list[dict[str, Any]] | None
    updated_at: Timestamp
    finished_at: Timestamp | None


class DeviceDetail(DeviceOut):
    """A device with its enrollment and token history, the profiles it holds and its targets
    across rollouts (newest first)."""

    enrolled_at: Timestamp | None
    checked_out_at: Timestamp | None
    token_dead_at: Timestamp | None
    profiles: list[HeldProfile]
    targets: list[DeviceTargetOut]


def _words(what: str) -> dict[str, Any]:
    return {
        "description": f"{what}: a list, or one comma-separated string",
        "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
    }


_DURATION = {
    "description": "seconds, or a number with s, m, h, d or w (90, 15m, 4h, 3d)",
    "oneOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
}
_GATE: dict[str, Any] = {
    "type": "object",
    "description": "What a stage must show before the next one starts.",
    "additionalProperties": False,
    "properties": {
        "min_success_rate": {
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": 1,
            "description": "acknowledged / (acknowledged + failed)",
        },
        "max_failures": {"type": ["integer", "null"], "minimum": 0},
        "min_final_share": {"type": "number", "minimum": 0, "maximum": 1},
        "soak": _DURATION,
        "manual": {"type": "boolean", "description": "wait for an operator's approve"},
    },
}
_STAGE: dict[str, Any] = {
    "description": "A cumulative share (25%) or a cumulative device count (200).",
    "oneOf": [{"type": "string"}, {"type": "integer", "minimum": 1}],
}
SPEC_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "title": "RolloutSpec",
                "description": "What to send, to whom, in which stages, behind which gates, "
                "and when (rollout.spec.spec_from_mapping reads it; unknown keys are refused).",
                "additionalProperties": False,
                "properties": {
                    "profile": {
                        "type": "string",
                        "description": "a profile UUID (or a unique start of one); not needed "
                        "for command list",
                    },
                    "command": {"enum": ["install", "list", "remove"], "default": "install"},
                    "name": {"type": "string"},
                    "targets": {
                        "type": "object",
                        "additionalProperties": False,
                        "description": "Every given criterion must hold; or all.",
                        "properties": {
                            "devices": _words("UDIDs or EnrollmentIDs"),
                            "holders_of": {"type": "string", "description": "a profile UUID"},
                            "tags": _words("tags"),
                            "platforms": _words("platforms"),
                            "all": {"type": "boolean"},
                        },
                    },
                    "stages": {
                        "description": "Cumulative reach of each stage; the last reaches 100%.",
                        "oneOf": [
                            {"type": "string", "description": "1%,5%,25%,100%"},
                            {
                                "type": "array",
                                "maxItems": 20,
                                "items": {
                                    "oneOf": [
                                        _STAGE,
                                        {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {"stage": _STAGE, "gate": _GATE},
                                        },
                                    ]
                                },
                            },
                        ],
                    },
                    "gate": _GATE,
                    "rate_limit": {
                        "description": "pushes per second",
                        "oneOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}],
                    },
                    "start_at": {"type": "string", "format": "date-time"},
                    "deadline": {"type": "string", "format": "date-time"},
                    "window": {
                        "type": "string",
                        "description": "when promotions may happen: Mon-Fri 09:00-17:00 "
                        "Europe/Berlin",
                    },
                    "command_ttl": _DURATION,
                    "verify": {"type": "boolean"},
                    "cleanup": {
                        "type": "string",
                        "description": "the superseded profile's UUID, removed once the new "
                        "one is seen",
                    },
                },
            }
        }
    },
}
"""The body of ``POST /api/v1/rollouts`` and ``/plan``, for the OpenAPI document (the routes
read the body themselves, with a size cap)."""
