"""A NanoMDM stand-in: a real HTTP server speaking the parts of NanoMDM rollout uses, with
devices enrolled in it and its webhook posting to rollout.

Written from NanoMDM's documents (``docs/openapi.yaml``, ``docs/operations-guide.md``, the
webhook's ``event.json``):

* the MDM endpoint devices talk to (``PUT /mdm``, ``/mdm/checkin``, ``/mdm/connect``): check-ins
  register enrollments (an Authenticate clears the enrollment's queue), reports are stored per
  (enrollment, CommandUUID), NotNow'd commands are skipped for the rest of the session and
  offered again after the next Idle;
* the API under HTTP Basic auth (user ``nanomdm``, password the API key): ``PUT
  /v1/enqueue/{ids}`` (a raw command plist; ``nopush=1``), ``GET /v1/push/{ids}``, ``GET`` and
  ``DELETE /v1/queue/{ids}``, answering with the documented JSON and 200 / 207 / 500;
* with ``user="micromdm"``, MicroMDM's API as well (``micromdm`` as the Basic-auth user):
  ``PUT /v1/commands/{udid}`` (a raw command plist, one device per call; 201 with
  ``{"payload": ...}`` or ``{"error": ...}``), ``GET`` / ``DELETE /v1/commands/{udid}`` (the
  ``device_command`` queue view; clearing it), ``GET /push/{udid}`` and the device list,
  ``GET /v1/devices`` with a JSON filter body (``filter_serial``, ``filter_udid``) answering
  ``{"devices": [...]}`` (``udid``, ``serial_number``, ``os_version``, ``product_name``,
  ``model``, ``device_name``, ``enrolled``, ``last_seen``; empty and false fields left out);
* ``GET /version`` without auth (NanoMDM's; its API lists no enrollments);
* the webhook: every check-in and report posted once, inline, as a MicroMDM-style event
  (``topic``, ``event_id``, ``created_at``, ``checkin_event`` / ``acknowledge_event`` with
  ``raw_payload``), no retry, no signature.

Fault switches: :attr:`NanoMDMStandIn.fail_enqueue` (the next N enqueue calls answer 500),
:attr:`drop_webhooks` (the next N command-report events are never posted),
:attr:`duplicate_webhooks` (the next N command-report events are posted twice) and
:meth:`restart` (the port closes, then opens again with the queue as it was, like a server on
persistent storage).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import plistlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rollout.web.server import free_port

CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
OnPush = Callable[[str, Any], None]  # (token hex, APNs payload)


@dataclass
class _Enrollment:
    udid: str
    token_hex: str | None = None
    push_magic: str | None = None
    topic: str | None = None
    checked_out: bool = False
    facts: dict[str, str] = field(default_factory=dict)  # from the Authenticate message
    last_seen: str = ""


@dataclass
class _Queued:
    command_uuid: str
    request_type: str
    body: bytes
    status: str | None = None  # the last report's status (NotNow, or final)
    active: bool = True


@dataclass
class StandInCounts:
    """What the stand-in was asked and what it did."""

    enqueue_calls: int = 0
    push_calls: int = 0
    queue_reads: int = 0
    queue_clears: int = 0
    device_lists: int = 0
    webhooks_posted: int = 0
    webhooks_dropped: int = 0
    reports: int = 0
    pushes: int = 0


@dataclass
class NanoMDMStandIn:
    """Start with :meth:`start`, stop with :meth:`stop`."""

    api_key: str
    webhook_url: str = ""
    on_push: OnPush | None = None
    port: int = field(default_factory=free_port)
    fail_enqueue: int = 0
    drop_webhooks: int = 0
    duplicate_webhooks: int = 0
    dead_tokens: set[str] = field(default_factory=set)  # APNs answers these 410 Unregistered
    any_enrollment: bool = False  # take commands for ids it never saw enroll (benchmarks)
    user: str = "nanomdm"  # the API's Basic-auth user: "micromdm" to stand in for MicroMDM
    device_list_methods: tuple[str, ...] = ("GET",)  # how the device list is routed
    listed_only: list[dict[str, Any]] = field(default_factory=list)  # more list entries (DEP)
    counts: StandInCounts = field(default_factory=StandInCounts)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.enrollments: dict[str, _Enrollment] = {}
        self.queues: dict[str, list[_Queued]] = {}
        self._skip: dict[str, set[str]] = {}  # NotNow'd in the current session
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._hook: httpx.AsyncClient | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NanoMDMStandIn:
        """Serve on 127.0.0.1 in a daemon thread; return once the port accepts."""
        app = Starlette(
            routes=[
                Route("/mdm", self._mdm, methods=["PUT"]),
                Route("/mdm/checkin", self._mdm, methods=["PUT"]),
                Route("/mdm/connect", self._mdm, methods=["PUT"]),
                Route("/v1/enqueue/{ids:path}", self._enqueue, methods=["PUT"]),
                Route("/v1/push/{ids:path}", self._push, methods=["GET"]),
                Route("/v1/queue/{ids:path}", self._queue, methods=["GET", "DELETE"]),
                # MicroMDM's API: one device per call
                Route(
                    "/v1/commands/{udid}",
                    self._micro_commands,
                    methods=["PUT", "POST", "GET", "DELETE"],
                ),
                Route("/push/{udid}", self._micro_push, methods=["GET"]),
                Route("/v1/devices", self._micro_devices, methods=["GET", "POST"]),
                Route("/version", self._version, methods=["GET"]),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="nanomdm", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the NanoMDM stand-in did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Close the port and wait for the thread."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=20)
        self._server = None
        self._hook = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port (state kept)."""
        self.stop()
        time.sleep(down_s)
        self.start()

    # ---- what tests look at --------------------------------------------------------------

    def queued(self, enrollment_id: str) -> list[str]:
        """CommandUUIDs queued for an enrollment with no final answer."""
        with self._lock:
            return [q.command_uuid for q in self._open(enrollment_id)]

    # ---- the MDM endpoint ----------------------------------------------------------------

    async def _mdm(self, request: Request) -> Response:
        body = await request.body()
        try:
            msg = plistlib.loads(body)
        except Exception:
            return Response(status_code=400)
        if not isinstance(msg, dict):
            return Response(status_code=400)
        path = request.url.path
        if path == "/mdm/checkin" or (
            path == "/mdm" and request.headers.get("content-type", "").startswith(CHECKIN_TYPE)
        ):
            return await self._checkin(msg, body)
        return await self._report(msg, body)

    async def _checkin(self, msg: dict[str, Any], body: bytes) -> Response:
        kind = msg.get("MessageType")
        udid = msg.get("UDID")
        if not isinstance(udid, str) or kind not in ("Authenticate", "TokenUpdate", "CheckOut"):
            return Response(status_code=400)
        with self._lock:
            if kind == "Authenticate":
                facts = {
                    key: value
                    for key, value in (
                        ("serial_number", msg.get("SerialNumber")),
                        ("os_version", msg.get("OSVersion")),
                        ("product_name", msg.get("ProductName")),
                        ("model", msg.get("Model")),
                        ("device_name", msg.get("DeviceName")),
                    )
                    if isinstance(value, str) and value
                }
                self.enrollments[udid] = _Enrollment(udid, topic=msg.get("Topic"), facts=facts)
                for q in self.queues.get(udid, []):
                    q.active = False  # re-enrollment: nothing old is served
            enrollment = self.enrollments.get(udid)
            if enrollment is None:
                return Response(status_code=400)
            enrollment.last_seen = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
            if kind == "TokenUpdate":
                token = msg.get("Token")
                enrollment.token_hex = token.hex() if isinstance(token, bytes) else None
                enrollment.push_magic = msg.get("PushMagic")
                enrollment.checked_out = False
            elif kind == "CheckOut":
                enrollment.checked_out = True
        await self._post(f"mdm.{kind}", "checkin_event", udid, body, None, None)
        return Response(status_code=200)

    async def _report(self, msg: dict[str, Any], body: bytes) -> Response:
        udid = msg.get("UDID")
        status = msg.get("Status")
        if not isinstance(udid, str) or not isinstance(status, str) or not status:
            return Response(status_code=400)
        cid = msg.get("CommandUUID")
        with self._lock:
            if udid not in self.enrollments:
                return Response(status_code=400)
            if status == "Idle":
                self._skip[udid] = set()
            elif isinstance(cid, str):
                self.counts.reports += 1
                for q in self.queues.get(udid, []):
                    if q.command_uuid == cid:
                        q.status = status
                if status == "NotNow":
                    self._skip.setdefault(udid, set()).add(cid)
        await self._post("mdm.Connect", "acknowledge_event", udid, body, status, cid)
        with self._lock:
            skip = self._skip.get(udid, set())
            nxt = next((q for q in self._open(udid) if q.command_uuid not in skip), None)
        if nxt is None:
            return Response(status_code=200)
        return Response(nxt.body, status_code=200, media_type="application/xml")

    def _open(self, udid: str) -> list[_Queued]:
        return [
            q
            for q in self.queues.get(udid, [])
            if q.active and (q.status is None or q.status == "NotNow")
        ]

    async def _post(
        self,
        topic: str,
        kind: str,
        udid: str,
        raw: bytes,
        status: str | None,
        command_uuid: str | None,
    ) -> None:
        """Post one event, inline, once (no retry; failures only counted)."""
        if not self.webhook_url:
            return
        copies = 1
        if command_uuid is not None and status != "Idle":  # faults hit command reports
            with self._lock:
                if self.drop_webhooks > 0:
                    self.drop_webhooks -= 1
                    self.counts.webhooks_dropped += 1
                    return
                if self.duplicate_webhooks > 0:
                    self.duplicate_webhooks -= 1
                    copies = 2
        inner: dict[str, Any] = {
            "udid": udid,
            "raw_payload": base64.b64encode(raw).decode(),
        }
        if status is not None:
            inner["status"] = status
        if command_uuid is not None:
            inner["command_uuid"] = command_uuid
        event = {
            "topic": topic,
            "event_id": uuid.uuid4().hex,
            "created_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            kind: inner,
        }
        if self._hook is None:
            self._hook = httpx.AsyncClient(timeout=30)
        for _ in range(copies):
            try:
                await self._hook.post(self.webhook_url, json=event)
                self.counts.webhooks_posted += 1
            except httpx.HTTPError:
                pass

    # ---- the API -------------------------------------------------------------------------

    def _take(self, ids: list[str], body: bytes) -> tuple[str, str, dict[str, dict[str, str]]]:
        """Queue a raw command plist for ``ids``: its CommandUUID, RequestType and each id's
        error (unknown enrollment, the same CommandUUID again); ValueError for a bad body."""
        try:
            cmd = plistlib.loads(body)
            cid = cmd["CommandUUID"]
            rtype = cmd["Command"]["RequestType"]
        except Exception as exc:
            raise ValueError("not a command plist") from exc
        status: dict[str, dict[str, str]] = {}
        with self._lock:
            for i in ids:
                queue = self.queues.setdefault(i, [])
                if i not in self.enrollments and not self.any_enrollment:
                    status[i] = {"command_error": "enrollment not found"}
                elif any(q.command_uuid == cid for q in queue):
                    status[i] = {"command_error": "duplicate command UUID"}
                else:
                    queue.append(_Queued(cid, rtype, body))
        return cid, rtype, status

    async def _micro_commands(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        udid = unquote(request.path_params["udid"])
        if request.method == "DELETE":
            with self._lock:
                self.counts.queue_clears += 1
                for q in self.queues.get(udid, []):
                    q.active = False
            return JSONResponse({})
        if request.method == "GET":
            with self._lock:
                self.counts.queue_reads += 1
                held = [q for q in self._open(udid)]
            queue = {
                "DeviceUDID": udid,
                "Commands": [
                    {"UUID": q.command_uuid, "Payload": base64.b64encode(q.body).decode()}
                    for q in held
                    if q.status is None
                ],
                "NotNow": [{"UUID": q.command_uuid} for q in held if q.status == "NotNow"],
            }
            return JSONResponse({"device_command": queue})
        body = await request.body()
        with self._lock:
            self.counts.enqueue_calls += 1
            if self.fail_enqueue > 0:
                self.fail_enqueue -= 1
                return JSONResponse({"error": "storage unavailable"}, status_code=500)
        try:
            cid, rtype, status = self._take([udid], body)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if udid in status:
            return JSONResponse({"error": status[udid]["command_error"]}, status_code=400)
        payload = {"udid": udid, "command_uuid": cid, "command": {"request_type": rtype}}
        return JSONResponse({"payload": payload}, status_code=201)

    async def _micro_devices(self, request: Request) -> Response:
        if self.user != "micromdm":
            return Response(status_code=404)  # NanoMDM's API lists no enrollments
        if not self._authorised(request):
            return self._unauthorised()
        if request.method not in self.device_list_methods:
            return Response(status_code=405)
        body = await request.body()
        try:
            opts = json.loads(body) if body.strip() else {}
        except json.JSONDecodeError:
            return JSONResponse({"error": "bad JSON"}, status_code=400)
        if not isinstance(opts, dict):
            return JSONResponse({"error": "bad JSON"}, status_code=400)
        serials = set(opts.get("filter_serial") or [])
        udids = set(opts.get("filter_udid") or [])
        with self._lock:
            self.counts.device_lists += 1
            listed = [
                {
                    "udid": e.udid,
                    **e.facts,
                    "enrolled": bool(e.token_hex) and not e.checked_out,
                    "last_seen": e.last_seen,
                }
                for e in self.enrollments.values()
            ] + list(self.listed_only)
        devices = [
            {k: v for k, v in d.items() if v not in ("", False, None)}
            for d in listed
            if (not serials or d.get("serial_number") in serials)
            and (not udids or d.get("udid") in udids)
        ]
        return JSONResponse({"devices": devices})

    async def _version(self, request: Request) -> Response:
        return JSONResponse({"version": "v0.0.0-standin"})

    async def _micro_push(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        udid = unquote(request.path_params["udid"])
        with self._lock:
            self.counts.push_calls += 1
        result = self._wake([udid])[udid]
        if "push_error" in result:
            return JSONResponse({"error": result["push_error"]}, status_code=500)
        return JSONResponse({"status": "success", "push_notification_id": result["push_result"]})

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.user and password == self.api_key

    @staticmethod
    def _unauthorised() -> Response:
        return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="nanomdm"'})

    @staticmethod
    def _ids(request: Request) -> list[str]:
        return [unquote(i).strip() for i in request.path_params["ids"].split(",") if i.strip()]

    async def _enqueue(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        body = await request.body()
        with self._lock:
            self.counts.enqueue_calls += 1
            if self.fail_enqueue > 0:
                self.fail_enqueue -= 1
                return JSONResponse({"command_error": "storage unavailable"}, status_code=500)
        ids = self._ids(request)
        try:
            cid, rtype, status = self._take(ids, body)
        except ValueError:
            return Response(status_code=500)  # NanoMDM: an unreadable body, no content
        failed = len(status)
        nopush = request.query_params.get("nopush") in ("1", "true")
        if not nopush:
            for i, result in self._wake([i for i in ids if i not in status]).items():
                status[i] = result
        answer = {
            "status": status,
            "no_push": nopush,
            "command_uuid": cid,
            "request_type": rtype,
        }
        code = 200 if failed == 0 else (207 if failed < len(ids) else 500)
        return JSONResponse(answer, status_code=code)

    def _wake(self, ids: list[str]) -> dict[str, dict[str, str]]:
        """Push each id through the fleet's APNs hook: its push_result, or its push_error."""
        out: dict[str, dict[str, str]] = {}
        for i in ids:
            with self._lock:
                e = self.enrollments.get(i)
            if e is None or not e.token_hex or e.checked_out:
                out[i] = {"push_error": "no push info"}
                continue
            if e.token_hex in self.dead_tokens:
                out[i] = {"push_error": "push: APNs 410: Unregistered"}
                continue
            self.counts.pushes += 1
            if self.on_push is not None:
                self.on_push(e.token_hex, {"mdm": e.push_magic})
            out[i] = {"push_result": str(uuid.uuid4()).upper()}
        return out

    async def _push(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        ids = self._ids(request)
        with self._lock:
            self.counts.push_calls += 1
        status = self._wake(ids)
        failed = sum(1 for r in status.values() if "push_error" in r)
        code = 200 if failed == 0 else (207 if failed < len(ids) else 500)
        return JSONResponse({"status": status}, status_code=code)

    async def _queue(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        ids = self._ids(request)
        if request.method == "DELETE":
            with self._lock:
                self.counts.queue_clears += 1
                for i in ids:
                    for q in self.queues.get(i, []):
                        q.active = False
            return Response(status_code=204)
        if len(ids) != 1:
            return JSONResponse({"error": "one enrollment id"}, status_code=400)
        try:
            limit = int(request.query_params.get("limit", "100"))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            return JSONResponse({"error": "invalid pagination"}, status_code=400)
        with self._lock:
            self.counts.queue_reads += 1
            page = self._open(ids[0])[offset : offset + limit]
        commands = [
            {
                "command_uuid": q.command_uuid,
                "request_type": q.request_type,
                "command": base64.b64encode(q.body).decode(),
            }
            for q in page
        ]
        return JSONResponse({"commands": commands})


def main(argv: list[str] | None = None) -> None:
    """``python -m rollout.sim.nanomdm --port P --api-key K [--any-enrollment]``: the stand-in
    alone, in a process of its own (the fan-out bench), until SIGTERM."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="rollout.sim.nanomdm")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--any-enrollment", action="store_true")
    args = parser.parse_args(argv)
    standin = NanoMDMStandIn(
        api_key=args.api_key, port=args.port, any_enrollment=args.any_enrollment
    ).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print(f"nanomdm stand-in on {standin.base_url}", flush=True)
    stopped.wait()
    standin.stop()


if __name__ == "__main__":
    main()
