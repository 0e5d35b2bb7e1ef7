"""The vocabulary of states shared by the ledger, the engine and the dashboards."""

from __future__ import annotations

from enum import StrEnum


class TargetState(StrEnum):
    """Where one device stands in one rollout."""

    PLANNED = "planned"
    QUEUED = "queued"
    PUSHED = "pushed"
    DELIVERED = "delivered"
    ACKNOWLEDGED = "acknowledged"
    VERIFIED = "verified"
    INELIGIBLE = "ineligible"
    DEFERRED = "deferred"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class RolloutState(StrEnum):
    """The life of a rollout."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    COMPLETED = "completed"
    ABORTED = "aborted"


class StageState(StrEnum):
    """Where one stage of a rollout stands."""

    PENDING = "pending"  # not reached yet
    RUNNING = "running"  # open to fan-out; its gate is judged each tick
    WAITING = "waiting"  # passed its gate; waits for an operator's approval (or the window)
    PASSED = "passed"
    FAILED = "failed"  # its gate failed: the rollout halted


class CommandStatus(StrEnum):
    """Where one queued MDM command stands for its device."""

    QUEUED = "queued"  # waiting for the device to connect
    SENT = "sent"  # handed to the device in a connect session, no answer yet
    NOT_NOW = "not_now"  # device answered NotNow; served again on a later Idle
    ACKNOWLEDGED = "acknowledged"
    ERROR = "error"
    COMMAND_FORMAT_ERROR = "command_format_error"
    INACTIVE = "inactive"  # dropped: re-enrollment or check-out before an answer
    WITHDRAWN = "withdrawn"  # cleared from another MDM server's queue (its rollout aborted)


#: Statuses after which a command is never served again.
FINAL_COMMAND_STATUSES = frozenset(
    {
        CommandStatus.ACKNOWLEDGED,
        CommandStatus.ERROR,
        CommandStatus.COMMAND_FORMAT_ERROR,
        CommandStatus.INACTIVE,
        CommandStatus.WITHDRAWN,
    }
)


class EnrollmentState(StrEnum):
    """The MDM enrollment of a device."""

    AUTHENTICATED = "authenticated"  # Authenticate seen, no TokenUpdate yet: not pushable
    ENROLLED = "enrolled"
    CHECKED_OUT = "checked_out"
    IMPORTED = "imported"  # known from an inventory import, never seen on the endpoint


class TokenState(StrEnum):
    """Whether a device's push token can be used."""

    MISSING = "missing"
    ACTIVE = "active"
    DEAD = "dead"  # APNs said 410 Unregistered or BadDeviceToken; lifted by a new TokenUpdate
