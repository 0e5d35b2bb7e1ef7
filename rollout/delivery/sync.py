"""The MDM server's own device list as an inventory: what ``rollout devices sync`` imports.

The listed devices go through the same parser and checks as an inventory file (``rollout
devices import``), so a UDID the server reports oddly is refused with its reason, never
stored half-checked. Only enrolled devices are taken: a device the server merely knows from
Apple's Device Enrollment list has no enrollment to send commands to. Push data is not
taken: the server wakes its devices, and a TokenUpdate through the webhook brings it when
rollout pushes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from rollout.delivery.server import ListedDevice
from rollout.inventory import DeviceRecord, read_inventory
from rollout.mdm.products import platform_of


@dataclass(frozen=True)
class SyncedList:
    """The server's list read as an inventory."""

    records: tuple[DeviceRecord, ...]
    refused: tuple[tuple[str, str], ...]  # (UDID as listed, why)
    not_enrolled: int


def inventory_of(devices: Sequence[ListedDevice]) -> SyncedList:
    """The enrolled devices of a server's list as inventory records (checked like an
    inventory file's rows), the ones refused with why, and how many were not enrolled."""
    enrolled = [d for d in devices if d.enrolled]
    if not enrolled:
        return SyncedList((), (), len(devices))
    lines = []
    for d in enrolled:
        row = {
            "udid": d.udid,
            "serial_number": d.serial_number,
            "os_version": d.os_version,
            "model": d.model or d.product_name,
            "device_name": d.device_name,
            "platform": platform_of(d.product_name, d.model),
        }
        lines.append(json.dumps({k: v for k, v in row.items() if v is not None}))
    report = read_inventory("\n".join(lines).encode(), fmt="jsonl", name="device list")
    refused = tuple((enrolled[e.line - 1].udid, e.reason) for e in report.errors)
    return SyncedList(report.records, refused, len(devices) - len(enrolled))
