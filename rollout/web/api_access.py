"""Who may write through the operator API, and the JSON bodies it takes (HTTP only).

Write routes ask for ``Authorization: Bearer <ROLLOUT_API_TOKEN>``; without a configured token
they are off. The actor recorded in the ledger's events is ``api``, or ``api:<name>`` when the
caller names itself in ``X-Rollout-Actor`` (a label for the journal: the token is what grants
access). Bodies are read with a size cap and must be one JSON object.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

from fastapi import HTTPException, Request

MAX_BODY_BYTES = 8 * 1024 * 1024  # a spec listing 100,000 UDIDs is about 4.5 MB
ACTOR_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")


def writer(request: Request, token: str) -> str:
    """The actor of a write request, once its bearer token matches ``token``; else 403 (writes
    off) or 401."""
    if not token:
        raise HTTPException(
            status_code=403, detail="the API's write routes are off: set ROLLOUT_API_TOKEN"
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token.encode()
    ):
        raise HTTPException(
            status_code=401,
            detail="a valid bearer token is needed (Authorization: Bearer ...)",
            headers={"WWW-Authenticate": "Bearer"},
        )
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
