"""Alert notifications by e-mail: a plain-text message through an SMTP relay.

:func:`render` turns an alert into a subject and a body; :func:`send` hands one message to the
relay named in :class:`SmtpSettings` (STARTTLS and AUTH when configured) and says what came of
it as a :class:`DeliveryResult`. A 4xx reply, a lost connection or a time-out is worth another
attempt; a 5xx reply (the relay refused the sender, a recipient, the message or the login) is
permanent. The password never appears in an error or in the settings' repr.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import re
import smtplib
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from rollout.alerting.result import DeliveryResult, one_line
from rollout.clock import Clock

__all__ = ["DeliveryResult", "SmtpSettings", "build_message", "render", "send"]

SUBJECT_PREFIX = "[rollout]"
MAX_SUBJECT_CHARS = 200

_SPACE = re.compile(r"\s+")
_NEWLINES = re.compile(r"\r\n?")


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send alert e-mail.

    ``sender`` is the From address (``alerts@example.com`` or ``Rollout <alerts@...>``);
    ``recipients`` get every alert. ``username`` and ``password`` (both or neither) log in
    with AUTH. ``starttls`` upgrades the connection before anything else is said and refuses
    to go on when the relay does not offer it; turned off, a password would cross the network
    in the clear, so keep that to a relay on the same host. ``timeout`` is in seconds, per
    network operation.
    """

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.recipients, str):
            raise ValueError("recipients must be a tuple of addresses, not one string")
        object.__setattr__(self, "recipients", tuple(self.recipients))
        if not self.host:
            raise ValueError("the SMTP host must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"the SMTP port must be in 1..65535, not {self.port}")
        if not self.recipients:
            raise ValueError("at least one recipient is needed")
        for address in (self.sender, *self.recipients):
            if not address or any(c in address for c in "\r\n\0"):
                raise ValueError(f"not an e-mail address: {address!r}")
        if (self.username is None) != (self.password is None):
            raise ValueError("set both the SMTP username and password, or neither")
        if not self.timeout > 0:
            raise ValueError("the SMTP timeout must be positive")


def render(alert: Mapping[str, Any]) -> tuple[str, str]:
    """A subject line and a plain-text body for an alert.

    Reads ``kind``, ``severity``, ``title``, ``text``, ``key``, ``opened_at``, ``state`` and
    ``data`` (a mapping of details) when present; any other keys are listed after them. A
    notification that wraps the alert (``{"event": "resolved", "alert": {...}}``) is read the
    same way, with the event named in the subject. Missing or empty keys are left out, and
    values of any type are shown as text.
    """
    inner = alert.get("alert")
    if isinstance(inner, Mapping):
        alert = {**{k: v for k, v in alert.items() if k != "alert"}, **inner}
    title = _one_line(_show(alert.get("title")))
    text = _NEWLINES.sub("\n", _show(alert.get("text"))).strip("\n")
    kind = _one_line(_show(alert.get("kind")))
    severity = _one_line(_show(alert.get("severity")))
    event = _one_line(_show(alert.get("event")))
    if not title:
        title = _one_line(text.split("\n", 1)[0]) if text else (kind or "alert")

    subject = f"{SUBJECT_PREFIX} {severity.upper()}: {title}" if severity else title
    if not subject.startswith(SUBJECT_PREFIX):
        subject = f"{SUBJECT_PREFIX} {subject}"
    suffix = f" ({event})" if event else ""
    if len(subject) + len(suffix) > MAX_SUBJECT_CHARS:
        suffix = suffix[: MAX_SUBJECT_CHARS // 4]
        subject = subject[: MAX_SUBJECT_CHARS - len(suffix) - 1] + "…"
    subject += suffix

    lines = [title]
    if text and text != title:
        lines += ["", text]
    facts = [
        ("Severity", severity),
        ("Kind", kind),
        ("Event", event),
        ("State", _one_line(_show(alert.get("state")))),
        ("Key", _one_line(_show(alert.get("key")))),
        ("Opened at", _when(alert.get("opened_at"))),
    ]
    facts = [(name, value) for name, value in facts if value]
    if facts:
        lines.append("")
        lines += [f"{name}: {value}" for name, value in facts]

    data = alert.get("data")
    if isinstance(data, Mapping) and data:
        lines += ["", "Details:"]
        lines += _entries(data, indent="  ")
    elif data not in (None, "", [], ()) and not isinstance(data, Mapping):
        lines += ["", "Details:", _indented(_show(data), "  ")]

    known = {"kind", "severity", "title", "text", "key", "opened_at", "data", "event", "state"}
    rest = {k: v for k, v in alert.items() if k not in known and _show(v)}
    if rest:
        lines += ["", "Also:"]
        lines += _entries(rest, indent="  ")
    return subject, "\n".join(lines) + "\n"


def build_message(
    settings: SmtpSettings, subject: str, text: str, *, clock: Clock | None = None
) -> EmailMessage:
    """The message :func:`send` sends (``Date`` only when given a clock; else the relay adds it)."""
    message = EmailMessage()
    message["Subject"] = _one_line(subject)
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    if clock is not None:
        message["Date"] = email.utils.format_datetime(clock.now())
    domain = _envelope_sender(settings).rpartition("@")[2] or "rollout.invalid"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@{domain}>"
    # RFC 3834: a machine wrote this, so out-of-office replies should not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(_NEWLINES.sub("\n", text))
    return message


def send(
    settings: SmtpSettings, subject: str, text: str, *, clock: Clock | None = None
) -> DeliveryResult:
    """Send one message to every recipient; what came of it (never raises for a failure).

    When the relay takes the message for some recipients and refuses others, it counts as
    delivered (another attempt would repeat it to those who have it) and ``error`` names the
    refused ones.
    """
    hide = _secret_forms(settings)
    try:
        message = build_message(settings, subject, text, clock=clock)
    except (TypeError, ValueError) as exc:
        error = one_line(f"the message cannot be built: {exc}", hide=hide)
        return DeliveryResult(delivered=False, permanent=True, error=error)

    smtp = smtplib.SMTP(timeout=settings.timeout)
    try:
        code, reply = smtp.connect(settings.host, settings.port)
        if code != 220:
            return _reply_result("the server refused the connection", code, reply, hide)
        smtp.ehlo_or_helo_if_needed()
        if settings.starttls:
            if not smtp.has_extn("starttls"):
                error = (
                    "the server does not offer STARTTLS (turn starttls off only for a local relay)"
                )
                return DeliveryResult(delivered=False, permanent=True, error=error)
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if settings.username is not None and settings.password is not None:
            if not smtp.has_extn("auth"):
                error = "the server does not offer AUTH, but a username and password are set"
                return DeliveryResult(delivered=False, permanent=True, error=error)
            smtp.login(settings.username, settings.password)
        refused = smtp.send_message(
            message, from_addr=_envelope_sender(settings), to_addrs=list(settings.recipients)
        )
    except smtplib.SMTPRecipientsRefused as exc:
        return _refused_result(exc.recipients, hide)
    except smtplib.SMTPSenderRefused as exc:
        return _reply_result("the server refused the sender", exc.smtp_code, exc.smtp_error, hide)
    except smtplib.SMTPAuthenticationError as exc:
        return _reply_result("login failed", exc.smtp_code, exc.smtp_error, hide)
    except smtplib.SMTPDataError as exc:
        return _reply_result("the server refused the message", exc.smtp_code, exc.smtp_error, hide)
    except smtplib.SMTPResponseException as exc:
        return _reply_result("the server refused", exc.smtp_code, exc.smtp_error, hide)
    except smtplib.SMTPNotSupportedError as exc:
        error = one_line(f"the server does not support what is needed: {exc}", hide=hide)
        return DeliveryResult(delivered=False, permanent=True, error=error)
    except smtplib.SMTPServerDisconnected as exc:
        error = one_line(f"the server closed the connection: {exc}", hide=hide)
        return DeliveryResult(delivered=False, permanent=False, error=error)
    except ssl.SSLCertVerificationError as exc:
        error = one_line(f"the server's TLS certificate is not trusted: {exc}", hide=hide)
        return DeliveryResult(delivered=False, permanent=True, error=error)
    except TimeoutError:
        error = f"timed out after {settings.timeout:g}s talking to {settings.host}"
        return DeliveryResult(delivered=False, permanent=False, error=one_line(error, hide=hide))
    except OSError as exc:  # connection errors, TLS errors, and any other smtplib error
        error = one_line(f"{type(exc).__name__}: {exc}", hide=hide)
        return DeliveryResult(delivered=False, permanent=False, error=error)
    finally:
        _close(smtp)

    if refused:
        error = "delivered, but refused for " + "; ".join(
            f"{address} ({_reply_text(code, reply)})" for address, (code, reply) in refused.items()
        )
        return DeliveryResult(
            delivered=True, permanent=False, status=250, error=one_line(error, hide=hide)
        )
    return DeliveryResult(delivered=True, permanent=False, status=250)


# --- helpers --------------------------------------------------------------------------------


def _reply_result(
    what: str, code: int, reply: bytes | str, hide: tuple[str, ...]
) -> DeliveryResult:
    """A refusal by reply code: 5xx permanent, anything else worth another attempt."""
    error = one_line(f"{what}: {_reply_text(code, reply)}", hide=hide)
    return DeliveryResult(
        delivered=False, permanent=500 <= code < 600, status=code if code > 0 else None, error=error
    )


def _refused_result(
    recipients: Mapping[str, tuple[int, bytes | str]], hide: tuple[str, ...]
) -> DeliveryResult:
    """Every recipient refused: permanent only when every refusal is a 5xx."""
    codes = [code for code, _ in recipients.values()]
    permanent = bool(codes) and all(500 <= code < 600 for code in codes)
    status = max(codes) if codes else None
    listed = "; ".join(
        f"{address} ({_reply_text(code, reply)})" for address, (code, reply) in recipients.items()
    )
    error = one_line(f"the server refused every recipient: {listed}", hide=hide)
    return DeliveryResult(delivered=False, permanent=permanent, status=status, error=error)


def _reply_text(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {text}".strip()


def _close(smtp: smtplib.SMTP) -> None:
    """Say QUIT if still connected; a failure to do so changes nothing about the delivery."""
    try:
        if smtp.sock is not None:
            smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


def _envelope_sender(settings: SmtpSettings) -> str:
    return email.utils.parseaddr(settings.sender)[1] or settings.sender


def _secret_forms(settings: SmtpSettings) -> tuple[str, ...]:
    """The password as it could appear in a message (plain, or base64 as AUTH sends it)."""
    password = settings.password
    if not password:
        return ()
    user = settings.username or ""
    forms = [password]
    for raw in (password, f"\0{user}\0{password}", f"{user}\0{password}"):
        forms.append(base64.b64encode(raw.encode("utf-8")).decode("ascii"))
    return tuple(forms)


def _one_line(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _show(value: object) -> str:
    """A value as text: strings as they are, times in ISO 8601, containers as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping | list | tuple):
        try:
            return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _when(value: object) -> str:
    """``opened_at`` as text: a number is taken as unix seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            return str(value)
    return _one_line(_show(value))


def _entries(mapping: Mapping[Any, Any], *, indent: str) -> list[str]:
    """``name: value`` lines, sorted by name; a multi-line value continues indented."""
    lines = []
    for name, value in sorted(mapping.items(), key=lambda item: str(item[0])):
        shown = _NEWLINES.sub("\n", _show(value)).strip("\n")
        first, _, more = shown.partition("\n")
        lines.append(f"{indent}{_one_line(str(name))}: {first}".rstrip())
        if more:
            lines.append(_indented(more, indent * 2))
    return lines


def _indented(text: str, indent: str) -> str:
    return "\n".join(indent + line for line in _NEWLINES.sub("\n", text).split("\n"))
