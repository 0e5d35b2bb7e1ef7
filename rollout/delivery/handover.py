"""A fan-out batch handed to NanoMDM: each target's command goes into NanoMDM's queue under
rollout's own CommandUUID, and the devices are woken (by NanoMDM, or by rollout's own APNs
client when it holds the push certificate).

The rollout's command is the same for every device but its CommandUUID, so up to the
server's ``max_ids_per_call`` devices (200 for NanoMDM, 1 for MicroMDM) share one CommandUUID
and one enqueue call (NanoMDM keys answers
by enrollment and CommandUUID, and so does the ledger).

A command is marked handed (``sent``) only once NanoMDM took it, so a batch that fails half
way is handed again without loss: the targets NanoMDM did not take keep their queued command
and are tried again after ``transient_retry``. A target whose command is already in NanoMDM's
queue (a re-push, or after NotNow) is only woken.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from rollout.apns import Outcome, PushClient, PushRequest, PushResult
from rollout.apns.errors import DEAD_TOKEN_REASONS
from rollout.clock import Clock
from rollout.controller import record_push_results, split_pushable
from rollout.delivery.server import IdResult, MDMServer, MDMServerError
from rollout.ledger import CheckinStore, Ledger, OpenCommand, PushTarget
from rollout.mdm import provisioning_profile_list, remove_provisioning_profile
from rollout.mdm.commands import CommandTemplate, install_provisioning_profile
from rollout.policy import EnginePolicy
from rollout.spec import RolloutOptions
from rollout.states import CommandStatus

ENQUEUE_THREADS = 8
"""Enqueue calls in flight at once."""


def rollout_template(store: CheckinStore, rollout_id: int) -> CommandTemplate:
    """The command a rollout sends, rendered once (only the CommandUUID differs per device)."""
    facts = store.rollout_facts([rollout_id]).get(rollout_id)
    opts = RolloutOptions.from_json(facts.options if facts else None)
    if opts.command == "list":
        return provisioning_profile_list()
    if opts.command == "remove":
        if not opts.remove_uuid:
            raise LookupError(f"rollout {rollout_id} names no profile to remove")
        return remove_provisioning_profile(opts.remove_uuid)
    content = store.rollout_profile(rollout_id)
    if content is None:
        raise LookupError(f"rollout {rollout_id} has no profile")
    return install_provisioning_profile(content)


def hand_over_batch(
    ledger: Ledger,
    server: MDMServer,
    rollout_id: int,
    target_ids: Sequence[int],
    policy: EnginePolicy,
    clock: Clock,
    *,
    pusher: PushClient | None = None,
) -> dict[str, int]:
    """Hand one batch's commands to NanoMDM and wake its devices; record every outcome.

    With ``pusher`` rollout wakes the devices itself (``nopush=1`` on enqueue); without it
    NanoMDM pushes. Idempotent like :func:`rollout.controller.push_batch`: answered targets
    are skipped, a command NanoMDM already holds is not queued twice.
    """
    with ledger.fanout() as store:
        targets = store.push_targets(target_ids)
        # NanoMDM pushing needs no push data in rollout's ledger; rollout pushing does
        jobs, lost, skipped = split_pushable(targets, need_push_data=pusher is not None)
        store.move(lost, clock.now())
    with ledger.delivery() as delivery:
        commands = delivery.open_commands([j.target_id for j in jobs])
    template: CommandTemplate | None = None
    if any(c.status == CommandStatus.QUEUED and c.body is None for c in commands.values()):
        with ledger.checkin() as checkin:
            template = rollout_template(checkin, rollout_id)

    fresh = [c for c in commands.values() if c.status == CommandStatus.QUEUED]
    calls = _calls(ledger, fresh, template, server.max_ids_per_call)
    queued = _enqueue_all(server, calls, push=pusher is None)
    handed = [c.command_id for c in fresh if queued[c.target_id].command_error is None]

    results: dict[int, PushResult] = {}
    for c in fresh:
        res = queued[c.target_id]
        if res.command_error is not None:
            results[c.target_id] = _transient(c, res.command_error)
        elif pusher is None:
            # queued; a push that failed is tried again later (the command is not re-queued)
            results[c.target_id] = _push_outcome(c, res)
    wake = [
        c
        for c in commands.values()
        if c.target_id not in results and (pusher is not None or c.status != CommandStatus.QUEUED)
    ]
    results.update(_wake(server, pusher, wake, {j.target_id: j for j in jobs}))
    now = clock.now()
    with ledger.delivery() as delivery:
        delivery.mark_handed(handed, now)
    sent = [j for j in jobs if j.target_id in results]
    with ledger.fanout() as store:
        tally = record_push_results(
            store, rollout_id, sent, [results[j.target_id] for j in sent], policy, now
        )
    out = dict(tally)
    out["handed"] = len(handed)
    out["skipped"] = skipped + len(lost) + len(jobs) - len(sent)
    return out


def _calls(
    ledger: Ledger, fresh: Sequence[OpenCommand], template: CommandTemplate | None, per_call: int
) -> list[tuple[bytes, list[OpenCommand]]]:
    """The enqueue calls for a batch's new commands: the rollout's own command goes to up to
    ``per_call`` devices a call under one CommandUUID (given to their command rows
    first, so an answer that comes back at once finds them); a command with a body of its own
    (a verification) goes alone."""
    shared = [c for c in fresh if c.body is None]
    calls: list[tuple[bytes, list[OpenCommand]]] = [
        (c.body, [c]) for c in fresh if c.body is not None
    ]
    groups = [shared[i : i + per_call] for i in range(0, len(shared), per_call)]
    if groups:
        named = [(str(uuidlib.uuid4()).upper(), group) for group in groups]
        with ledger.delivery() as delivery:
            for command_uuid, group in named:
                delivery.share_command_uuid(group, command_uuid)
        calls.extend((_render(template, uuid), group) for uuid, group in named)
    return calls


def _enqueue_all(
    server: MDMServer, calls: Sequence[tuple[bytes, list[OpenCommand]]], *, push: bool
) -> dict[int, IdResult]:
    """Each call made (several at once); each target's result, a call that fails as a whole
    being the error of every one of its targets."""

    def one(call: tuple[bytes, list[OpenCommand]]) -> list[tuple[int, IdResult]]:
        body, group = call
        try:
            answer = server.enqueue([c.enrollment_id for c in group], body, push=push)
        except MDMServerError as exc:
            return [(c.target_id, IdResult(command_error=str(exc))) for c in group]
        missing = IdResult(command_error="no answer")
        return [(c.target_id, answer.get(c.enrollment_id, missing)) for c in group]

    if not calls:
        return {}
    with ThreadPoolExecutor(max_workers=min(ENQUEUE_THREADS, len(calls))) as pool:
        return {tid: res for part in pool.map(one, calls) for tid, res in part}


def _render(template: CommandTemplate | None, command_uuid: str) -> bytes:
    if template is None:
        raise LookupError("a rollout command without its rollout's template")
    return template.render(command_uuid)


def _wake(
    server: MDMServer,
    pusher: PushClient | None,
    commands: Sequence[OpenCommand],
    jobs: dict[int, PushTarget],
) -> dict[int, PushResult]:
    """Wake the devices of commands NanoMDM holds: through rollout's APNs client, or with
    NanoMDM's push API (many ids per call)."""
    if not commands:
        return {}
    if pusher is not None:
        requests = [
            PushRequest(
                token=jobs[c.target_id].token or "",
                push_magic=jobs[c.target_id].push_magic or "",
                topic=jobs[c.target_id].topic,
            )
            for c in commands
        ]
        return dict(zip((c.target_id for c in commands), pusher.push_many(requests), strict=True))
    try:
        answers = server.push([c.enrollment_id for c in commands])
    except MDMServerError as exc:
        return {c.target_id: _transient(c, str(exc)) for c in commands}
    return {
        c.target_id: _push_outcome(c, answers.get(c.enrollment_id, IdResult(push_error="none")))
        for c in commands
    }


def _push_outcome(c: OpenCommand, res: IdResult) -> PushResult:
    """NanoMDM's word on one push: sent; a token APNs says is dead (its reason in the error
    text: the target is unreachable until the device's next TokenUpdate); anything else is
    tried again later."""
    if res.push_error is None:
        return _pushed(c, res)
    dead = next((r for r in sorted(DEAD_TOKEN_REASONS) if r in res.push_error), None)
    if dead is not None:
        return PushResult(
            token=c.enrollment_id, apns_id="", outcome=Outcome.DEAD_TOKEN, status=410, reason=dead
        )
    return _transient(c, res.push_error)


def _pushed(c: OpenCommand, res: IdResult) -> PushResult:
    return PushResult(token=c.enrollment_id, apns_id=res.push_result or "", outcome=Outcome.SUCCESS)


def _transient(c: OpenCommand, why: str) -> PushResult:
    return PushResult(
        token=c.enrollment_id, apns_id="", outcome=Outcome.TRANSIENT, reason=why[:200]
    )
