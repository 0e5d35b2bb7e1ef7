"""commands: a CommandUUID is unique per device, no longer across the ledger

- ``commands`` drops the unique key on ``command_uuid`` for one on ``(command_uuid,
  device_id)``: a command handed to another MDM server (NanoMDM) for many devices in one call
  carries one CommandUUID for all of them, and each device's answer is still kept once, keyed
  by (CommandUUID, device) as the protocol does. The new key's first column still serves the
  lookups by CommandUUID.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 07:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("commands") as batch:
        batch.drop_constraint("uq_commands_command_uuid", type_="unique")
        batch.create_unique_constraint("uq_commands_command_uuid", ["command_uuid", "device_id"])


def downgrade() -> None:
    with op.batch_alter_table("commands") as batch:
        batch.drop_constraint("uq_commands_command_uuid", type_="unique")
        batch.create_unique_constraint("uq_commands_command_uuid", ["command_uuid"])
