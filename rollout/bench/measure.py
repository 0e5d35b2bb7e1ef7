"""What the benches measure with: CPU seconds and peak memory of processes, read from /proc
(CPU is the steadier figure on a shared machine), and latency percentiles."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far; OSError when it
    is gone."""
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_s_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each of ``pids`` that can still be read."""
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            out[pid] = cpu_s(pid)
    return out


def cpu_s_since(before: dict[int, float], pids: Iterable[int]) -> float:
    """CPU seconds ``pids`` used since ``before`` (from :func:`cpu_s_by_pid`) was taken."""
    after = cpu_s_by_pid(pids)
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def _each_process(name: str) -> Iterator[tuple[int, bytes]]:
    """(pid, the contents of ``/proc/<pid>/<name>``) for every process that can still be read."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                yield int(entry), Path(f"/proc/{entry}/{name}").read_bytes()
            except OSError:
                continue  # it has exited since the listing


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for pid, stat in _each_process("stat"):
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(pid)
    return tree


def with_descendants(pids: Iterable[int]) -> list[int]:
    """``pids`` and every live process below them (a Celery worker's pool children, say)."""
    tree = _children()
    out: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def tree_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds used so far by ``pids`` and their live descendants."""
    return sum(cpu_s_by_pid(with_descendants(pids)).values())


def database_backends_cpu_s(database: str) -> float:
    """CPU seconds the PostgreSQL backends now connected to ``database`` have used since each
    started (backends that have already exited are not counted).

    Found by their process title (``postgres: user database host ...``), so reading it needs no
    connection of its own.
    """
    marker = f" {database} ".encode()
    backends = [
        pid
        for pid, cmd in _each_process("cmdline")
        if cmd.startswith(b"postgres: ") and marker in cmd
    ]
    return sum(cpu_s_by_pid(backends).values())


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mb(pids: Iterable[int]) -> dict[int, float]:
    """Peak resident set (VmHWM) in MB of ``pids`` and of all their live descendants."""
    out: dict[int, float] = {}
    for pid in with_descendants(pids):
        hwm = _vm_hwm_mb(pid)
        if hwm is not None:
            out[pid] = hwm
    return out


def latency_figures(times_ms: Sequence[float]) -> dict[str, float]:
    """``p50_ms``, ``p99_ms``, ``mean_ms`` and ``max_ms`` of latencies in milliseconds."""
    return {
        "p50_ms": round(percentile(times_ms, 0.50), 3),
        "p99_ms": round(percentile(times_ms, 0.99), 3),
        "mean_ms": round(sum(times_ms) / len(times_ms), 3) if times_ms else 0.0,
        "max_ms": round(max(times_ms), 3) if times_ms else 0.0,
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values`` by nearest rank; 0.0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
