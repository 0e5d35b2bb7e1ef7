"""One beat at a time: the ledger's beat lock on each backend, and two real ``celery beat``
processes of which only the lock holder sends, the other taking over when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from rollout.config import EMBEDDED_BROKER_URL
from rollout.ledger import db
from rollout.ledger.singleton import SingletonLock, lock_key

REPO = Path(__file__).resolve().parents[2]
SENDING = "Sending due task controller-tick"


def test_one_holder_at_a_time_and_the_next_after_release(ledger_url: str) -> None:
    first, second = SingletonLock(ledger_url, "beat"), SingletonLock(ledger_url, "beat")
    other = SingletonLock(ledger_url, "another-singleton")
    try:
        assert first.try_acquire() and first.held and first.alive()
        assert not second.try_acquire() and not second.held
        assert other.try_acquire()  # a lock of another name is another lock
        first.release()
        assert not first.held and second.try_acquire()
        assert not first.try_acquire()
    finally:
        for lock in (first, second, other):
            lock.release()


@pytest.mark.postgres
def test_a_holder_whose_connection_dies_loses_the_lock_to_the_next(postgres_url: str) -> None:
    db.upgrade(postgres_url)
    holder, next_one = SingletonLock(postgres_url, "beat"), SingletonLock(postgres_url, "beat")
    engine = db.make_engine(postgres_url)
    try:
        assert holder.try_acquire()
        with engine.begin() as conn:  # the holder's session ends (its host vanished, say)
            # pg_locks spans the server: only this database's advisory lock of that key
            key = lock_key("beat")
            ended = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND database = (SELECT oid FROM pg_database"
                    "                 WHERE datname = current_database())"
                    " AND classid = :hi AND objid = :lo AND pid <> pg_backend_pid()"
                ),
                {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
            ).all()
        assert ended == [(True,)]
        assert not holder.alive() and not holder.held  # it notices, and lets go
        deadline = time.monotonic() + 10
        while not next_one.try_acquire():
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        holder.release()
        next_one.release()
        engine.dispose()


def _beat(tmp: Path, url: str, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        ROLLOUT_HOME=str(tmp / "home"),  # the embedded broker's folder: shared by both beats
        ROLLOUT_DATABASE_URL=url,
        ROLLOUT_BROKER_URL=EMBEDDED_BROKER_URL,
        ROLLOUT_TICK_INTERVAL_S="0.5",
        PYTHONUNBUFFERED="1",
    )
    log = tmp / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "beat",
             "-s", str(tmp / f"{name}-schedule"), "-l", "INFO"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return proc, log


def _wait_for(log: Path, words: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while words not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, f"{words!r} not in {log}: " + log.read_text()[-2000:]
        time.sleep(0.1)


@pytest.fixture
def beats(tmp_path: Path, ledger_url: str) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> tuple[subprocess.Popen[bytes], Path]:
        proc, log = _beat(tmp_path, ledger_url, name)
        started.append(proc)
        return proc, log

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_second_beat_stands_by_and_takes_over_when_the_first_dies(beats: object) -> None:
    first, first_log = beats("first")  # type: ignore[operator]
    _wait_for(first_log, "beat holds the lock", first)
    second, second_log = beats("second")  # type: ignore[operator]
    _wait_for(second_log, "another beat holds the lock: standing by", second)
    _wait_for(first_log, SENDING, first)
    time.sleep(2)  # several ticks' worth: the one standing by sends none
    assert SENDING not in second_log.read_text()

    os.killpg(first.pid, signal.SIGKILL)  # no goodbye: the lock goes with the process
    first.wait()
    _wait_for(second_log, "beat holds the lock", second, timeout=30)
    _wait_for(second_log, SENDING, second)
