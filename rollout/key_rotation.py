"""Ledger key rotation: re-seal every stored push secret with the current key.

The operator puts a new key first in ``ROLLOUT_LEDGER_KEYS`` (keeping the old ones after it),
restarts or reloads the processes, runs ``rollout keys rotate``, and drops the old keys once
:func:`census` shows nothing sealed with them. Values stored in plain text (a ledger from before
keys were configured) are sealed by the same pass.

Each page of devices is one short transaction, and a row is written only if it still holds
what was read, so rotation runs beside live check-ins and fan-out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rollout.ledger import Ledger, SealedRow
from rollout.ledger.sealing import Sealer, SealError, UnknownKeyError

PAGE = 1000


class RotationError(Exception):
    """Rotation cannot go on (no key to seal with, or a value sealed with a missing key)."""


@dataclass
class RotationReport:
    """What a rotation did."""

    key_id: str
    examined: int = 0  # devices holding a value not sealed with the current key
    resealed: int = 0
    changed_meanwhile: int = 0  # rewritten by a check-in between read and write: left alone
    unreadable: list[str] = field(default_factory=list)  # devices whose value does not open

    def as_json(self) -> dict[str, object]:
        """The report as a JSON object."""
        return {
            "key_id": self.key_id,
            "examined": self.examined,
            "resealed": self.resealed,
            "changed_meanwhile": self.changed_meanwhile,
            "unreadable": self.unreadable,
        }


@dataclass(frozen=True)
class KeyCensus:
    """How the ledger's push secrets are stored, against the configured keys."""

    current: str | None  # the key that seals, or None (values stored in plain text)
    configured: frozenset[str]
    columns: dict[str, dict[str, int]]  # column -> key id (or "plain") -> values

    def in_use(self) -> dict[str, int]:
        """Values per key id (and ``plain``), both columns together."""
        total: dict[str, int] = {}
        for counts in self.columns.values():
            for kid, n in counts.items():
                total[kid] = total.get(kid, 0) + n
        return total

    def missing(self) -> list[str]:
        """Key ids values are sealed with that are not configured (those values are lost
        until the key is given back)."""
        return sorted(k for k in self.in_use() if k != "plain" and k not in self.configured)

    def stale(self) -> int:
        """Values a rotation would still rewrite (plain, or sealed with an older key)."""
        if self.current is None:
            return 0
        return sum(n for k, n in self.in_use().items() if k != self.current)

    def retired(self) -> list[str]:
        """Configured keys no value needs any more (safe to drop after a rotation)."""
        used = self.in_use()
        return sorted(k for k in self.configured if k != self.current and not used.get(k))

    def as_json(self) -> dict[str, object]:
        """The census as a JSON object."""
        return {
            "current": self.current,
            "configured": sorted(self.configured),
            "columns": self.columns,
            "missing": self.missing(),
            "stale": self.stale(),
            "retired": self.retired(),
        }


def census(ledger: Ledger, sealer: Sealer) -> KeyCensus:
    """Count the stored push secrets by the key that seals them."""
    with ledger.sealed() as store:
        columns = store.census()
    return KeyCensus(sealer.current_id, sealer.key_ids, columns)


def rotate(
    ledger: Ledger,
    sealer: Sealer,
    *,
    page: int = PAGE,
    progress: Callable[[int], None] | None = None,
) -> RotationReport:
    """Re-seal every push secret not sealed with ``sealer``'s current key.

    Raises :class:`RotationError` when no key is configured, or when a value is sealed with a
    key ``sealer`` does not hold (nothing of that page is written).
    """
    current = sealer.current_id
    if current is None:
        raise RotationError("no ledger key is configured (ROLLOUT_LEDGER_KEYS): nothing to seal")
    report = RotationReport(current)
    after = 0
    while True:
        with ledger.sealed() as store:
            rows = store.not_sealed_with(current, after_id=after, limit=page)
            if not rows:
                break
            pairs: list[tuple[SealedRow, SealedRow]] = []
            for row in rows:
                try:
                    pairs.append((row, _resealed(sealer, row)))
                except UnknownKeyError as exc:
                    raise RotationError(
                        f"{exc}; add that key back to rotate away from it"
                    ) from None
                except SealError:
                    report.unreadable.append(row.owner)
            written = store.rewrite(pairs)
        after = rows[-1].device_id
        report.examined += len(rows)
        report.resealed += written
        report.changed_meanwhile += len(pairs) - written
        if progress is not None:
            progress(len(rows))
    return report


def _resealed(sealer: Sealer, row: SealedRow) -> SealedRow:
    token = sealer.open(row.push_token, "push_token", row.owner)
    magic = sealer.open(row.push_magic, "push_magic", row.owner)
    return SealedRow(
        row.device_id,
        row.owner,
        sealer.seal(token, "push_token", row.owner),
        sealer.seal(magic, "push_magic", row.owner),
    )
