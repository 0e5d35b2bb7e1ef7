"""The device registry: inventory imports, device reads and selections, installed profiles."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from rollout.inventory import COLUMNS, DeviceRecord
from rollout.ledger.journal import Journaled
from rollout.ledger.models import DeviceRow, InstalledProfileRow, ProfileRow, RolloutRow, TargetRow
from rollout.ledger.moves import chunks
from rollout.ledger.records import (
    DeviceFilter,
    DeviceInfo,
    DeviceTarget,
    Holding,
    ImportResult,
    InstalledProfile,
    PushData,
)
from rollout.ledger.sealing import PLAIN, Sealer
from rollout.ledger.upsert import upsert
from rollout.states import TokenState

# The record's fields that are device columns of the same name (profiles go to their own table).
_RECORD_COLUMNS = (
    "enrollment_type",
    *(c for c in COLUMNS if c not in ("enrollment_id", "profiles")),
)


def _info(row: DeviceRow) -> DeviceInfo:
    return DeviceInfo(
        id=row.id,
        enrollment_id=row.enrollment_id,
        udid=row.udid,
        enrollment_type=row.enrollment_type,
        state=row.enrollment_state,
        platform=row.platform,
        os_version=row.os_version,
        serial_number=row.serial_number,
        model=row.model,
        product_name=row.product_name,
        token_state=row.token_state,
        tags=tuple(row.tags or ()),
        last_seen_at=row.last_seen_at,
        topic=row.topic,
        has_push_token=row.push_token is not None,
        has_push_magic=row.push_magic is not None,
        identity_sha256=row.identity_sha256,
        access_rights=row.access_rights,
        device_name=row.device_name,
        enrolled_at=row.enrolled_at,
        checked_out_at=row.checked_out_at,
        token_dead_at=row.token_dead_at,
    )


class RegistryLedger(Journaled):
    """The device registry, inside one transaction."""

    def __init__(self, session: Session, sealer: Sealer = PLAIN) -> None:
        self._session = session
        self._sealer = sealer

    def import_devices(self, records: Sequence[DeviceRecord], now: dt.datetime) -> ImportResult:
        """Upsert ``records`` by enrollment id, in batches.

        A field the record leaves empty keeps the device's current value. A push token makes
        the device pushable again (its token state becomes active).
        """
        if not records:
            return ImportResult(0, 0, 0)
        s = self._session
        keys = [r.enrollment_id for r in records]
        existing = set(self.device_ids(keys))
        # Rows with the same set of given fields share one statement.
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            row: dict[str, Any] = {"enrollment_id": r.enrollment_id, "updated_at": now}
            for col in _RECORD_COLUMNS:
                value = getattr(r, col)
                if value is not None:
                    row[col] = list(value) if col == "tags" else value
            for secret in ("push_token", "push_magic"):
                if secret in row:
                    row[secret] = self._sealer.seal(row[secret], secret, r.enrollment_id)
            if r.push_token is not None:
                row["token_state"] = TokenState.ACTIVE.value
                row["token_dead_at"] = None
            groups[tuple(sorted(row))].append(row)
        table = DeviceRow.__table__
        for cols, rows in groups.items():
            for row in rows:
                row.setdefault("created_at", now)
            update = [c for c in cols if c not in ("enrollment_id", "created_at")]
            upsert(s, table, rows, keys=["enrollment_id"], update=update)

        facts = [(r.enrollment_id, p) for r in records for p in r.profiles]
        if facts:
            ids = self.device_ids(sorted({k for k, _ in facts}))
            upsert(
                s,
                InstalledProfileRow.__table__,
                [
                    {
                        "device_id": ids[key],
                        "profile_uuid": p.uuid,
                        "name": p.name,
                        "expires_at": p.expires_at,
                        "source": "import",
                        "seen_at": now,
                    }
                    for key, p in facts
                ],
                keys=["device_id", "profile_uuid"],
                update=["name", "expires_at", "source", "seen_at"],
            )
        created = len({k for k in keys if k not in existing})
        return ImportResult(created=created, updated=len(keys) - created, profiles=len(facts))

    def device_ids(self, keys: Sequence[str]) -> dict[str, int]:
        """Map UDIDs / EnrollmentIDs to device ids (unknown ones are left out)."""
        found: dict[str, int] = {}
        for chunk in chunks(list(keys)):
            for key, ident in self._session.execute(
                select(DeviceRow.enrollment_id, DeviceRow.id).where(
                    DeviceRow.enrollment_id.in_(list(chunk))
                )
            ):
                found[key] = ident
        return found

    def get(self, key: str) -> DeviceInfo | None:
        """The device with this UDID or EnrollmentID, or None."""
        row = self._session.scalar(select(DeviceRow).where(DeviceRow.enrollment_id == key))
        return _info(row) if row is not None else None

    def push_data(self, key: str) -> PushData | None:
        """The device's push token, push magic and topic, opened; None for an unknown device."""
        row = self._session.execute(
            select(DeviceRow.push_token, DeviceRow.push_magic, DeviceRow.topic).where(
                DeviceRow.enrollment_id == key
            )
        ).first()
        if row is None:
            return None
        token, magic, topic = row
        return PushData(
            token=self._sealer.open(token, "push_token", key),
            push_magic=self._sealer.open(magic, "push_magic", key),
            topic=topic,
        )

    def page(
        self, *, after_id: int = 0, limit: int = 100, where: DeviceFilter | None = None
    ) -> list[DeviceInfo]:
        """A page of devices in id order (keyset pagination from ``after_id``)."""
        q = (
            select(DeviceRow)
            .where(DeviceRow.id > after_id, self._matches(where or DeviceFilter()))
            .order_by(DeviceRow.id)
            .limit(limit)
        )
        return [_info(r) for r in self._session.scalars(q)]

    def select(
        self, where: DeviceFilter, *, after_id: int = 0, limit: int = 5000
    ) -> list[tuple[int, str]]:
        """``(id, enrollment id)`` of a page of matching devices (keyset from ``after_id``)."""
        q = (
            select(DeviceRow.id, DeviceRow.enrollment_id)
            .where(DeviceRow.id > after_id, self._matches(where))
            .order_by(DeviceRow.id)
            .limit(limit)
        )
        return [(i, k) for i, k in self._session.execute(q)]

    def count_by_state(self, where: DeviceFilter | None = None) -> dict[str, int]:
        """Matching devices by enrollment state."""
        q = (
            select(DeviceRow.enrollment_state, func.count())
            .where(self._matches(where or DeviceFilter()))
            .group_by(DeviceRow.enrollment_state)
        )
        return {state: int(n) for state, n in self._session.execute(q)}

    def holding(self, profile_uuid: str, device_ids: Sequence[int]) -> set[int]:
        """Which of ``device_ids`` are known to hold ``profile_uuid``."""
        found: set[int] = set()
        for chunk in chunks(list(device_ids)):
            found.update(
                self._session.scalars(
                    select(InstalledProfileRow.device_id).where(
                        InstalledProfileRow.profile_uuid == profile_uuid.lower(),
                        InstalledProfileRow.device_id.in_(list(chunk)),
                    )
                )
            )
        return found

    def lacking(
        self, profile_uuid: str, replacement_uuid: str | None, *, sample: int = 10
    ) -> tuple[int, list[str]]:
        """Devices that hold ``profile_uuid`` but not ``replacement_uuid`` (every holder when
        it is None): how many, and the keys of the first ``sample`` of them."""
        cond = InstalledProfileRow.profile_uuid == profile_uuid.lower()
        q = select(DeviceRow.enrollment_id).join(
            InstalledProfileRow, InstalledProfileRow.device_id == DeviceRow.id
        )
        q = q.where(cond)
        if replacement_uuid is not None:
            newer = aliased(InstalledProfileRow)
            q = q.where(
                ~exists().where(
                    newer.device_id == DeviceRow.id,
                    newer.profile_uuid == replacement_uuid.lower(),
                )
            )
        total = self._session.scalar(select(func.count()).select_from(q.subquery())) or 0
        keys = list(self._session.scalars(q.order_by(DeviceRow.enrollment_id).limit(sample)))
        return int(total), keys

    def installed(self, device_id: int) -> list[InstalledProfile]:
        """The profiles known to be on one device."""
        rows = self._session.scalars(
            select(InstalledProfileRow)
            .where(InstalledProfileRow.device_id == device_id)
            .order_by(InstalledProfileRow.profile_uuid)
        )
        return [
            InstalledProfile(r.profile_uuid, r.name, r.expires_at, r.source, r.seen_at)
            for r in rows
        ]

    def targets_of(self, device_id: int, *, limit: int = 200) -> list[DeviceTarget]:
        """One device's targets across rollouts, newest rollout first (at most ``limit``)."""
        rows = self._session.execute(
            select(TargetRow, RolloutRow.name, RolloutRow.state, RolloutRow.profile_uuid)
            .join(RolloutRow, RolloutRow.id == TargetRow.rollout_id)
            .where(TargetRow.device_id == device_id)
            .order_by(TargetRow.rollout_id.desc())
            .limit(limit)
        )
        return [
            DeviceTarget(
                rollout_id=t.rollout_id,
                rollout_name=name,
                rollout_state=state,
                profile_uuid=profile,
                target_id=t.id,
                stage=t.stage,
                state=t.state,
                reason=t.reason,
                push_count=t.push_count,
                notnow_count=t.notnow_count,
                error_chain=t.error_chain,
                updated_at=t.updated_at,
                finished_at=t.finished_at,
            )
            for t, name, state, profile in rows
        ]

    def expiring(self, horizon: dt.datetime) -> list[Holding]:
        """Profiles held by devices whose expiry (from the library, else the inventory) comes
        before ``horizon``, soonest first, with how many devices hold each."""
        expiry = func.coalesce(ProfileRow.expires_at, InstalledProfileRow.expires_at)
        rows = self._session.execute(
            select(
                InstalledProfileRow.profile_uuid,
                func.max(func.coalesce(ProfileRow.name, InstalledProfileRow.name)),
                func.max(ProfileRow.app_id),
                func.max(ProfileRow.team_id),
                func.min(expiry),
                func.count(),
            )
            .outerjoin(ProfileRow, ProfileRow.uuid == InstalledProfileRow.profile_uuid)
            .where(expiry.is_not(None), expiry <= horizon)
            .group_by(InstalledProfileRow.profile_uuid)
            .order_by(func.min(expiry))
        ).all()
        return [Holding(u, n, a, t, e, c) for u, n, a, t, e, c in rows]

    def _matches(self, where: DeviceFilter) -> ColumnElement[bool]:
        conds: list[ColumnElement[bool]] = []
        if where.states:
            conds.append(DeviceRow.enrollment_state.in_(list(where.states)))
        if where.platforms:
            conds.append(DeviceRow.platform.in_(list(where.platforms)))
        if where.keys is not None:
            conds.append(DeviceRow.enrollment_id.in_(list(where.keys)))
        if where.models:
            wanted = list(where.models)
            conds.append(or_(DeviceRow.model.in_(wanted), DeviceRow.product_name.in_(wanted)))
        if where.token_states:
            conds.append(DeviceRow.token_state.in_(list(where.token_states)))
        if where.key_prefix:
            # UDIDs are kept in upper case, EnrollmentIDs as given: either spelling matches
            given = {where.key_prefix, where.key_prefix.upper()}
            conds.append(_starts(DeviceRow.enrollment_id, given))
        if where.serial_prefix:
            conds.append(_starts(DeviceRow.serial_number, {where.serial_prefix}))
        if where.holders_of is not None:
            conds.append(
                exists().where(
                    InstalledProfileRow.device_id == DeviceRow.id,
                    InstalledProfileRow.profile_uuid == where.holders_of.lower(),
                )
            )
        for tag in where.tags:
            conds.append(self._has_tag(tag))
        return and_(true(), *conds)

    def _has_tag(self, tag: str) -> ColumnElement[bool]:
        if self._session.get_bind().dialect.name == "postgresql":
            return DeviceRow.tags.cast(JSONB).contains([tag])
        each = func.json_each(DeviceRow.tags).table_valued("value")
        return exists(select(1).select_from(each).where(each.c.value == tag))


def _starts(column: InstrumentedAttribute[Any], prefixes: set[str]) -> ColumnElement[bool]:
    """``column`` starts with one of ``prefixes``, case-sensitively on every backend (SQLite's
    LIKE is not)."""
    n = len(next(iter(prefixes)))
    return func.substr(column, 1, n).in_(sorted(prefixes))
