"""sealed push secrets: room for a device's push token and push magic sealed at rest

- ``devices.push_token`` and ``devices.push_magic`` widen to hold values sealed with the
  operator's ledger key (AES-256-GCM, base64url, with the key's id in front). Values already
  stored stay as they are (plain text) until ``rollout keys rotate`` seals them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

# Sized as rollout.bounds.PUSH_TOKEN_STORED and PUSH_MAGIC_STORED were when this was written.
_TOKEN, _MAGIC = 316, 732


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.alter_column(
            "push_token", type_=sa.String(length=_TOKEN), existing_type=sa.String(length=200)
        )
        batch.alter_column(
            "push_magic", type_=sa.String(length=_MAGIC), existing_type=sa.String(length=128)
        )


def downgrade() -> None:
    # Sealed values do not fit the old widths: refuse while any remains.
    bind = op.get_bind()
    sealed = bind.execute(
        sa.text(
            "SELECT count(*) FROM devices WHERE push_token LIKE 's1.%' OR push_magic LIKE 's1.%'"
        )
    ).scalar_one()
    if sealed:
        raise RuntimeError(
            f"{sealed} device(s) hold sealed push secrets; they do not fit the old columns"
        )
    with op.batch_alter_table("devices") as batch:
        batch.alter_column(
            "push_token", type_=sa.String(length=200), existing_type=sa.String(length=_TOKEN)
        )
        batch.alter_column(
            "push_magic", type_=sa.String(length=128), existing_type=sa.String(length=_MAGIC)
        )
