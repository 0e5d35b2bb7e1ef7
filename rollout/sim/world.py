"""A whole simulated world: ledger, web app, APNs stand-in, fleet, Celery workers and beat.

The demo, the fault tests and the fan-out benchmark all need the same parts wired the same
way, so they are put together here once. The web app, the stand-in and the fleet run in this
process (threads); the Celery workers and beat run as real separate processes, reached through
the configured broker (kombu's filesystem transport by default, so nothing needs a server).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rollout.clock import SYSTEM_CLOCK
from rollout.config import EMBEDDED_BROKER_URL, Settings
from rollout.inventory import read_inventory
from rollout.ledger import AlertInfo, Ledger, db
from rollout.ledger.sealing import Sealer, new_key, parse_keys
from rollout.operations import create_rollout, rollout_report, rollout_summary
from rollout.profiles import Profile, parse_profile
from rollout.sim.apns_server import ApnsStandIn
from rollout.sim.apple_api import AppleApiStandIn
from rollout.sim.fleet import FleetMix, SimFleet
from rollout.sim.http11 import Http11Client
from rollout.sim.nanomdm import NanoMDMStandIn
from rollout.sim.profiles import AppleLikeChain, make_apple_like_chain, make_profile
from rollout.spec import ONE_STAGE, RolloutSpec, StageSpec, TargetSpec
from rollout.web.app import create_app
from rollout.web.server import BackgroundServer

TOPIC = "com.apple.mgmt.External.7d5e1c9a-2b4f-4e8d-9a61-3c0f5b2d8e47"


@dataclass
class WorldConfig:
    """What to build."""

    home: Path
    devices: int = 2000
    seed: int = 7
    mix: FleetMix | None = None
    database_url: str | None = None  # None: a fresh SQLite file under home
    broker_url: str | None = None  # None: kombu's filesystem transport under home
    fast: bool = False
    engine_env: dict[str, str] = field(default_factory=dict)  # extra ROLLOUT_* for workers
    slow_fraction: float = 0.0
    backend: str = "builtin"  # or nanomdm: the fleet is enrolled in a NanoMDM stand-in


NANOMDM_API_KEY = "world-nanomdm-api-key"
WEBHOOK_SECRET = "world-webhook-secret-0123456789"


class World:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    def __init__(self, cfg: WorldConfig) -> None:
        self.cfg = cfg
        self.home = cfg.home.resolve()
        self.procs: list[subprocess.Popen[bytes]] = []
        self._beats: list[subprocess.Popen[bytes]] = []
        self.ledger: Ledger | None = None
        self.standin: ApnsStandIn | None = None
        self.nanomdm: NanoMDMStandIn | None = None
        self.server: BackgroundServer | None = None
        self.fleet: SimFleet | None = None
        self.transport: Http11Client | None = None
        self.chain: AppleLikeChain | None = None
        self.profile: Profile | None = None  # the renewal the last open_rollout rolls out
        self.database_url = ""
        self.broker_url = ""
        self.held: Profile | None = None  # the expiring profile the fleet holds
        self.apple: AppleApiStandIn | None = None
        self._apple_env: dict[str, str] = {}
        self.trust_anchors: list[x509.Certificate] = []  # what the library trusts
        self._serving = contextlib.ExitStack()
        self.ledger_keys = ""

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> World:
        """Ledger, stand-in, web app and fleet (workers are started separately)."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.cfg.database_url:
            self.database_url = self.cfg.database_url
        else:
            for stale in self.home.glob("ledger.sqlite3*"):
                stale.unlink()
            self.database_url = f"sqlite:///{self.home / 'ledger.sqlite3'}"
        if self.cfg.broker_url:
            self.broker_url = self.cfg.broker_url
        else:
            shutil.rmtree(self.home / "broker", ignore_errors=True)
            self.broker_url = EMBEDDED_BROKER_URL
        db.upgrade(self.database_url)
        # Devices' push secrets are sealed at rest, as in production: with the keys given, or
        # with a key of the world's own, kept beside its ledger for the next run.
        self.ledger_keys = self.cfg.engine_env.get("ROLLOUT_LEDGER_KEYS") or self._own_key()
        self.ledger = Ledger.open(self.database_url, Sealer(parse_keys(self.ledger_keys)))

        # old enough to have signed a profile made a year ago
        self.chain = make_apple_like_chain(
            not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
        )
        self.fleet = SimFleet(
            self.cfg.devices,
            seed=self.cfg.seed,
            mix=self.cfg.mix,
            topic=TOPIC,
            trust_anchors=self.chain.anchors,
            slow_fraction=self.cfg.slow_fraction,
            slow_delay_s=0.2,
        )
        self.standin = ApnsStandIn(topic=TOPIC, on_push=self._on_push).start()
        for token in self.fleet.dead_tokens():
            self.standin.unregister(token)
        push = self.standin.issue_push_certificate(TOPIC)
        (self.home / "push.pem").write_bytes(push.cert_pem() + push.key_pem())
        (self.home / "device-ca.pem").write_bytes(self.fleet.ca.cert_pem())

        settings = Settings(
            home=self.home,
            database_url=self.database_url,
            device_ca=str(self.home / "device-ca.pem"),
            identity_mode="strict",
            notnow_backoff_s=1.0 if self.cfg.fast else 2.0,
            webhook_secret=WEBHOOK_SECRET if self.cfg.backend == "nanomdm" else "",
        )
        self.server = BackgroundServer(create_app(settings, self.ledger)).start()
        mdm_url = self.server.base_url
        if self.cfg.backend == "nanomdm":
            # the devices are NanoMDM's; it posts what they say to rollout's webhook and wakes
            # them itself (a dead token is APNs' 410, reported back in its push answer)
            self.nanomdm = NanoMDMStandIn(
                api_key=NANOMDM_API_KEY,
                webhook_url=f"{self.server.base_url}/webhook/mdm/{WEBHOOK_SECRET}",
                on_push=self._on_push,
                dead_tokens=set(self.fleet.dead_tokens()),
            ).start()
            mdm_url = self.nanomdm.base_url
        self.transport = Http11Client(mdm_url, connections=32)
        self.fleet.start_in_thread(self.transport)
        return self

    def _on_push(self, token_hex: str, payload: Any) -> None:
        if self.fleet is not None:
            self.fleet.wake(token_hex, payload)

    def stop(self) -> None:
        """Stop every part, workers first."""
        self.stop_processes()
        self._serving.close()
        if self.fleet is not None:
            self.fleet.stop()
        if self.nanomdm is not None:
            self.nanomdm.stop()
        if self.server is not None:
            self.server.stop()
        if self.standin is not None:
            self.standin.stop()
        if self.ledger is not None:
            self.ledger.dispose()

    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the fleet and the rollout -------------------------------------------------------

    def enroll(self, concurrency: int = 64, progress: Callable[[int], None] | None = None) -> int:
        """Enroll every device through the real check-in endpoint (rollout's, or NanoMDM's,
        which posts each check-in to rollout's webhook); returns how many enrolled.
        ``progress`` is told how many are done after each device (from the fleet's thread)."""
        assert self.fleet is not None and self.transport is not None
        job = self.fleet.enroll_all(self.transport, concurrency, progress=progress)
        results = self.fleet.submit(job).result()
        return sum(1 for r in results if r.ok)

    def open_rollout(
        self,
        name: str = "Field App renewal",
        stages: Sequence[StageSpec] = ONE_STAGE,
        verify: bool = False,
        signed_by: AppleLikeChain | None = None,
    ) -> int:
        """Put a freshly signed renewal in the library and start a rollout of it to the
        fleet (in ``stages``, verified by a profile list when ``verify``). ``signed_by``
        another chain than the one the devices trust, the devices refuse it (the library,
        given that chain's root, takes it)."""
        assert self.ledger is not None and self.chain is not None and self.fleet is not None
        chain = signed_by or self.chain
        data = make_profile(chain, name="Field App In-House")
        profile = parse_profile(data, trust_anchors=chain.anchors)
        self.profile = profile
        now = SYSTEM_CLOCK.now()
        with self.ledger.library() as store:
            store.add(profile, data, now)
        spec = RolloutSpec(
            profile=profile.uuid,
            targets=TargetSpec(keys=tuple(d.udid for d in self.fleet.devices)),
            name=name,
            stages=tuple(stages),
            verify=verify,
        )
        summary = create_rollout(self.ledger, spec, actor="demo", now=now, start=True)
        return summary.rollout.id

    def hold_expiring_profile(
        self, days_left: int = 20, name: str = "Field App In-House"
    ) -> Profile:
        """Every device holds an in-house profile made a year ago that expires in
        ``days_left`` days; the library has it and the inventory (as an MDM's export would
        give it) says who holds it."""
        assert self.ledger is not None and self.chain is not None and self.fleet is not None
        now = SYSTEM_CLOCK.now()
        data = make_profile(
            self.chain,
            name=name,
            created_at=now - dt.timedelta(days=365 - days_left),
            expires_at=now + dt.timedelta(days=days_left),
        )
        profile = parse_profile(data, trust_anchors=self.chain.anchors)
        with self.ledger.library() as store:
            store.add(profile, data, now)
        for device in self.fleet.devices:
            device.preinstall(data, managed=True)
        rows = "udid,profiles\n" + "".join(f"{d.udid},{profile.uuid}\n" for d in self.fleet.devices)
        report = read_inventory(rows.encode(), fmt="csv")
        with self.ledger.registry() as registry:
            registry.import_devices(report.records, now)
        self.held = profile
        return profile

    def start_apple_api(self, signed_by: AppleLikeChain | None = None) -> AppleApiStandIn:
        """Apple's Enterprise Program API (a stand-in) with the fleet's app and certificate,
        and the settings the workers need to ask it (a fresh API key). ``signed_by`` another
        chain, the profiles it makes are signed by that one (the library trusts its root too;
        the devices do not)."""
        assert self.chain is not None
        key = ec.generate_private_key(ec.SECP256R1())
        key_id = "DEMO4KEY01"
        key_file = self.home / f"AuthKey_{key_id}.p8"
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        issuer = "1f0c6a2e-7d55-4b1e-9a3c-2e5d7f9b0c41"
        signer = signed_by or self.chain
        self.apple = AppleApiStandIn(
            chain=signer,
            clock=SYSTEM_CLOCK,
            key_id=key_id,
            issuer_id=issuer,
            public_key=key.public_key(),
            api="enterprise",
        )
        self.apple.add_bundle_id("com.example.app")
        self.apple.add_certificate(self.chain.developer.cert)
        url = self._serving.enter_context(self.apple.serve())
        anchors = []
        for n, chain in enumerate([self.chain] if signer is self.chain else [self.chain, signer]):
            path = self.home / f"anchor-{n}.der"
            path.write_bytes(chain.root.cert_der())
            anchors.append(str(path))
            self.trust_anchors.append(chain.root.cert)
        self._apple_env = {
            "ROLLOUT_APPLE_API": "enterprise",
            "ROLLOUT_APPLE_API_URL": url,
            "ROLLOUT_APPLE_ISSUER_ID": issuer,
            "ROLLOUT_APPLE_KEY_ID": key_id,
            "ROLLOUT_APPLE_KEY_FILE": str(key_file),
            "ROLLOUT_TRUST_ANCHORS": ",".join(anchors),
        }
        return self.apple

    def renewal_of(self, old_uuid: str, timeout: float) -> int:
        """Wait for the renewal scan (beat) to open the renewal rollout of ``old_uuid``."""
        assert self.ledger is not None
        deadline = time.monotonic() + timeout
        while True:
            self.check_processes()
            with self.ledger.rollouts() as store:
                found = store.renewing([old_uuid])
            if found:
                return found[0].id
            if time.monotonic() > deadline:
                raise TimeoutError(f"no renewal rollout of {old_uuid} after {timeout} s")
            time.sleep(0.25)

    def live_alerts(self, wait_for: str | None = None, timeout: float = 0.0) -> list[AlertInfo]:
        """The live alerts; first waiting up to ``timeout`` for one of kind ``wait_for``."""
        assert self.ledger is not None
        deadline = time.monotonic() + timeout
        while True:
            with self.ledger.alerts() as store:
                found = store.alerts(states=("open", "acknowledged"))
            if wait_for is None or any(a.kind == wait_for for a in found):
                return found
            if time.monotonic() > deadline:
                return found
            time.sleep(0.25)

    def rollout_profile(self, rollout_id: int) -> Profile:
        """The profile a rollout installs, judged against the library's trust anchors."""
        assert self.ledger is not None
        with self.ledger.rollouts() as store:
            info = store.get(rollout_id)
        assert info is not None and info.profile_uuid is not None
        with self.ledger.library() as library:
            content = library.content(info.profile_uuid)
        assert content is not None
        return parse_profile(content, trust_anchors=self.trust_anchors)

    def summary(self, rollout_id: int) -> dict[str, Any]:
        """The ledger's summary of the rollout (its JSON shape), each stage with its counts
        and gate verdict."""
        assert self.ledger is not None
        return rollout_report(self.ledger, rollout_id, SYSTEM_CLOCK.now())

    def rollout_state(self, rollout_id: int) -> str:
        """The rollout's state in the ledger."""
        assert self.ledger is not None
        return rollout_summary(self.ledger, rollout_id).rollout.state

    def wait(
        self,
        rollout_id: int,
        timeout: float,
        progress: Callable[[dict[str, Any]], None] | None = None,
        every: float = 0.5,
    ) -> dict[str, Any]:
        """Poll the ledger until the rollout leaves running (or ``timeout``); the summary."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_processes()
            summary = self.summary(rollout_id)
            if progress:
                progress(summary)
            if summary["rollout"]["state"] not in ("running", "draft"):
                return summary
            if time.monotonic() > deadline:
                raise TimeoutError(f"rollout {rollout_id} still running after {timeout} s")
            time.sleep(every)

    def _own_key(self) -> str:
        path = self.home / "ledger.key"
        if path.exists():
            return path.read_text().strip()
        key = new_key()
        path.touch(mode=0o600)
        path.write_text(key + "\n")
        return key

    # ---- Celery processes ----------------------------------------------------------------

    def worker_env(self) -> dict[str, str]:
        """The environment the worker and beat processes run with."""
        assert self.standin is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
        env.update(
            {
                "ROLLOUT_HOME": str(self.home),
                "ROLLOUT_DATABASE_URL": self.database_url,
                "ROLLOUT_BROKER_URL": self.broker_url,
                "ROLLOUT_APNS_CERT": str(self.home / "push.pem"),
                "ROLLOUT_APNS_URL": self.standin.base_url,
                "ROLLOUT_APNS_CA": self.standin.ca_file,
                "ROLLOUT_TICK_INTERVAL_S": "0.5" if self.cfg.fast else "1",
                "ROLLOUT_SWEEP_INTERVAL_S": "1",
                "ROLLOUT_LEDGER_KEYS": self.ledger_keys,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.cfg.fast:
            env["ROLLOUT_FAST"] = "1"
        else:
            env.setdefault("ROLLOUT_RESPONSE_TIMEOUT_S", "8")
            env.setdefault("ROLLOUT_MAX_PUSHES", "2")
            env.setdefault("ROLLOUT_NOTNOW_BACKOFF_S", "2")
            env.setdefault("ROLLOUT_DISPATCH_GRACE_S", "10")
        if self.nanomdm is not None:
            env["ROLLOUT_DELIVERY"] = "nanomdm"
            env["ROLLOUT_NANOMDM_URL"] = self.nanomdm.base_url
            env["ROLLOUT_NANOMDM_API_KEY"] = NANOMDM_API_KEY
            env["ROLLOUT_WEBHOOK_SECRET"] = WEBHOOK_SECRET
        env.update(self._apple_env)
        env.update(self.cfg.engine_env)
        return env

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", *args],
            env=self.worker_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def start_worker(
        self,
        name: str = "w1",
        concurrency: int = 2,
        queues: str = "control,fanout",
        pool: str = "prefork",
    ) -> subprocess.Popen[bytes]:
        """A real Celery worker process."""
        return self._spawn(
            [
                "worker",
                "-n",
                f"{name}@%h",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "-P",
                pool,
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "-l",
                "WARNING",
            ],
            name,
        )

    def start_beat(self) -> subprocess.Popen[bytes]:
        """Celery beat, sending the controller tick and the sweep on schedule."""
        schedule = self.home / "beat-schedule"
        proc = self._spawn(["beat", "-s", str(schedule), "-l", "WARNING"], "beat")
        self._beats.append(proc)
        return proc

    def check_processes(self) -> None:
        """Raise if a worker or beat process died on its own (a killed one is removed)."""
        for proc in self.procs:
            code = proc.poll()
            if code is not None and code not in (0, -signal.SIGKILL, -signal.SIGTERM):
                raise RuntimeError(
                    f"a Celery process exited with {code}; see the logs in {self.home}"
                )

    def stop_processes(self) -> None:
        """Stop beat, then the workers: TERM to each main process, which shuts its pool down
        itself (TERM to a whole process group would kill the pool's children under it, and
        Celery logs each as an error); KILL to the group of any still alive after 10 s."""
        deadline = time.monotonic() + 10
        beats = [p for p in self.procs if p in self._beats]
        for group in (beats, [p for p in self.procs if p not in beats]):
            for proc in group:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs.clear()
        self._beats.clear()
