"""The operator API's token routes (admins): list tokens, make one, revoke one.

The same operations as ``rollout tokens list|create|revoke`` (:mod:`rollout.access`): a new
token is shown once, in the answer that makes it; the ledger keeps only its hash.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from rollout import access as tokens
from rollout.access import Role
from rollout.clock import Clock
from rollout.ledger import Ledger, TokenInfo
from rollout.web.api_access import (
    BAD_BODY,
    BEARER,
    CONFLICT,
    NOT_FOUND,
    REFUSALS,
    Access,
    ErrorBody,
    json_object,
)
from rollout.web.api_models import INVALID, NewToken, TokenOut, TokenRequest


def token_json(t: TokenInfo) -> dict[str, Any]:
    """A token as ``rollout tokens list --json`` shows it (never the token itself)."""
    return {
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "created_by": t.created_by,
        "created_at": t.created_at.isoformat(),
        "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
        "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
    }


def tokens_router(ledger: Ledger, clock: Clock, access: Access, *, pepper: str = "") -> APIRouter:
    """``/api/v1/tokens`` for admins (tokens are hashed with ``pepper``)."""
    router = APIRouter(
        prefix="/api/v1/tokens", tags=["access"], dependencies=[BEARER], responses=REFUSALS
    )

    @router.get("", response_model=list[TokenOut])
    def list_(request: Request) -> list[dict[str, Any]]:
        """Every token, oldest first: name, role, who made it, last use, revocation."""
        access.require(request, Role.ADMIN)
        with ledger.access() as store:
            return [token_json(t) for t in store.tokens()]

    @router.post(
        "",
        status_code=201,
        response_model=NewToken,
        responses={
            **BAD_BODY,
            **INVALID,
            409: {"model": ErrorBody, "description": "A token of that name exists already."},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": TokenRequest.model_json_schema()}},
            }
        },
    )
    async def create(request: Request, response: Response) -> dict[str, Any]:
        """Make a token with a ``name`` (who or what holds it; events name it) and a ``role``;
        the answer carries ``token``, shown only this once."""
        actor = await run_in_threadpool(access.require, request, Role.ADMIN)
        body = await json_object(request)
        name, role = body.get("name"), body.get("role")
        unknown = sorted(set(body) - {"name", "role"})
        if unknown or not isinstance(name, str) or not isinstance(role, str):
            raise HTTPException(
                status_code=422, detail='the body is {"name": text, "role": viewer|operator|admin}'
            )
        try:
            wanted = Role.named(role)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=f"role: {exc}") from None
        if not tokens.NAME.fullmatch(name):
            raise HTTPException(
                status_code=422, detail="name: 1 to 64 letters, digits or . _ @ + -"
            )
        try:
            secret, info = await run_in_threadpool(
                lambda: tokens.issue(
                    ledger, name, wanted, actor=actor, now=clock.now(), pepper=pepper
                )
            )
        except tokens.AccessError as exc:  # the name is taken (it was checked above)
            raise HTTPException(status_code=409, detail=str(exc)) from None
        response.headers["Cache-Control"] = "no-store"
        return {**token_json(info), "token": secret}

    @router.delete(
        "/{token_id}", response_model=TokenOut, responses={**NOT_FOUND, **CONFLICT, **INVALID}
    )
    def revoke(request: Request, token_id: int) -> dict[str, Any]:
        """Revoke a token: it opens nothing from now on (409 when it is revoked already)."""
        actor = access.require(request, Role.ADMIN)
        with ledger.access() as store:
            known = any(t.id == token_id for t in store.tokens())
        if not known:
            raise HTTPException(status_code=404, detail=f"no token {token_id}")
        try:
            tokens.revoke(ledger, token_id, actor=actor, now=clock.now())
        except tokens.AccessError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        with ledger.access() as store:
            [revoked] = [t for t in store.tokens() if t.id == token_id]
        return token_json(revoked)

    return router
