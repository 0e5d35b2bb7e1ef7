"""A simulated fleet: many simulated devices built from a seed, woken by pushes.

Build::

    fleet = SimFleet(10_000, seed=7, mix=FleetMix(), topic="com.apple.mgmt.External.…")

Devices, their UDIDs, push tokens and behaviours follow from ``seed``. Behaviours are dealt
by exact counts (largest remainder of the ``mix`` fractions times the size) over a seeded
shuffle, so a 1,000-device fleet with the default mix has exactly 850 ``ok`` devices. Devices
with a dead token are offline too (the device is gone; only APNs still knows the token):
:meth:`SimFleet.dead_tokens` lists them for the APNs stand-in's ``unregister``.

Identities: one device CA per fleet, made when not given. Identity certificates are issued on
first use, and by default all share one EC key (each device still has its own certificate,
CN = UDID, so certificate hashes differ): 10,000 identities cost well under a second, and a
fleet that only enrolls part of its devices pays for that part only.

Event loop: the fleet runs on **one** asyncio loop. Either

* call :meth:`SimFleet.attach` from inside your loop (tests, ``asyncio.run``), or
* call :meth:`SimFleet.start_in_thread`, which runs a new loop in a daemon thread and returns it;
  hand coroutines to it with :meth:`SimFleet.submit` and end it with :meth:`SimFleet.stop`.

:meth:`SimFleet.wake` is the APNs stand-in's ``on_push`` hook: it may be called from any thread
and schedules the device's session on the fleet loop (``loop.call_soon_threadsafe``). A device
runs one session at a time; a wake during a session queues (at most) one more session.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime as dt
import json
import random
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from rollout.mdm.messages import Status
from rollout.sim.device import (
    CHECKIN_PATH,
    CONNECT_PATH,
    DEFAULT_TOPIC,
    DeviceBehavior,
    DeviceCounters,
    EnrollResult,
    SessionResult,
    SimDevice,
    Transport,
)
from rollout.sim.identity import issue_device_identity, make_device_ca
from rollout.sim.pki import Issued

__all__ = ["FleetIdentities", "FleetMix", "FleetStats", "SimFleet"]

_T = TypeVar("_T")
_UTC = dt.UTC
_MIX_NAMES = ("ok", "notnow_then_ok", "error", "format_error", "offline", "dead_token")


@dataclass(frozen=True)
class FleetMix:
    """Fractions of the fleet per behaviour; they must add up to 1."""

    ok: float = 0.85
    notnow_then_ok: float = 0.05
    error: float = 0.03
    format_error: float = 0.01
    offline: float = 0.04
    dead_token: float = 0.02

    def __post_init__(self) -> None:
        values = [getattr(self, n) for n in _MIX_NAMES]
        if any(v < 0 for v in values):
            raise ValueError("fractions must be >= 0")
        if abs(sum(values) - 1.0) > 1e-6:
            raise ValueError(f"fractions must add up to 1, not {sum(values)}")

    def counts(self, size: int) -> dict[str, int]:
        """Exact device counts per behaviour for ``size`` devices (largest remainder)."""
        raw = {n: getattr(self, n) * size for n in _MIX_NAMES}
        counts = {n: int(v) for n, v in raw.items()}
        short = size - sum(counts.values())
        by_remainder = sorted(
            _MIX_NAMES, key=lambda n: (-(raw[n] - counts[n]), _MIX_NAMES.index(n))
        )
        for n in by_remainder[:short]:
            counts[n] += 1
        return counts


class FleetIdentities:
    """Issues device identity certificates from one CA, optionally all over one shared EC key.

    With ``shared_key`` the per-certificate cost is one ECDSA signature (no key generation);
    the certificates have the same shape as :func:`rollout.sim.identity.issue_device_identity`
    (CN = UDID, O = "Rollout Sim Devices", client auth).
    """

    def __init__(self, ca: Issued, *, shared_key: bool = True, days: int = 365) -> None:
        self.ca = ca
        self.shared_key = shared_key
        self.days = days
        self.issued = 0
        self.key = ec.generate_private_key(ec.SECP256R1()) if shared_key else None
        self._lock = threading.Lock()

    def issue(self, udid: str) -> Issued:
        """A new identity certificate for ``udid`` (thread-safe)."""
        with self._lock:
            self.issued += 1
        return issue_device_identity(self.ca, udid, days=self.days, key=self.key)


@dataclass
class FleetStats:
    """What the fleet as a whole has done (device-level counters are on each device)."""

    wakes: int = 0
    wakes_ignored_offline: int = 0
    wakes_unknown_token: int = 0
    wakes_coalesced: int = 0
    wakes_wrong_magic: int = 0
    wakes_unattached: int = 0
    repolls: int = 0
    sessions: int = 0
    sessions_ended: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    http_statuses: collections.Counter[int] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (counters as dicts)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value) if isinstance(value, collections.Counter) else value
        return out


class SimFleet:
    """``size`` simulated devices built from ``seed`` (see the module docs).

    ``mix`` deals behaviours; ``slow_fraction`` of the (online) devices additionally wait
    ``slow_delay_s`` before answering each command. ``notnow_times`` and ``notnow_repoll_s``
    configure the ``notnow_then_ok`` devices. ``trust_anchors`` makes devices require a profile
    chain to one of them. ``on_session(device, result)`` runs on the fleet loop after every
    session; ``keep_results`` keeps every :class:`SessionResult` in :attr:`results`.
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        mix: FleetMix | None = None,
        platform: str = "iOS",
        os_version: str = "17.5.1",
        topic: str = DEFAULT_TOPIC,
        ca: Issued | None = None,
        shared_key: bool = True,
        slow_fraction: float = 0.0,
        slow_delay_s: float = 0.5,
        notnow_times: int = 1,
        notnow_repoll_s: float | None = None,
        trust_anchors: Sequence[x509.Certificate] = (),
        checkin_path: str = CHECKIN_PATH,
        connect_path: str = CONNECT_PATH,
        wake_concurrency: int = 256,
        on_session: Callable[[SimDevice, SessionResult], None] | None = None,
        keep_results: bool = False,
    ) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        if not 0.0 <= slow_fraction <= 1.0:
            raise ValueError("slow_fraction must be within [0, 1]")
        self.seed = seed
        self.mix = mix or FleetMix()
        self.topic = topic
        self.ca = ca or make_device_ca("Rollout Sim Fleet Device CA")
        self.identities = FleetIdentities(self.ca, shared_key=shared_key)
        self.checkin_path = checkin_path
        self.connect_path = connect_path
        self.wake_concurrency = wake_concurrency
        self.on_session = on_session
        self.keep_results = keep_results
        self.results: list[SessionResult] = []
        self.stats = FleetStats()

        behaviors = self._deal(size, notnow_times, notnow_repoll_s, slow_fraction, slow_delay_s)
        self.devices: list[SimDevice] = []
        self._by_token: dict[str, SimDevice] = {}
        self._by_udid: dict[str, SimDevice] = {}
        anchors = tuple(trust_anchors)
        for index, behavior in enumerate(behaviors):
            device = SimDevice.generate(
                index,
                seed=seed,
                identity=self.identities.issue,
                platform=platform,
                os_version=os_version,
                topic=topic,
                behavior=behavior,
                trust_anchors=anchors,
            )
            salt = 0
            while device.udid in self._by_udid or device.push_token_hex in self._by_token:
                salt += 1  # a 56-bit collision: astronomically rare, but keep ids unique
                device = SimDevice.generate(
                    index + salt * 1_000_003_000,
                    seed=seed,
                    identity=self.identities.issue,
                    platform=platform,
                    os_version=os_version,
                    topic=topic,
                    behavior=behavior,
                    trust_anchors=anchors,
                )
            self.devices.append(device)
            self._by_token[device.push_token_hex] = device
            self._by_udid[device.udid] = device

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._transport: Transport | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: set[str] = set()
        self._scheduled: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._wake_slots: asyncio.Semaphore | None = None

    def _deal(
        self,
        size: int,
        notnow_times: int,
        notnow_repoll_s: float | None,
        slow_fraction: float,
        slow_delay_s: float,
    ) -> list[DeviceBehavior]:
        rng = random.Random(f"rollout-sim-fleet:{self.seed}")
        order = list(range(size))
        rng.shuffle(order)
        behaviors: list[DeviceBehavior] = [DeviceBehavior()] * size
        start = 0
        for mix_name, count in self.mix.counts(size).items():
            if mix_name == "dead_token":
                behavior = DeviceBehavior(mode="offline", dead_token=True)
            elif mix_name == "notnow_then_ok":
                behavior = DeviceBehavior(
                    mode="notnow_then_ok",
                    notnow_times=notnow_times,
                    notnow_repoll_s=notnow_repoll_s,
                )
            else:
                behavior = DeviceBehavior(mode=mix_name)  # type: ignore[arg-type]
            for i in order[start : start + count]:
                behaviors[i] = behavior
            start += count
        online = [i for i in range(size) if behaviors[i].mode != "offline"]
        slow = rng.sample(online, round(len(online) * slow_fraction)) if slow_fraction else []
        for i in slow:
            b = behaviors[i]
            behaviors[i] = DeviceBehavior(
                mode=b.mode,
                notnow_times=b.notnow_times,
                delay_s=slow_delay_s,
                dead_token=b.dead_token,
                error=b.error,
                notnow_repoll_s=b.notnow_repoll_s,
            )
        return behaviors

    # --- lookup ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[SimDevice]:
        return iter(self.devices)

    def by_token(self, token_hex: str) -> SimDevice | None:
        """The device with this push token (hex, any case), or None."""
        return self._by_token.get(token_hex.lower())

    def by_udid(self, udid: str) -> SimDevice | None:
        """The device with this UDID, or None."""
        return self._by_udid.get(udid)

    def online(self) -> list[SimDevice]:
        """Devices that answer pushes (every mode but ``offline``)."""
        return [d for d in self.devices if not d.is_offline]

    def dead_tokens(self) -> list[str]:
        """Push tokens (hex) of devices flagged ``dead_token``: APNs should answer 410."""
        return [d.push_token_hex for d in self.devices if d.behavior.dead_token]

    def inventory_rows(self) -> list[dict[str, str]]:
        """One dict per device: udid, platform, os_version, serial_number, model, topic,
        push_token, push_magic (the columns ``rollout devices import`` reads)."""
        return [d.inventory_row() for d in self.devices]

    def inventory_jsonl(self) -> bytes:
        """:meth:`inventory_rows` as a JSON-lines inventory file."""
        return "".join(json.dumps(row) + "\n" for row in self.inventory_rows()).encode()

    def materialize_identities(self) -> None:
        """Issue every device's identity now (otherwise each is issued on first use)."""
        for device in self.devices:
            _ = device.identity

    # --- event loop ------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the fleet runs on (None until attached or started)."""
        return self._loop

    def attach(
        self, transport: Transport | None, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Run wake sessions on ``loop`` (default: the running loop) through ``transport``."""
        self._loop = loop or asyncio.get_running_loop()
        self._transport = transport

    def start_in_thread(self, transport: Transport | None = None) -> asyncio.AbstractEventLoop:
        """Start a new event loop in a daemon thread, attach to it and return it.

        ``transport`` is used from that loop only (the lean client binds to the loop that first
        uses it, so create it anywhere but use it only through this fleet's loop).
        """
        if self._thread is not None:
            raise RuntimeError("the fleet already runs in a thread")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=run, name="sim-fleet", daemon=True)
        thread.start()
        ready.wait()
        self._thread = thread
        self.attach(transport, loop)
        return loop

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Run ``coro`` on the fleet loop from another thread; returns a future."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the fleet is not attached to a loop")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def stop(self, *, close_transport: bool = True, timeout: float = 10.0) -> None:
        """Cancel wake sessions, close the transport (if it has ``aclose``), and end the loop
        thread started by :meth:`start_in_thread`. Call from outside that loop."""
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(close_transport), loop)
            future.result(timeout)
        if thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()
            self._thread = None
        self._loop = None

    async def _shutdown(self, close_transport: bool) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        aclose = getattr(self._transport, "aclose", None)
        if close_transport and aclose is not None:
            await aclose()

    # --- waking ----------------------------------------------------------------------------

    def wake(self, token_hex: str, payload: object = None) -> None:
        """A push reached the device with this token: schedule its session (any thread).

        Fits :class:`~rollout.sim.apns_server.ApnsStandIn`'s ``on_push(token_hex, payload)``
        and never raises (it runs inside the push server). A payload dict whose ``mdm`` value
        is not the device's PushMagic is ignored, as a device ignores it. Offline devices,
        unknown tokens, wrong PushMagic and wakes before the fleet is attached to a loop are
        counted in :attr:`stats` and ignored (see :meth:`would_wake`).
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            self.stats.wakes_unattached += 1
            return
        device = self.by_token(token_hex)
        magic = payload.get("mdm") if isinstance(payload, dict) else None
        wrong_magic = device is not None and magic is not None and magic != device.push_magic
        try:
            loop.call_soon_threadsafe(self._on_wake, device, wrong_magic)
        except RuntimeError:  # the loop closed in between
            self.stats.wakes_unattached += 1

    def would_wake(self, token_hex: str, payload: object = None) -> bool:
        """Whether :meth:`wake` with these arguments starts (or queues) a session."""
        device = self.by_token(token_hex)
        if device is None or device.is_offline or self._loop is None:
            return False
        magic = payload.get("mdm") if isinstance(payload, dict) else None
        return magic is None or magic == device.push_magic

    def _on_wake(self, device: SimDevice | None, wrong_magic: bool) -> None:
        stats = self.stats
        stats.wakes += 1
        if device is None:
            stats.wakes_unknown_token += 1
        elif wrong_magic:
            stats.wakes_wrong_magic += 1
        elif device.is_offline:
            stats.wakes_ignored_offline += 1
        else:
            self._start_session(device)

    def _start_session(self, device: SimDevice) -> None:
        if device.udid in self._scheduled:
            # A session is queued or running: the device polls once more after it.
            if device.udid in self._pending:
                self.stats.wakes_coalesced += 1
            self._pending.add(device.udid)
            return
        if self._transport is None or self._loop is None:
            self.stats.wakes_unattached += 1
            return
        self._scheduled.add(device.udid)
        task = self._loop.create_task(self._wake_session(device))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lock(self, device: SimDevice) -> asyncio.Lock:
        lock = self._locks.get(device.udid)
        if lock is None:
            lock = self._locks[device.udid] = asyncio.Lock()
        return lock

    async def _wake_session(self, device: SimDevice) -> None:
        if self._wake_slots is None:
            self._wake_slots = asyncio.Semaphore(self.wake_concurrency)
        transport = self._transport
        assert transport is not None  # checked by _start_session
        try:
            async with self._wake_slots:
                while True:
                    self._pending.discard(device.udid)
                    result = await self._session(device, transport)
                    if device.udid not in self._pending:
                        break
        finally:
            self._scheduled.discard(device.udid)
        repoll = device.behavior.notnow_repoll_s
        if repoll is not None and result.last_status is Status.NOT_NOW and self._loop is not None:
            timer: asyncio.TimerHandle | None = None

            def fire() -> None:
                if timer is not None:
                    self._timers.discard(timer)
                self.stats.repolls += 1
                self._start_session(device)

            timer = self._loop.call_later(repoll, fire)
            self._timers.add(timer)

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no wake session runs (re-polls scheduled for later are not waited for)."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- bulk drivers ----------------------------------------------------------------------

    async def _session(self, device: SimDevice, transport: Transport) -> SessionResult:
        async with self._lock(device):
            result = await device.run_session(transport, path=self.connect_path)
        self._record(device, result)
        return result

    def _record(self, device: SimDevice, result: SessionResult) -> None:
        stats = self.stats
        stats.sessions += 1
        stats.sessions_ended[result.ended] += 1
        for outcome in result.outcomes:
            stats.statuses[outcome.status.value] += 1
        if result.http_status is not None:
            stats.http_statuses[result.http_status] += 1
        if self.keep_results:
            self.results.append(result)
        if self.on_session is not None:
            self.on_session(device, result)

    async def enroll_all(
        self,
        transport: Transport,
        concurrency: int = 64,
        devices: Iterable[SimDevice] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[EnrollResult]:
        """Authenticate + TokenUpdate for every device (offline ones too: they enroll, then
        go silent), at most ``concurrency`` at a time. Results in device order; ``progress``
        is told how many are done after each one."""
        chosen = list(self.devices if devices is None else devices)
        slots = asyncio.Semaphore(concurrency)
        done = [0]

        async def one(device: SimDevice) -> EnrollResult:
            async with slots:
                result = await device.enroll(transport, path=self.checkin_path)
            done[0] += 1
            if progress is not None:
                progress(done[0])
            return result

        return list(await asyncio.gather(*(one(d) for d in chosen)))

    async def run_sessions(
        self,
        devices: Iterable[SimDevice] | None,
        transport: Transport,
        concurrency: int = 64,
    ) -> list[SessionResult]:
        """One connect session for each device (None: every online device), at most
        ``concurrency`` at a time; offline devices give an ``offline`` result."""
        chosen = list(self.online() if devices is None else devices)
        slots = asyncio.Semaphore(concurrency)

        async def one(device: SimDevice) -> SessionResult:
            async with slots:
                return await self._session(device, transport)

        return list(await asyncio.gather(*(one(d) for d in chosen)))

    # --- reporting -------------------------------------------------------------------------

    def behavior_counts(self) -> dict[str, int]:
        """Devices per mode, plus ``dead_token`` and ``slow`` flags."""
        counts: collections.Counter[str] = collections.Counter()
        for d in self.devices:
            counts[d.behavior.mode] += 1
            if d.behavior.dead_token:
                counts["dead_token"] += 1
            if d.behavior.delay_s:
                counts["slow"] += 1
        return dict(counts)

    def device_totals(self) -> dict[str, int]:
        """The sum of every device's :class:`DeviceCounters`."""
        totals = collections.Counter(DeviceCounters().as_dict())
        for d in self.devices:
            totals.update(d.counters.as_dict())
        return dict(totals)

    def summary(self) -> dict[str, Any]:
        """Fleet size, behaviours, enrolled count, summed device counters and fleet stats."""
        return {
            "devices": len(self.devices),
            "behaviors": self.behavior_counts(),
            "enrolled": sum(1 for d in self.devices if d.enrolled),
            "identities_issued": self.identities.issued,
            "counters": self.device_totals(),
            "fleet": self.stats.as_dict(),
        }
