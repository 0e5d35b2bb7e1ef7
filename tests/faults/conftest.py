"""Fault tests: real Celery worker processes, a Redis of their own, PostgreSQL, the APNs
stand-in and simulated devices answering over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.support import RedisServer
from tests.support import unavailable


@pytest.fixture
def redis_server(tmp_path: Path, redis_url: str) -> Iterator[RedisServer]:
    """A private Redis (the shared one proves Redis is installed and expected here)."""
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0:
        unavailable("redis-server (binary)", "not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rabbitmq_url() -> str:
    """The local RabbitMQ, when it runs."""
    url = os.environ.get("ROLLOUT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            pass
    except OSError as exc:
        unavailable("RabbitMQ", exc)
    return url
