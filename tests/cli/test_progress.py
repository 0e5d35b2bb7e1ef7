"""Long commands draw progress on a terminal's stderr, and only there: stdout, ``--json`` and
output read by scripts stay as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cli.support import _environment, rollout


def _on_a_terminal(
    args: list[str], home: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``rollout ARGS`` with stderr on a pseudo-terminal; exit code, stdout, terminal."""
    master, slave = os.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "rollout", *args],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            env={**_environment(home, None, env), "COLUMNS": "120"},
            timeout=120,
        )
    finally:
        os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other end is closed and drained
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    return proc.returncode, proc.stdout, screen.decode(errors="replace")


def test_an_import_draws_a_bar_on_a_terminal_and_nothing_elsewhere(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.csv"
    inventory.write_text("udid\n" + "".join(f"00008101-{i:016X}\n" for i in range(1, 6_001)))
    code, out, screen = _on_a_terminal(["devices", "import", str(inventory)], tmp_path)
    assert code == 0, screen
    assert out.startswith("6000 valid row(s): 6000 created")
    assert "importing devices" in screen and "6000/6000" in screen
    assert "importing" not in out

    code, out, screen = _on_a_terminal(["devices", "import", str(inventory), "--json"], tmp_path)
    assert code == 0 and json.loads(out)["updated"] == 6_000
    assert "importing" not in screen  # --json: no progress even on a terminal

    res = rollout("devices", "import", str(inventory), home=tmp_path)  # not a terminal
    assert res.returncode == 0 and "importing" not in res.stderr


def test_a_bench_shows_that_it_is_working_on_a_terminal(tmp_path: Path) -> None:
    nowhere = {"ROLLOUT_BENCH_POSTGRES_URL": "postgresql://postgres@127.0.0.1:9/postgres"}
    code, _, screen = _on_a_terminal(["bench", "status", "--size", "10"], tmp_path, nowhere)
    assert code == 1  # no PostgreSQL there: the spinner was drawn, then the one-line error
    assert "bench status" in screen and "PostgreSQL" in screen
