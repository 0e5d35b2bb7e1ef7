"""UDIDs in upper case

Every path now hands the ledger UDIDs in one canonical form (upper case), so the same device
reported in two cases is one device. Device-channel rows stored before (in any case) take the
canonical form too. A row whose upper-case key is already taken by another row is left as it
is: the two are the same device, known twice, and merging their histories is an operator's
decision (``rollout devices list`` shows both).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        UPDATE devices SET enrollment_id = upper(enrollment_id), udid = upper(udid)
        WHERE udid IS NOT NULL
          AND (enrollment_id <> upper(enrollment_id) OR udid <> upper(udid))
          AND NOT EXISTS (
              SELECT 1 FROM devices other
              WHERE other.id <> devices.id AND other.enrollment_id = upper(devices.enrollment_id)
          )
        """
    )


def downgrade() -> None:
    """Nothing to undo: upper-case UDIDs are valid in any earlier version."""
