"""``rollout rollouts``: plan, create and drive staged rollouts, and read them back."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from rollout.cli.common import ACTOR, fail, ledger, now, print_json
from rollout.config import get_settings
from rollout.files import FileReadError, read_capped
from rollout.operations import (
    OperationError,
    abort_rollout,
    approve_stage,
    create_rollout,
    list_rollouts,
    pause_rollout,
    plan_rollout,
    resume_rollout,
    retry_targets,
    rollout_report,
    start_rollout,
)
from rollout.planning import PlanningError
from rollout.spec import RolloutSpec, SpecError, spec_from_mapping

app = typer.Typer(help="Staged rollouts of a profile to devices.", no_args_is_help=True)

MAX_ID_FILE_BYTES = 64 * 1024 * 1024
MAX_SPEC_BYTES = 1024 * 1024


def read_device_list(path: Path) -> list[str]:
    """UDIDs / EnrollmentIDs from a file: one per line (the first comma-separated field), or
    an inventory CSV with a header naming a ``udid`` or ``enrollment_id`` column."""
    try:
        text = read_capped(path, MAX_ID_FILE_BYTES).decode("utf-8-sig")
    except FileReadError as exc:
        fail(str(exc))
    except UnicodeDecodeError as exc:
        fail(f"{path}: not UTF-8 text (byte {exc.start})")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = [h.strip().lower() for h in lines[0].split(",")]
    if "udid" in header or "enrollment_id" in header:
        keys = []
        for row in csv.DictReader(io.StringIO("\n".join(lines))):
            norm = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            key = norm.get("udid") or norm.get("enrollment_id")
            if key:
                keys.append(key)
        return keys
    return [line.split(",")[0].strip() for line in lines]


def read_spec_file(path: Path) -> dict[str, Any]:
    """A spec file: YAML or JSON (JSON is YAML), a mapping at the top."""
    try:
        text = read_capped(path, MAX_SPEC_BYTES).decode("utf-8-sig")
        data = yaml.safe_load(text)
    except FileReadError as exc:
        fail(str(exc))
    except UnicodeDecodeError as exc:
        fail(f"{path}: not UTF-8 text (byte {exc.start})")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        fail(f"{path}: not YAML or JSON{where}")
    except RecursionError:
        fail(f"{path}: nested too deeply")
    if not isinstance(data, dict):
        fail(f"{path}: a spec is a mapping (profile, targets, stages, ...)")
    return data


def parse_gate_flag(text: str) -> dict[str, Any]:
    """``min_success_rate=0.95,max_failures=3,soak=30m,manual`` as a gate mapping."""
    gate: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            gate[key] = True  # a bare word is a flag (manual)
            continue
        value = value.strip()
        try:
            gate[key] = json.loads(value)
        except json.JSONDecodeError:
            gate[key] = value
    return gate


SpecFile = typer.Option(
    None, "--spec", metavar="FILE", help="A YAML or JSON spec; flags given too override it."
)
Profile = typer.Option(
    None,
    "--profile",
    metavar="UUID",
    help="The profile (UUID, or a unique start of one) to install or remove.",
)
Command = typer.Option(
    None, "--command", metavar="install|list|remove", help="What to send (default: install)."
)
Name = typer.Option(None, "--name", metavar="NAME", help="A name for the rollout.")
Devices = typer.Option(
    None,
    "--devices",
    metavar="FILE",
    help="A file of UDIDs / EnrollmentIDs (one per line, or a CSV inventory with a udid column).",
)
HoldersOf = typer.Option(
    None, "--holders-of", metavar="UUID", help="Devices known to hold this profile UUID."
)
Tags = typer.Option([], "--tag", metavar="TAG", help="Devices with this tag (repeatable: all).")
Platforms = typer.Option(
    [], "--platform", metavar="PLATFORM", help="Devices of this platform (repeatable: any)."
)
All = typer.Option(False, "--all", help="Every device in the registry (alone).")
Stages = typer.Option(
    None,
    "--stages",
    metavar="LIST",
    help="Cumulative stages, e.g. 1%,5%,25%,100% (the default) or 10,100%.",
)
Gate = typer.Option(
    None,
    "--gate",
    metavar="KEY=VALUE,...",
    help="Every stage's gate: min_success_rate=0.9, max_failures=N, min_final_share=0.9, "
    "soak=30m, manual.",
)
Rate = typer.Option(None, "--rate", metavar="N", help="At most N pushes per second.")
StartAt = typer.Option(None, "--start-at", metavar="TIME", help="Push nothing before (ISO 8601).")
Deadline = typer.Option(
    None, "--deadline", metavar="TIME", help="Give up on what is open by then (ISO 8601)."
)
Window = typer.Option(
    None,
    "--window",
    metavar="WINDOW",
    help="Promote stages only inside, e.g. 'Mon-Fri 09:00-17:00 Europe/Berlin'.",
)
Ttl = typer.Option(
    None, "--ttl", metavar="DURATION", help="A command not delivered by then is cancelled (3d)."
)
NoVerify = typer.Option(
    False, "--no-verify", help="Do not check installs with a ProvisioningProfileList."
)
Cleanup = typer.Option(
    None, "--cleanup", metavar="UUID", help="Once verified, remove this superseded profile."
)


def _spec(
    spec_file: Path | None,
    profile: str | None,
    command: str | None,
    name: str | None,
    devices_file: Path | None,
    holders_of: str | None,
    tags: list[str],
    platforms: list[str],
    all_devices: bool,
    stages: str | None,
    gate: str | None,
    rate: float | None,
    start_at: str | None,
    deadline: str | None,
    window: str | None,
    ttl: str | None,
    no_verify: bool,
    cleanup: str | None,
) -> RolloutSpec:
    data: dict[str, Any] = read_spec_file(spec_file) if spec_file is not None else {}
    flags = {
        "profile": profile,
        "command": command,
        "name": name,
        "stages": stages,
        "rate_limit": rate,
        "start_at": start_at,
        "deadline": deadline,
        "window": window,
        "command_ttl": ttl,
        "cleanup": cleanup,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if gate is not None:
        data["gate"] = parse_gate_flag(gate)
    if no_verify:
        data["verify"] = False
    targets = dict(data.get("targets") or {})
    if devices_file is not None:
        keys = read_device_list(devices_file)
        if not keys:
            fail(f"{devices_file}: no device listed")
        targets["devices"] = keys
    if holders_of is not None:
        targets["holders_of"] = holders_of
    if tags:
        targets["tags"] = list(tags)
    if platforms:
        targets["platforms"] = list(platforms)
    if all_devices:
        targets["all"] = True
    data["targets"] = targets
    try:
        return spec_from_mapping(data)
    except SpecError as exc:
        fail(str(exc))


@app.command()
def plan(
    spec_file: Path | None = SpecFile,
    profile: str | None = Profile,
    command: str | None = Command,
    name: str | None = Name,
    devices_file: Path | None = Devices,
    holders_of: str | None = HoldersOf,
    tags: list[str] = Tags,
    platforms: list[str] = Platforms,
    all_devices: bool = All,
    stages: str | None = Stages,
    gate: str | None = Gate,
    rate: float | None = Rate,
    start_at: str | None = StartAt,
    deadline: str | None = Deadline,
    window: str | None = Window,
    ttl: str | None = Ttl,
    no_verify: bool = NoVerify,
    cleanup: str | None = Cleanup,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A dry run: how many devices each stage would get, and why others are left out."""
    spec = _spec(
        spec_file,
        profile,
        command,
        name,
        devices_file,
        holders_of,
        tags,
        platforms,
        all_devices,
        stages,
        gate,
        rate,
        start_at,
        deadline,
        window,
        ttl,
        no_verify,
        cleanup,
    )
    try:
        with ledger() as opened:
            planned = plan_rollout(opened, spec, now(), server_wakes=get_settings().server_wakes)
    except (OperationError, PlanningError) as exc:
        fail(str(exc))
    data = planned.as_json()
    if as_json:
        print_json(data)
        return
    typer.echo(f"{data['eligible']} device(s) would get {spec.command}:")
    for stage in data["stages"]:  # type: ignore[attr-defined]
        typer.echo(f"  stage {stage['stage']} ({stage['reach']}): {stage['devices']}")
    for reason, n in data["excluded"].items():  # type: ignore[attr-defined]
        typer.echo(f"  excluded: {reason} {n}")


@app.command()
def create(
    spec_file: Path | None = SpecFile,
    profile: str | None = Profile,
    command: str | None = Command,
    name: str | None = Name,
    devices_file: Path | None = Devices,
    holders_of: str | None = HoldersOf,
    tags: list[str] = Tags,
    platforms: list[str] = Platforms,
    all_devices: bool = All,
    stages: str | None = Stages,
    gate: str | None = Gate,
    rate: float | None = Rate,
    start_at: str | None = StartAt,
    deadline: str | None = Deadline,
    window: str | None = Window,
    ttl: str | None = Ttl,
    no_verify: bool = NoVerify,
    cleanup: str | None = Cleanup,
    start: bool = typer.Option(False, "--start", help="Start it at once."),
    as_json: bool = typer.Option(False, "--json", help="Print the new rollout as JSON."),
) -> None:
    """Create a staged rollout (a draft unless --start).

    Choose the devices with --devices, --holders-of, --tag and --platform (they combine: a
    device must match every one given), or --all alone. Devices that cannot take the command
    are kept as ineligible, with the reason.
    """
    spec = _spec(
        spec_file,
        profile,
        command,
        name,
        devices_file,
        holders_of,
        tags,
        platforms,
        all_devices,
        stages,
        gate,
        rate,
        start_at,
        deadline,
        window,
        ttl,
        no_verify,
        cleanup,
    )
    try:
        with ledger() as opened:
            summary = create_rollout(
                opened,
                spec,
                actor=ACTOR,
                now=now(),
                start=start,
                server_wakes=get_settings().server_wakes,
            )
    except (OperationError, PlanningError) as exc:
        fail(str(exc))
    if as_json:
        print_json(summary.as_json())
    else:
        r = summary.rollout
        excluded = summary.states.get("ineligible", 0)
        typer.echo(
            f"rollout {r.id} ({r.state}): {sum(summary.states.values()) - excluded} targets"
            + (f", {excluded} ineligible" if excluded else "")
        )


RolloutId = typer.Argument(..., min=1, metavar="ID", help="The rollout's id.")


def _control(verb: str, done: str, action: Any) -> None:
    try:
        with ledger() as opened:
            result = action(opened)
    except OperationError as exc:
        fail(str(exc))
    typer.echo(done if result is not False else f"{verb}: nothing to do (already so)")


@app.command()
def start(rollout_id: int = RolloutId) -> None:
    """Start a draft rollout (the next controller tick pushes its first stage)."""
    _control(
        "start",
        f"rollout {rollout_id} running",
        lambda led: start_rollout(led, rollout_id, actor=ACTOR, now=now()),
    )


@app.command()
def pause(rollout_id: int = RolloutId) -> None:
    """Push nothing more until resumed (answers are still recorded)."""
    _control(
        "pause",
        f"rollout {rollout_id} paused",
        lambda led: pause_rollout(led, rollout_id, actor=ACTOR, now=now()),
    )


@app.command()
def resume(
    rollout_id: int = RolloutId,
    override: bool = typer.Option(
        False, "--override", help="Go on past the gate that halted it (its stage counts as passed)."
    ),
) -> None:
    """Go on pushing after a pause (a halted rollout needs --override)."""
    _control(
        "resume",
        f"rollout {rollout_id} running",
        lambda led: resume_rollout(led, rollout_id, actor=ACTOR, now=now(), override=override),
    )


@app.command()
def abort(rollout_id: int = RolloutId) -> None:
    """Stop for good: undelivered commands are cancelled, open targets end cancelled."""
    _control(
        "abort",
        f"rollout {rollout_id} aborted",
        lambda led: abort_rollout(led, rollout_id, actor=ACTOR, now=now()),
    )


@app.command()
def approve(rollout_id: int = RolloutId) -> None:
    """Promote a stage that passed its gate and waits for approval."""
    try:
        with ledger() as opened:
            stage = approve_stage(opened, rollout_id, actor=ACTOR, now=now())
    except OperationError as exc:
        fail(str(exc))
    typer.echo(f"rollout {rollout_id}: stage {stage} open")


@app.command()
def retry(
    rollout_id: int = RolloutId,
    reason: list[str] = typer.Option(
        [],
        "--reason",
        metavar="REASON",
        help="Only targets that ended for this reason, e.g. MCProvisioningProfileErrorDomain:25001 "
        "or no_answer (repeatable).",
    ),
) -> None:
    """Queue failed and timed-out targets again."""
    try:
        with ledger() as opened:
            n = retry_targets(
                opened, rollout_id, actor=ACTOR, now=now(), reasons=tuple(reason) or None
            )
    except OperationError as exc:
        fail(str(exc))
    typer.echo(f"rollout {rollout_id}: {n} target(s) queued again")


@app.command()
def show(
    rollout_id: int = RolloutId,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A rollout's state, each stage with its counts and gate verdict, and the reasons of side
    exits (all from kept counters)."""
    try:
        with ledger() as opened:
            report = rollout_report(opened, rollout_id, now())
    except OperationError as exc:
        fail(str(exc))
    if as_json:
        print_json(report)
        return
    r = report["rollout"]
    typer.echo(f"rollout {r['id']} {r['name']!r}: {r['state']} (profile {r['profile']})")
    if r.get("reason"):
        typer.echo(f"  {r['reason']}")
    for state, n in report["states"].items():
        typer.echo(f"  {state:14} {n}")
    for stage in report["stages"]:
        counts = ", ".join(f"{s} {n}" for s, n in stage["states"].items()) or "no targets"
        gate = stage["gate"]
        typer.echo(f"  stage {stage['stage']} ({stage['reach']}, {stage['state']}): {counts}")
        typer.echo(f"    gate: {gate['verdict']} - {gate['why']}")
    for key in ("ineligible", "unreachable", "timed_out"):
        for why, n in report.get(key, {}).items():
            typer.echo(f"  {key}: {why} {n}")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every rollout, newest first."""
    with ledger() as opened:
        rows = list_rollouts(opened)
    items = [
        {
            "id": r.id,
            "name": r.name,
            "state": r.state,
            "stage": r.current_stage,
            "profile": r.profile_uuid,
            "created_at": r.created_at.isoformat(),
        }
        for r in rows
    ]
    if as_json:
        print_json(items)
        return
    if not items:
        typer.echo("no rollouts yet")
        return
    typer.echo(f"{'id':>5}  {'state':10} {'stage':>5}  {'profile':36}  name")
    for i in items:
        typer.echo(
            f"{i['id']:>5}  {i['state']:10} {i['stage']:>5}  {i['profile'] or '-':36}  {i['name']}"
        )


WATCH_ENDS = ("completed", "aborted", "halted")


@app.command()
def watch(
    rollout_id: int = RolloutId,
    interval: float = typer.Option(
        1.0, "--interval", min=0.1, max=3600, help="Seconds between reads."
    ),
) -> None:
    """Live progress of a rollout, stage by stage (counts by state, gate verdicts), until it
    completes, is aborted or halts (Ctrl-C stops watching, not the rollout). Piped, it prints
    a line each time something changed."""
    console = Console()
    try:
        with ledger() as opened:
            if console.is_terminal:
                with Live(console=console, auto_refresh=False) as live:
                    for report in _reports(opened, rollout_id, interval):
                        live.update(_progress(report), refresh=True)
            else:
                last = ""
                for report in _reports(opened, rollout_id, interval):
                    line = _line(report)
                    if line != last:
                        typer.echo(line)
                        last = line
    except KeyboardInterrupt:
        return
    r = report["rollout"]
    typer.echo(f"rollout {r['id']} {r['state']}" + (f": {r['reason']}" if r.get("reason") else ""))


def _reports(opened: Any, rollout_id: int, interval: float) -> Any:
    """The rollout's report, read every ``interval`` seconds, up to the one where it ended."""
    while True:
        try:
            report = rollout_report(opened, rollout_id, now())
        except OperationError as exc:
            fail(str(exc))
        yield report
        if report["rollout"]["state"] in WATCH_ENDS:
            return
        time.sleep(interval)


def _line(report: dict[str, Any]) -> str:
    stages = " | ".join(
        f"stage {st['stage']} {st['state']}: "
        + (", ".join(f"{k} {v}" for k, v in st["states"].items()) or "-")
        for st in report["stages"]
    )
    return f"{now():%H:%M:%S} {report['rollout']['state']} | {stages}"


def _progress(report: dict[str, Any]) -> Table:
    r = report["rollout"]
    table = Table(title=f"rollout {r['id']} {r['name']!r}: {r['state']}", title_justify="left")
    for column in ("stage", "reach", "state", "targets by state", "gate"):
        table.add_column(column)
    for stage in report["stages"]:
        counts = ", ".join(f"{s} {n}" for s, n in stage["states"].items()) or "-"
        gate = stage["gate"]
        table.add_row(
            str(stage["stage"]),
            stage["reach"],
            stage["state"],
            counts,
            f"{gate['verdict']}: {gate['why']}",
        )
    return table
