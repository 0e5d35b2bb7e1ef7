"""The MDM wire protocol without I/O: command plists, check-in and report parsing, identity.

Nothing here touches a database, an HTTP framework or the network; the web layer feeds bytes
and headers in and gets typed values (or :class:`MDMProtocolError` / :class:`IdentityError`) out.
"""

from rollout.mdm.bounded import JSONValue
from rollout.mdm.commands import (
    CommandTemplate,
    ParsedCommand,
    install_provisioning_profile,
    parse_command,
    provisioning_profile_list,
    remove_provisioning_profile,
    validate_command_uuid,
)
from rollout.mdm.errors import IdentityError, MDMProtocolError
from rollout.mdm.identity import (
    DeviceCATrust,
    IdentityConfig,
    VerifiedIdentity,
    cert_sha256,
    identify,
    parse_forwarded_client_cert,
    verify_mdm_signature,
)
from rollout.mdm.lean_report import parse_report
from rollout.mdm.messages import (
    MAX_BODY_BYTES,
    NOT_SERVED_CHECKINS,
    REPORT_KEYS,
    Authenticate,
    CheckinMessage,
    CheckinReply,
    CheckOut,
    CommandResult,
    Enrollment,
    ErrorChainItem,
    InstalledProfileItem,
    OtherCheckin,
    Status,
    TokenUpdate,
    checkin_reply,
    parse_checkin,
    parse_provisioning_profile_list,
    parse_result,
)
from rollout.mdm.verifier import IdentityVerifier

__all__ = [
    "MAX_BODY_BYTES",
    "NOT_SERVED_CHECKINS",
    "REPORT_KEYS",
    "Authenticate",
    "CheckOut",
    "CheckinMessage",
    "CheckinReply",
    "CommandResult",
    "CommandTemplate",
    "DeviceCATrust",
    "Enrollment",
    "ErrorChainItem",
    "IdentityConfig",
    "IdentityError",
    "IdentityVerifier",
    "InstalledProfileItem",
    "JSONValue",
    "MDMProtocolError",
    "OtherCheckin",
    "ParsedCommand",
    "Status",
    "TokenUpdate",
    "VerifiedIdentity",
    "cert_sha256",
    "checkin_reply",
    "identify",
    "install_provisioning_profile",
    "parse_checkin",
    "parse_command",
    "parse_forwarded_client_cert",
    "parse_provisioning_profile_list",
    "parse_report",
    "parse_result",
    "provisioning_profile_list",
    "remove_provisioning_profile",
    "validate_command_uuid",
    "verify_mdm_signature",
]
