"""Fetching the identity provider's keys over HTTP (for :class:`rollout.oidc.KeyStore`).

The key set's URL is ``ROLLOUT_OIDC_JWKS_URL`` when set; otherwise the ``jwks_uri`` of the
provider's discovery document, ``{issuer}/.well-known/openid-configuration``, whose ``issuer``
must be the configured one (OpenID Connect Discovery 1.0, section 4.3). Every URL is https, or
http on the loopback host (tests). No redirect is followed; a document is at most
:data:`MAX_DOCUMENT_BYTES`; every failure is one :class:`~rollout.oidc.FetchError` line.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from rollout.oidc import FetchError, url_problem

DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_DOCUMENT_BYTES = 512 * 1024
TIMEOUT_S = 5.0


class JwksFetcher:
    """Fetches the key set of ``issuer`` (at ``jwks_url``, or where discovery says); call it."""

    def __init__(self, issuer: str, jwks_url: str = "", *, timeout_s: float = TIMEOUT_S) -> None:
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.timeout_s = timeout_s
        self._discovered = ""

    def __call__(self) -> Any:
        """The key set document (parsed JSON); :class:`FetchError` when it cannot be had."""
        url = self.jwks_url or self._discovered
        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            if not url:
                url = self._discover(client)
            try:
                return self._get(client, url, "key set")
            except FetchError:
                self._discovered = ""  # the provider may have moved its keys: ask again
                raise

    def _discover(self, client: httpx.Client) -> str:
        where = self.issuer.rstrip("/") + DISCOVERY_PATH
        document = self._get(client, where, "discovery document")
        if not isinstance(document, dict):
            raise FetchError(f"the discovery document at {where} is not a JSON object")
        if document.get("issuer") != self.issuer:
            raise FetchError(f"the discovery document at {where} names another issuer")
        found = document.get("jwks_uri")
        if not isinstance(found, str) or not found:
            raise FetchError(f"the discovery document at {where} has no jwks_uri")
        problem = url_problem(found)
        if problem is not None:
            raise FetchError(f"the discovery document's jwks_uri {problem}")
        self._discovered = found
        return found

    def _get(self, client: httpx.Client, url: str, what: str) -> Any:
        try:
            with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise FetchError(f"the {what} at {url} answered {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise FetchError(f"the {what} at {url} is over {MAX_DOCUMENT_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise FetchError(f"the {what} at {url}: {type(exc).__name__} {exc}") from None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise FetchError(f"the {what} at {url} is not JSON") from None
