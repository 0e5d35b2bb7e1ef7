"""The periodic inventory sweep: every device is asked which provisioning profiles it holds.

The renewal scan is only as good as the inventory it reads. Installs the product made are known
once verified, but profiles put there by hand, by another MDM or by an older rollout are known
only from an import or from the devices themselves. A sweep is a rollout of
``ProvisioningProfileList`` to every device that can take it, in one stage without a gate (it
changes nothing on a device); each answer replaces what that device was known to hold. One is
opened when none is live and the last one is older than the sweep period.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rollout.ledger import Ledger
from rollout.operations import LIVE_STATES, OperationError, create_rollout
from rollout.planning import PlanningError
from rollout.spec import ONE_STAGE, RolloutSpec, TargetSpec

ACTOR = "inventory-sweep"


def sweep_if_due(
    ledger: Ledger, now: dt.datetime, every: dt.timedelta | None, *, server_wakes: bool = False
) -> dict[str, Any]:
    """Open an inventory sweep when one is due; what was done (``every`` None: sweeps off;
    ``server_wakes``: the MDM server rollout delivers through wakes the devices)."""
    if every is None:
        return {"sweep": "off"}
    with ledger.rollouts() as store:
        last = store.last_created_by(ACTOR)
    if last is not None and (last.state in LIVE_STATES or now - last.created_at < every):
        return {"sweep": "not due", "last": last.id, "state": last.state}
    spec = RolloutSpec(
        profile="",
        targets=TargetSpec(everything=True),
        command="list",
        name=f"inventory sweep {now:%Y-%m-%d}",
        stages=ONE_STAGE,
    )
    try:
        summary = create_rollout(
            ledger, spec, actor=ACTOR, now=now, start=True, server_wakes=server_wakes
        )
    except (OperationError, PlanningError) as exc:
        return {"sweep": "none", "why": str(exc)}
    return {"sweep": "opened", "rollout": summary.rollout.id}
