"""Who may use the operator API, and for what: bearer tokens with a role.

Roles, each allowing what the one before it does:

* ``viewer`` reads: rollouts, profiles, alerts;
* ``operator`` also drives rollouts (create, the controls) and acknowledges or resolves alerts;
* ``admin`` also manages what the product holds (profiles, tokens).

``rollout tokens create --role R --name N`` prints a token once; the ledger keeps only its
hash (HMAC-SHA256 under ``ROLLOUT_TOKEN_PEPPER`` when one is set, so a copy of the ledger alone
does not let anyone check guesses). ``ROLLOUT_API_TOKEN``, when set, is one more token with the
admin role (for a first deployment, before any token exists). A token's last use is recorded,
at most once a minute.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from rollout.ledger import Event, Ledger, TokenInfo

TOKEN_PREFIX = "rlt_"
NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
TOUCH_EVERY = dt.timedelta(minutes=1)


class Role(enum.IntEnum):
    """What a token may do; a higher role may do all a lower one may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def named(cls, name: str) -> Role:
        """The role called ``name`` (``ValueError`` naming the roles otherwise)."""
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(
                f"{name!r} is not a role (use {', '.join(r.name.lower() for r in cls)})"
            ) from None


class AccessError(ValueError):
    """A token operation is not possible as asked (one line)."""


@dataclass(frozen=True)
class Principal:
    """Who called: the token's name (``bootstrap`` for ``ROLLOUT_API_TOKEN``) and role."""

    name: str
    role: Role


def token_hash(token: str, pepper: str = "") -> str:
    """What the ledger keeps of a token."""
    data = token.encode("utf-8", "replace")
    if pepper:
        return hmac.new(pepper.encode(), data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def issue(
    ledger: Ledger, name: str, role: Role, *, actor: str, now: dt.datetime, pepper: str = ""
) -> tuple[str, TokenInfo]:
    """A new token (shown once, here) and its record; :class:`AccessError` for a bad or taken
    name."""
    if not NAME.fullmatch(name):
        raise AccessError("a token's name is 1 to 64 letters, digits or . _ @ + -")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with ledger.access() as store:
        try:
            info = store.add_token(name, role.name.lower(), token_hash(token, pepper), actor, now)
        except ValueError as exc:
            raise AccessError(str(exc)) from None
        store.record([Event("token.created", {"name": name, "role": info.role, "by": actor})], now)
    return token, info


def revoke(ledger: Ledger, key: str | int, *, actor: str, now: dt.datetime) -> TokenInfo:
    """Revoke the token named (or numbered) ``key``; an ``int`` is only ever its number."""
    with ledger.access() as store:
        found = [
            t
            for t in store.tokens()
            if (t.id == key if isinstance(key, int) else t.name == key or str(t.id) == key)
        ]
        if not found:
            raise AccessError(f"no token {key}")
        token = found[0]
        if token.revoked_at is not None:
            raise AccessError(f"token {token.name} is already revoked")
        store.revoke(token.id, now)
        store.record([Event("token.revoked", {"name": token.name, "by": actor})], now)
    return token


def authenticate(
    ledger: Ledger,
    presented: str,
    *,
    now: dt.datetime,
    bootstrap: str = "",
    pepper: str = "",
) -> Principal | None:
    """Who holds ``presented``, or None for an unknown or revoked token."""
    if not presented:
        return None
    if bootstrap and hmac.compare_digest(presented.encode("utf-8", "replace"), bootstrap.encode()):
        return Principal("bootstrap", Role.ADMIN)
    digest = token_hash(presented, pepper)
    with ledger.access() as store:
        token = store.by_hash(digest)
        if token is None or token.revoked_at is not None:
            return None
        if token.last_used_at is None or now - token.last_used_at >= TOUCH_EVERY:
            store.touch(token.id, now)
    return Principal(token.name, Role.named(token.role))


def configured(ledger: Ledger, bootstrap: str = "") -> bool:
    """Whether any token can open the API at all."""
    if bootstrap:
        return True
    with ledger.access() as store:
        return store.live_tokens() > 0
