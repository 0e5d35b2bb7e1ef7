"""Who may use the operator API, and the JSON bodies it takes (HTTP only).

Every route asks for ``Authorization: Bearer <token>`` and a role (``rollout.access``): reads
need a viewer, rollout controls and alert acknowledgements an operator. Without any token
(none created, ``ROLLOUT_API_TOKEN`` unset) the API answers 403: it is off. An unknown or
revoked token is 401; a token whose role is too low, 403. The actor recorded in the ledger's
events is ``api:<token name>``; the bootstrap token (``ROLLOUT_API_TOKEN``) records ``api``, or
``api:<name>`` when the caller names itself in ``X-Rollout-Actor``. With OIDC on
(``ROLLOUT_OIDC_ISSUER``, :mod:`rollout.oidc`), a bearer token shaped like a JWT is checked
against the identity provider instead: a bad one is 401, one whose role claim maps to no role
403, and 503 while the provider's keys cannot be fetched (product tokens keep working); its
actor is ``oidc:<name>``. Bodies are read with a size cap and must be one JSON object.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from typing import Any

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel

from rollout.access import Principal, Role, authenticate, configured
from rollout.clock import Clock
from rollout.ledger import Ledger
from rollout.oidc import PREFIX as OIDC_PREFIX
from rollout.oidc import (
    RETRY_AFTER_FAILURE_S,
    KeysUnavailable,
    NoRole,
    OidcError,
    Verifier,
    looks_like_jwt,
)


class ErrorBody(BaseModel):
    """Every refusal of the API: one line saying what is wrong."""

    detail: str


BEARER = Security(
    HTTPBearer(
        auto_error=False,
        scheme_name="token",
        description="An API token (rollout tokens create); its role decides what it may do.",
    )
)
"""Declares the bearer scheme in the OpenAPI document; :meth:`Access.require` checks it."""
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "X-Rollout-Actor (bootstrap token only) is not 1 to 64 letters, digits "
        "or . _ @ + -.",
    },
    401: {"model": ErrorBody, "description": "No token, or an unknown or revoked one."},
    403: {"model": ErrorBody, "description": "The API is off, or the token's role is too low."},
    503: {
        "model": ErrorBody,
        "description": "OIDC is on and the identity provider's keys cannot be fetched now.",
    },
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such thing."}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "Its state does not allow this."}
}
BAD_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not one JSON object."},
    413: {"model": ErrorBody, "description": "The body is over the cap."},
}
MAX_BODY_BYTES = 8 * 1024 * 1024  # a spec listing 100,000 UDIDs is about 4.5 MB
ACTOR_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")


class Access:
    """The API's door: checks a request's bearer token and role; the actor to record."""

    def __init__(
        self,
        ledger: Ledger,
        clock: Clock,
        *,
        bootstrap: str = "",
        pepper: str = "",
        oidc: Verifier | None = None,
    ):
        self.ledger = ledger
        self.clock = clock
        self.bootstrap = bootstrap
        self.pepper = pepper
        self.oidc = oidc

    def role_of(self, request: Request) -> Role:
        """The role of the request's token (call after :meth:`require` let it in)."""
        principal = getattr(request.state, "principal", None) or self._principal(request)
        assert isinstance(principal, Principal)
        return principal.role

    def _principal(self, request: Request) -> Principal | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        if self.oidc is not None and looks_like_jwt(given.strip()):
            is_bootstrap = bool(self.bootstrap) and hmac.compare_digest(
                given.strip().encode("utf-8", "replace"), self.bootstrap.encode()
            )
            if not is_bootstrap:
                return self._oidc_principal(self.oidc, given.strip())
        return authenticate(
            self.ledger,
            given.strip(),
            now=self.clock.now(),
            bootstrap=self.bootstrap,
            pepper=self.pepper,
        )

    @staticmethod
    def _oidc_principal(oidc: Verifier, token: str) -> Principal:
        try:
            return oidc.principal(token)
        except KeysUnavailable as exc:
            raise HTTPException(
                status_code=503,
                detail=f"OIDC sign-in is unavailable: {exc}; try again, or use an API token",
                headers={"Retry-After": str(math.ceil(RETRY_AFTER_FAILURE_S))},
            ) from None
        except NoRole as exc:
            raise HTTPException(status_code=403, detail=str(exc)) from None
        except OidcError as exc:
            raise HTTPException(
                status_code=401,
                detail=f"the OIDC token is refused: {exc}",
                headers={"WWW-Authenticate": "Bearer"},
            ) from None

    def require(self, request: Request, need: Role) -> str:
        """The actor of ``request`` once its token holds ``need`` (blocking: it may read the
        ledger or fetch the identity provider's keys); else 403 (API off, or role too low),
        401, or 503 (OIDC keys unavailable)."""
        principal = self._principal(request)
        if principal is None:
            if self.oidc is None and not configured(self.ledger, self.bootstrap):
                raise HTTPException(
                    status_code=403,
                    detail="the operator API is off: create a token (rollout tokens create) "
                    "or set ROLLOUT_API_TOKEN",
                )
            raise HTTPException(
                status_code=401,
                detail="a valid bearer token is needed (Authorization: Bearer ...)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if principal.role < need:
            raise HTTPException(
                status_code=403,
                detail=f"token {principal.name} is a {principal.role.name.lower()}; "
                f"this needs {need.name.lower()}",
            )
        request.state.principal = principal
        if principal.name.startswith(OIDC_PREFIX):  # product token names hold no ":"
            return principal.name
        if principal.name != "bootstrap":
            return f"api:{principal.name}"
        name = request.headers.get("x-rollout-actor", "").strip()
        if not name:
            return "api"
        if not ACTOR_NAME.fullmatch(name):
            raise HTTPException(
                status_code=400,
                detail="X-Rollout-Actor: 1 to 64 letters, digits or . _ @ + -",
            )
        return f"api:{name}"


async def json_object(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The request's body as one JSON object (``{}`` for an empty body when not
    ``required``); 413 past :data:`MAX_BODY_BYTES`, 400 when it is not a JSON object."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(status_code=413, detail=f"body over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(status_code=413, detail=f"body over {MAX_BODY_BYTES} bytes")
    if not body.strip():
        if required:
            raise HTTPException(status_code=400, detail="the body must be a JSON object")
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8 and integers too long to convert
        raise HTTPException(
            status_code=400, detail=f"the body is not JSON ({_short(exc)})"
        ) from None
    if not isinstance(data, dict):
        raise HTTPException(status_code=400, detail="the body must be a JSON object")
    return data


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
