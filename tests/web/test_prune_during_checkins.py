"""A prune in its own process while devices check in through the real app, on PostgreSQL:
no check-in fails or waits on it, no report is lost, and the old rollout's rows all go."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.bench.ledger import fill_block, seed_finished_rollout
from rollout.clock import SYSTEM_CLOCK
from rollout.ledger import Ledger, db
from rollout.mdm import parse_command
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain
from tests.support import checked_states
from tests.web.support import Device, Served, install_rollout, serve

OLD_TARGETS = 30_000
DEVICES = 24
THREADS = 4


@pytest.fixture
def pg_web(postgres_url: str, tmp_path: Path, device_ca: Issued) -> Iterator[Served]:
    db.upgrade(postgres_url)
    ledger = Ledger.open(postgres_url)
    server = serve(ledger, tmp_path, device_ca)
    try:
        yield Served(server.base_url, ledger, device_ca, server)
    finally:
        server.stop()
        ledger.dispose()


@pytest.mark.parametrize("by", ["rows", "partition"])
def test_checkins_go_on_while_a_prune_runs_in_another_process(
    pg_web: Served, postgres_url: str, profile_chain: AppleLikeChain, tmp_path: Path, by: str
) -> None:
    """``rows``: the running rollout shares the old one's partition block, which stays: rows
    are deleted in batches. ``partition``: the old rollout has a block of its own, detached
    and dropped while the devices check in."""
    ledger = pg_web.ledger
    long_ago = SYSTEM_CLOCK.now() - dt.timedelta(days=400)
    old = seed_finished_rollout(ledger, OLD_TARGETS, long_ago)
    if by == "partition":
        fill_block(ledger, long_ago)
    devices = [Device(pg_web, f"00008020-00000000000010{k:02d}") for k in range(DEVICES)]
    for d in devices:
        d.enroll()
    rid = install_rollout(pg_web, profile_chain, [d.udid for d in devices])

    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        ROLLOUT_HOME=str(tmp_path / "home"),
        ROLLOUT_DATABASE_URL=postgres_url,
        ROLLOUT_RETENTION_BATCH_SIZE="500",
        ROLLOUT_RETENTION_DUTY="1",  # flat out: the hardest case for the check-ins
    )
    prune = subprocess.Popen(
        [sys.executable, "-m", "rollout", "ledger", "prune", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    failures: list[str] = []
    during = [0] * THREADS  # check-ins answered while the prune process was running
    acknowledged: list[str] = []
    lock = threading.Lock()

    def device_loop(k: int) -> None:
        mine = devices[k::THREADS]
        pending = list(mine)
        while pending or prune.poll() is None:
            for d in list(pending) or mine:
                running = prune.poll() is None
                res = d.report("Idle")
                if res.status_code != 200:
                    failures.append(f"{d.udid} Idle: {res.status_code}")
                    continue
                if d in pending and res.content:
                    uuid = parse_command(res.content).command_uuid
                    ack = d.report("Acknowledged", uuid)
                    if ack.status_code != 200:
                        failures.append(f"{d.udid} Acknowledged: {ack.status_code}")
                        continue
                    pending.remove(d)
                    with lock:
                        acknowledged.append(uuid)
                if running and prune.poll() is None:
                    during[k] += 1
            if not pending and prune.poll() is not None:
                return

    threads = [threading.Thread(target=device_loop, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    out, err = prune.communicate(timeout=600)
    for t in threads:
        t.join(timeout=120)
    assert prune.returncode == 0, err
    report = json.loads(out)

    assert failures == []
    assert sum(during) >= DEVICES  # the check-ins really overlapped the prune
    assert report["deleted"] == {
        "commands": OLD_TARGETS,
        "events": OLD_TARGETS,
        "targets": OLD_TARGETS,
    }
    assert len(report["dropped"]) == (3 if by == "partition" else 0)
    with ledger.retention() as store:
        assert store.count_rollout_rows(old) == {"targets": 0, "commands": 0, "events": 0}
    # no report lost: every device's answer is in the ledger, counted once
    assert len(acknowledged) == DEVICES
    assert checked_states(ledger, rid) == {"acknowledged": DEVICES}
    with ledger.rollouts() as store:
        assert store.command_counts(rid) == {"acknowledged": DEVICES}
