"""What the CLI tests share: the real ``rollout`` command, run as an operator runs it.

:func:`rollout` runs the command's entry point (``rollout.cli.main``) in this process with its
own argv, environment and captured output: the same code path as the installed script, without
a Python start-up per command. :func:`rollout_process` runs it as a separate process, for the
cases where the process itself matters.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from rollout.cli import main
from rollout.config import get_settings


def _environment(home: Path, db_url: str | None, env: dict[str, str] | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    out.update(env or {})
    out["ROLLOUT_HOME"] = str(home)
    if db_url:
        out["ROLLOUT_DATABASE_URL"] = db_url
    return out


@contextlib.contextmanager
def _swapped_environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def rollout(
    *args: str, home: Path, db_url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``rollout ARGS`` with its own home, ledger and ``env`` settings only: exit code, stdout
    and stderr, as a finished process would give them."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    code = 0
    with _swapped_environment(_environment(home, db_url, env)):
        sys.argv = ["rollout", *args]
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.argv = argv
    return subprocess.CompletedProcess(["rollout", *args], code, out.getvalue(), err.getvalue())


def rollout_process(
    *args: str, home: Path, db_url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``rollout ARGS`` in a fresh process (see :func:`rollout`)."""
    return subprocess.run(
        [sys.executable, "-m", "rollout", *args],
        capture_output=True,
        text=True,
        env=_environment(home, db_url, env),
        timeout=120,
    )
