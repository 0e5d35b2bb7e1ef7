"""How a command reaches a device and how its answer comes back.

Two ways, chosen by ``ROLLOUT_DELIVERY``; one deployment uses one:

* ``builtin``: rollout's own MDM endpoint serves its command queue and its APNs client wakes the
  devices (:func:`rollout.controller.push_batch`);
* ``nanomdm`` (or ``micromdm``): the fleet stays enrolled in an existing NanoMDM (MicroMDM).
  A fan-out batch hands its targets' command to the server's enqueue API under a CommandUUID
  of rollout's own and wakes the devices (:func:`rollout.delivery.handover.hand_over_batch`);
  answers come back through the server's webhook (:mod:`rollout.web.webhook`) into the same
  reconciliation as the built-in endpoint's; a periodic sweep (:mod:`rollout.delivery.sweep`)
  recovers answers whose webhook was lost and clears aborted rollouts' commands from the
  server's queue. Devices enrolled in the server before rollout was set up come from its
  device list where it has one (:mod:`rollout.delivery.sync`, MicroMDM's), else from their
  next TokenUpdate or an inventory; when the server wakes the devices, rollout needs no push
  data of theirs (:attr:`rollout.policy.EnginePolicy.server_wakes`).

The engine above (planning, stages, gates, time-outs) does not know which one runs.
"""

from __future__ import annotations

from rollout.delivery.micromdm import MicroMDMClient
from rollout.delivery.nanomdm import NanoMDMClient, NanoMDMError, server_from_settings
from rollout.delivery.server import IdResult, MDMServer, MDMServerError

BUILTIN = "builtin"
NANOMDM = "nanomdm"
MICROMDM = "micromdm"
BACKENDS = (BUILTIN, NANOMDM, MICROMDM)
BESIDE = (NANOMDM, MICROMDM)
"""Deliveries through another MDM server's API and webhook."""

__all__ = [
    "BACKENDS",
    "BESIDE",
    "BUILTIN",
    "MICROMDM",
    "NANOMDM",
    "IdResult",
    "MDMServer",
    "MDMServerError",
    "MicroMDMClient",
    "NanoMDMClient",
    "NanoMDMError",
    "server_from_settings",
]
