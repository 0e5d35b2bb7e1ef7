"""How a command reaches a device and how its answer comes back.

Two ways, chosen by ``ROLLOUT_DELIVERY``; one deployment uses one:

* ``builtin``: rollout's own MDM endpoint serves its command queue and its APNs client wakes the
  devices (:func:`rollout.controller.push_batch`);
* ``nanomdm``: the fleet stays enrolled in an existing NanoMDM. A fan-out batch hands each
  target's command to NanoMDM's enqueue API under rollout's own CommandUUID and wakes the
  devices (:func:`rollout.delivery.handover.hand_over_batch`); answers come back through
  NanoMDM's webhook (:mod:`rollout.web.webhook`) into the same reconciliation as the built-in
  endpoint's; a periodic sweep (:mod:`rollout.delivery.sweep`) recovers answers whose webhook
  was lost and clears aborted rollouts' commands from NanoMDM's queue.

The engine above (planning, stages, gates, time-outs) does not know which one runs.
"""

from __future__ import annotations

from rollout.delivery.nanomdm import NanoMDMClient, NanoMDMError, server_from_settings

BUILTIN = "builtin"
NANOMDM = "nanomdm"
BACKENDS = (BUILTIN, NANOMDM)

__all__ = [
    "BACKENDS",
    "BUILTIN",
    "NANOMDM",
    "NanoMDMClient",
    "NanoMDMError",
    "server_from_settings",
]
