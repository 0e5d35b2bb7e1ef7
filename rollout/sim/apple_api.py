"""A stand-in for Apple's provisioning APIs (App Store Connect API / Enterprise Program API).

It serves, over real HTTP, the endpoints rollout's Apple profile source uses, in the shapes
Apple documents (resources and errors: :mod:`rollout.sim.apple_api_resources`):

* ``GET /v1/bundleIds``, ``GET /v1/bundleIds/{id}/profiles``, ``GET /v1/profiles``,
  ``GET /v1/profiles/{id}``, ``POST /v1/profiles`` (201 with a ``Location``),
  ``GET /v1/certificates``, ``GET /v1/devices``, each taking the query parameters Apple lists
  for it and no other (400 ``PARAMETER_ERROR.ILLEGAL``). Filters take comma-separated values;
  ``identifier``, ``name`` and ``displayName`` filters also match part of a value (Apple's
  pages do not say how they match; users report partial matches), so a client has to compare
  the answer exactly. Lists are paged: ``limit`` (1 to
  200, default 20) and ``links.next``.
* Every request needs ``Authorization: Bearer <JWT>`` that passes Apple's documented checks
  (:mod:`rollout.sim.apple_api_token`), judged by the clock the stand-in is given; anything else
  is 401 ``NOT_AUTHORIZED``, its reason kept in :attr:`AppleApiStandIn.auth_failures`.
* A created profile is a real signed ``.mobileprovision`` (:func:`make_profile` with the given
  test chain) listing the requested certificates and devices; it lives ``profile_days``, or
  until its first certificate expires. A name already in use is refused with 409. Every answer
  carries ``X-Rate-Limit``. ``page_size`` makes pages shorter than asked (to test paging).

Scripting and assertions, from any thread::

    standin = AppleApiStandIn(chain=chain, clock=clock, key_id=key.key_id,
                              issuer_id=key.issuer_id, public_key=key.public_key())
    bundle = standin.add_bundle_id("com.example.app")
    standin.fail_next(429, retry_after="7")      # the next authorized request
    with standin.serve() as base_url:
        ...
    standin.requests                              # method, path, query, body, status
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rollout.clock import Clock
from rollout.sim.apple_api_resources import (
    PROFILE_TYPES,
    ApiRefusal,
    Resource,
    SimBundleId,
    SimCertificate,
    SimDevice,
    SimProfile,
    bad_parameter,
    conflict,
    device_scoped,
    matches,
    not_authorized,
    not_found,
    profile_shape,
    resource_document,
    scripted_failure,
)
from rollout.sim.apple_api_token import bearer_problem
from rollout.sim.profiles import AppleLikeChain, make_profile

ApiName = Literal["app-store-connect", "enterprise"]
AUDIENCES = {
    "app-store-connect": "appstoreconnect-v1",
    "enterprise": "apple-developer-enterprise-v1",
}
MAX_LIMIT = 200
DEFAULT_LIMIT = 20
RATE_LIMIT_HEADER = "user-hour-lim:3500;user-hour-rem:3499;"

Answer = tuple[int, dict[str, Any], dict[str, str] | None]


@dataclass(frozen=True)
class SeenRequest:
    """One request as the stand-in saw it (``authorization``: whether the header came)."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes
    authorization: bool
    status: int


@dataclass(frozen=True)
class _ListSpec:
    """A list endpoint: its store, the parameters Apple lists, and its filters."""

    store: str
    parameters: tuple[str, ...]
    filters: dict[str, tuple[str, bool]]  # query parameter -> (attribute, partial match)


_COMMON = ("limit", "sort", "include")
_LISTS = {
    "/v1/bundleIds": _ListSpec(
        "bundle_ids",
        (
            *_COMMON,
            "fields[bundleIds]",
            "fields[bundleIdCapabilities]",
            "fields[profiles]",
            "limit[bundleIdCapabilities]",
            "limit[profiles]",
        ),
        {
            "filter[id]": ("id", False),
            "filter[identifier]": ("identifier", True),
            "filter[name]": ("name", True),
            "filter[platform]": ("platform", False),
            "filter[seedId]": ("seed_id", False),
        },
    ),
    "/v1/profiles": _ListSpec(
        "profiles",
        (
            *_COMMON,
            "fields[profiles]",
            "fields[bundleIds]",
            "fields[certificates]",
            "fields[devices]",
            "limit[certificates]",
            "limit[devices]",
        ),
        {
            "filter[id]": ("id", False),
            "filter[name]": ("name", True),
            "filter[profileState]": ("state", False),
            "filter[profileType]": ("profile_type", False),
        },
    ),
    "/v1/certificates": _ListSpec(
        "certificates",
        (*_COMMON, "fields[certificates]", "fields[passTypeIds]"),
        {
            "filter[id]": ("id", False),
            "filter[serialNumber]": ("serial_number", False),
            "filter[certificateType]": ("certificate_type", False),
            "filter[displayName]": ("display_name", True),
        },
    ),
    "/v1/devices": _ListSpec(
        "devices",
        ("limit", "sort", "fields[devices]"),
        {
            "filter[id]": ("id", False),
            "filter[udid]": ("udid", False),
            "filter[name]": ("name", True),
            "filter[platform]": ("platform", False),
            "filter[status]": ("status", False),
        },
    ),
}


@dataclass
class _Scripted:
    status: int
    remaining: int
    retry_after: str | None
    method: str | None


class AppleApiStandIn:
    """In-memory bundle IDs, certificates, devices and profiles behind Apple's API shapes."""

    def __init__(
        self,
        *,
        chain: AppleLikeChain,
        clock: Clock,
        key_id: str,
        issuer_id: str,
        public_key: ec.EllipticCurvePublicKey,
        api: ApiName = "enterprise",
        team_id: str = "ABCDE12345",
        team_name: str = "Example Corp",
        profile_days: int = 365,
        page_size: int = MAX_LIMIT,
    ) -> None:
        self.chain = chain
        self.clock = clock
        self.key_id = key_id
        self.issuer_id = issuer_id
        self.public_key = public_key
        self.audience = AUDIENCES[api]
        self.team_id = team_id
        self.team_name = team_name
        self.profile_days = profile_days
        self.page_size = page_size
        self.bundle_ids: dict[str, SimBundleId] = {}
        self.certificates: dict[str, SimCertificate] = {}
        self.devices: dict[str, SimDevice] = {}
        self.profiles: dict[str, SimProfile] = {}
        self.requests: list[SeenRequest] = []
        self.auth_failures: list[str] = []
        self._script: list[_Scripted] = []
        self._lock = threading.RLock()
        self._serial = 0
        routes = [
            Route(path, self._lister(path, spec), methods=["GET"]) for path, spec in _LISTS.items()
        ]
        routes += [
            Route("/v1/bundleIds/{id}/profiles", self._bundle_profiles, methods=["GET"]),
            Route("/v1/profiles", self._create_profile, methods=["POST"]),
            Route("/v1/profiles/{id}", self._read_profile, methods=["GET"]),
        ]
        self.app = Starlette(routes=routes)

    # --- scripting ----------------------------------------------------------------------------

    def _new_id(self) -> str:
        with self._lock:
            self._serial += 1
            return f"{uuid_mod.uuid4().hex[:6].upper()}{self._serial:04d}"

    def add_bundle_id(
        self,
        identifier: str,
        *,
        platform: str = "IOS",
        name: str | None = None,
        seed_id: str | None = None,
    ) -> str:
        """Register a bundle ID (``seed_id`` defaults to the team); its resource ID."""
        resource = SimBundleId(
            self._new_id(), identifier, name or identifier, platform, seed_id or self.team_id
        )
        with self._lock:
            self.bundle_ids[resource.id] = resource
        return resource.id

    def add_certificate(
        self,
        cert: x509.Certificate,
        *,
        certificate_type: str = "DISTRIBUTION",
        expires_at: dt.datetime | None = None,
    ) -> str:
        """Hold a signing certificate (expiring with the certificate by default); its ID."""
        common = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        name = str(common[0].value) if common else "certificate"
        resource = SimCertificate(
            id=self._new_id(),
            serial_number=format(cert.serial_number, "X"),
            certificate_type=certificate_type,
            name=name,
            display_name=name.split(": ", 1)[-1],
            expires_at=expires_at or cert.not_valid_after_utc,
            content=cert.public_bytes(Encoding.DER),
        )
        with self._lock:
            self.certificates[resource.id] = resource
        return resource.id

    def add_device(
        self, udid: str, *, platform: str = "IOS", status: str = "ENABLED", name: str | None = None
    ) -> str:
        """Register a device; its resource ID."""
        resource = SimDevice(
            self._new_id(), udid, name or f"Device {udid[-4:]}", platform, status, self.clock.now()
        )
        with self._lock:
            self.devices[resource.id] = resource
        return resource.id

    def add_profile(
        self,
        bundle: str,
        *,
        name: str,
        expires_at: dt.datetime,
        profile_type: str = "IOS_APP_INHOUSE",
        state: str = "ACTIVE",
        created_at: dt.datetime | None = None,
        certificates: Sequence[str] = (),
        devices: Sequence[str] = (),
        team_id: str | None = None,
        bundle_identifier: str | None = None,
    ) -> str:
        """A profile that exists already; its resource ID.

        ``team_id`` and ``bundle_identifier`` change only what its *file* says (a profile that
        does not match its listing); they default to the stand-in's team and the bundle ID's.
        """
        with self._lock:
            profile = self._make_profile(
                bundle,
                name=name,
                profile_type=profile_type,
                certificates=list(certificates),
                devices=list(devices),
                created_at=created_at or expires_at - dt.timedelta(days=self.profile_days),
                expires_at=expires_at,
                team_id=team_id,
                bundle_identifier=bundle_identifier,
            )
            profile.state = state
            return profile.id

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``count`` authorized requests (only ``method`` ones, when given)
        with ``status`` (429 or 5xx) and, when given, ``Retry-After``."""
        with self._lock:
            self._script.append(_Scripted(status, count, retry_after, method))

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on 127.0.0.1 (a free port) in a background thread; yields the base URL."""
        with serve_in_thread(self.app) as base_url:
            yield base_url

    # --- every request ------------------------------------------------------------------------

    async def _handle(
        self,
        request: Request,
        parameters: Sequence[str],
        answer: Callable[[Request, bytes], Answer],
    ) -> Response:
        body = await request.body()
        response: Response
        try:
            self._authorize(request.headers.get("authorization"))
            scripted = self._next_scripted(request.method)
            if scripted is not None:
                response = scripted
            else:
                _check_parameters(request, parameters)
                with self._lock:
                    status, document, headers = answer(request, body)
                response = JSONResponse(document, status_code=status, headers=headers)
        except ApiRefusal as refusal:
            response = JSONResponse(refusal.body, status_code=refusal.status)
        response.headers["X-Rate-Limit"] = RATE_LIMIT_HEADER
        seen = SeenRequest(
            request.method,
            request.url.path,
            dict(request.query_params),
            body,
            "authorization" in request.headers,
            response.status_code,
        )
        with self._lock:
            self.requests.append(seen)
        return response

    def _authorize(self, header: str | None) -> None:
        reason = bearer_problem(
            header,
            key_id=self.key_id,
            issuer_id=self.issuer_id,
            audience=self.audience,
            public_key=self.public_key,
            now=self.clock.now(),
        )
        if reason is not None:
            with self._lock:
                self.auth_failures.append(reason)
            raise not_authorized()

    def _next_scripted(self, method: str) -> Response | None:
        with self._lock:
            self._script = [step for step in self._script if step.remaining > 0]
            step = next((s for s in self._script if s.method in (None, method)), None)
            if step is None:
                return None
            step.remaining -= 1
        refusal = scripted_failure(step.status)
        headers = {"Retry-After": step.retry_after} if step.retry_after is not None else None
        return JSONResponse(refusal.body, status_code=step.status, headers=headers)

    # --- reading ------------------------------------------------------------------------------

    def _lister(self, path: str, spec: _ListSpec) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            def answer(req: Request, _body: bytes) -> Answer:
                query = req.query_params
                store: dict[str, Resource] = getattr(self, spec.store)
                found = [
                    r
                    for r in store.values()
                    if all(
                        matches(query.get(param), str(getattr(r, attr)), partial=partial)
                        for param, (attr, partial) in spec.filters.items()
                    )
                ]
                return _page(req, found, self.page_size)

            parameters = (*spec.parameters, *spec.filters, "cursor")
            return await self._handle(request, parameters, answer)

        endpoint.__name__ = f"list_{spec.store}"
        return endpoint

    async def _bundle_profiles(self, request: Request) -> Response:
        def answer(req: Request, _body: bytes) -> Answer:
            bundle = req.path_params["id"]
            if bundle not in self.bundle_ids:
                raise not_found("bundleIds", bundle)
            found = [p for p in self.profiles.values() if p.bundle == bundle]
            return _page(req, found, self.page_size)

        return await self._handle(request, ("fields[profiles]", "limit", "cursor"), answer)

    async def _read_profile(self, request: Request) -> Response:
        def answer(req: Request, _body: bytes) -> Answer:
            profile = self.profiles.get(req.path_params["id"])
            if profile is None:
                raise not_found("profiles", req.path_params["id"])
            document = resource_document(_origin(req), profile, req.query_params.get(_fields(req)))
            return 200, {"data": document, "links": {"self": str(req.url)}}, None

        parameters = ("fields[profiles]", "fields[bundleIds]", "fields[certificates]")
        return await self._handle(request, (*parameters, "fields[devices]", "include"), answer)

    # --- creating a profile -------------------------------------------------------------------

    async def _create_profile(self, request: Request) -> Response:
        def answer(req: Request, body: bytes) -> Answer:
            if not req.headers.get("content-type", "").startswith("application/json"):
                raise ApiRefusal(
                    415, "ENTITY_ERROR", "The request entity is not supported.", "Send JSON."
                )
            name, profile_type, bundle, certificates, devices = self._create_request(body)
            now = self.clock.now()
            ends = [now + dt.timedelta(days=self.profile_days)]
            ends += [self.certificates[c].expires_at for c in certificates]
            profile = self._make_profile(
                bundle,
                name=name,
                profile_type=profile_type,
                certificates=certificates,
                devices=devices,
                created_at=now,
                expires_at=min(ends),
            )
            document = resource_document(_origin(req), profile, None)
            location = document["links"]["self"]
            return 201, {"data": document, "links": {"self": location}}, {"Location": location}

        return await self._handle(request, (), answer)

    def _create_request(self, body: bytes) -> tuple[str, str, str, list[str], list[str]]:
        """A ``ProfileCreateRequest`` checked against its documented shape and the store."""
        try:
            document = json.loads(body)
        except ValueError:
            raise ApiRefusal(
                422, "ENTITY_UNPROCESSABLE", "The request entity is not valid JSON.", "Bad JSON."
            ) from None
        data = _dict(_dict(document).get("data"))
        if data.get("type") != "profiles":
            raise conflict("The resource type must be 'profiles'.", "/data/type")
        attributes = _dict(data.get("attributes"))
        name, profile_type = attributes.get("name"), attributes.get("profileType")
        if not isinstance(name, str) or not name.strip():
            raise conflict("A profile name is required.", "/data/attributes/name")
        if not isinstance(profile_type, str) or profile_type not in PROFILE_TYPES:
            raise conflict(
                f"'{profile_type}' is not a profile type.", "/data/attributes/profileType"
            )
        if any(p.name == name for p in self.profiles.values()):
            raise conflict(
                f"Multiple profiles found with the name '{name}'.", "/data/attributes/name"
            )
        relationships = _dict(data.get("relationships"))
        bundle = _linkage(relationships, "bundleId", "bundleIds", many=False)
        if not bundle or bundle[0] not in self.bundle_ids:
            raise conflict("A registered bundle ID is required.", "/data/relationships/bundleId")
        certificates = _linkage(relationships, "certificates", "certificates", many=True)
        now = self.clock.now()
        if not certificates or any(
            c not in self.certificates or self.certificates[c].expires_at <= now
            for c in certificates
        ):
            raise conflict("Valid certificates are required.", "/data/relationships/certificates")
        devices = _linkage(relationships, "devices", "devices", many=True)
        if device_scoped(profile_type) and not devices:
            raise conflict("This profile type needs devices.", "/data/relationships/devices")
        if any(d not in self.devices or self.devices[d].status != "ENABLED" for d in devices):
            raise conflict("Only enabled devices can be added.", "/data/relationships/devices")
        return name, profile_type, bundle[0], certificates, devices

    def _make_profile(
        self,
        bundle: str,
        *,
        name: str,
        profile_type: str,
        certificates: list[str],
        devices: list[str],
        created_at: dt.datetime,
        expires_at: dt.datetime,
        team_id: str | None = None,
        bundle_identifier: str | None = None,
    ) -> SimProfile:
        kind, platforms, api_platform = profile_shape(profile_type)
        profile_uuid = str(uuid_mod.uuid4())
        extra: dict[str, Any] = {}
        if certificates:
            extra["DeveloperCertificates"] = [self.certificates[c].content for c in certificates]
        content = make_profile(
            self.chain,
            kind=kind,
            name=name,
            uuid=profile_uuid,
            team_id=team_id or self.team_id,
            team_name=self.team_name,
            bundle_id=bundle_identifier or self.bundle_ids[bundle].identifier,
            platforms=platforms,
            devices=[self.devices[d].udid for d in devices],
            created_at=created_at,
            expires_at=expires_at,
            signing_time=created_at,
            extra_keys=extra,
        )
        profile = SimProfile(
            id=self._new_id(),
            name=name,
            profile_type=profile_type,
            state="ACTIVE",
            bundle=bundle,
            uuid=profile_uuid,
            created_at=created_at,
            expires_at=expires_at,
            content=content,
            platform=api_platform,
            certificates=list(certificates),
            devices=list(devices),
        )
        self.profiles[profile.id] = profile
        return profile


# --- helpers ----------------------------------------------------------------------------------


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _fields(request: Request) -> str:
    """The sparse-fieldset parameter of the resource a path lists."""
    kind = request.url.path.rstrip("/").split("/")[-1]
    if kind not in ("bundleIds", "profiles", "certificates", "devices"):
        kind = request.url.path.split("/")[2]
    return f"fields[{kind}]"


def _page(request: Request, resources: Sequence[Resource], page_size: int) -> Answer:
    """One page of a list (``limit``, at most ``page_size``; ``cursor``), with ``links.next``
    when more follow."""
    limit = min(page_size, int(request.query_params.get("limit") or DEFAULT_LIMIT))
    cursor = request.query_params.get("cursor", "0")
    start = int(cursor) if cursor.isdigit() else 0
    fields = request.query_params.get(_fields(request))
    links = {"self": str(request.url)}
    if start + limit < len(resources):
        query = {k: v for k, v in request.query_params.items() if k != "cursor"}
        query["cursor"] = str(start + limit)
        links["next"] = f"{_origin(request)}{request.url.path}?{urlencode(query)}"
    document = {
        "data": [resource_document(_origin(request), r, fields) for r in resources[start:][:limit]],
        "links": links,
        "meta": {"paging": {"total": len(resources), "limit": limit}},
    }
    return 200, document, None


def _check_parameters(request: Request, parameters: Sequence[str]) -> None:
    for name in request.query_params:
        if name not in parameters:
            raise bad_parameter(
                name, f"The parameter '{name}' can not be used with this request", illegal=True
            )
    limit = request.query_params.get("limit")
    if limit is not None and (not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT):
        raise bad_parameter("limit", f"'{limit}' is not 1 to {MAX_LIMIT}", illegal=False)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _linkage(relationships: dict[str, Any], name: str, kind: str, *, many: bool) -> list[str]:
    """The resource IDs a relationship's ``data`` names (one linkage, or a list of them)."""
    data = _dict(relationships.get(name)).get("data")
    items: list[Any] = []
    if many and isinstance(data, list):
        items = data
    elif not many and data is not None:
        items = [data]
    ids = []
    for item in items:
        if not isinstance(item, dict) or item.get("type") != kind or not item.get("id"):
            raise conflict(f"'{name}' needs {kind} linkages.", f"/data/relationships/{name}")
        ids.append(str(item["id"]))
    return ids


@contextlib.contextmanager
def serve_in_thread(app: Any, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a daemon thread; yields its URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="apple-api-standin", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError("the Apple API stand-in did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
