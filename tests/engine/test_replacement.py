"""What may replace a profile: each rule on its own, and the longest-lived fit is chosen."""

from __future__ import annotations

import dataclasses
import datetime as dt

from rollout.clock import ManualClock
from rollout.ledger import Ledger, ProfileEntry
from rollout.replacement import choose, why_not
from tests.engine.support import expiring
from tests.support import add_profile


def pair(ledger: Ledger, clock: ManualClock) -> tuple[ProfileEntry, ProfileEntry]:
    return expiring(ledger, clock.now(), 20), add_profile(ledger, clock.now())


def test_each_rule_refuses_on_its_own(clock: ManualClock, ledger: Ledger) -> None:
    old, new = pair(ledger, clock)
    now = clock.now()
    assert why_not(old, new, now) is None
    cases = {
        "same profile": dataclasses.replace(new, uuid=old.uuid),
        "another team": dataclasses.replace(new, team_id="ZZZZZ99999"),
        "another application identifier": dataclasses.replace(new, app_id="ABCDE12345.com.x.*"),
        "only signs store submissions": dataclasses.replace(new, kind="app-store"),
        "expired": dataclasses.replace(new, expires_at=now - dt.timedelta(days=1)),
        "does not outlive": dataclasses.replace(new, expires_at=old.expires_at),
        "signature is broken": dataclasses.replace(new, signature_valid=False),
        "does not chain": dataclasses.replace(new, chain_trusted=False),
        "does not cover": dataclasses.replace(new, platforms=("OSX",)),
    }
    for words, candidate in cases.items():
        reason = why_not(old, candidate, now)
        assert reason is not None and words in reason, (words, reason)


def test_the_longest_lived_fit_is_chosen_and_the_rest_say_why(
    clock: ManualClock, ledger: Ledger
) -> None:
    old, new = pair(ledger, clock)
    later = dataclasses.replace(new, uuid="later", expires_at=new.expires_at + dt.timedelta(days=9))
    foreign = dataclasses.replace(new, uuid="foreign", team_id="ZZZZZ99999")
    choice = choose(old, [new, later, foreign, old], clock.now())
    assert choice.replacement == later
    assert choice.rejected == {
        new.uuid: "later lives longer",
        "foreign": choice.rejected["foreign"],
    }
    assert "another team" in choice.rejected["foreign"]
    assert choose(old, [foreign], clock.now()).replacement is None
