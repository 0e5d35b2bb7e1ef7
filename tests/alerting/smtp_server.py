"""A real SMTP server for tests: aiosmtpd on its own event loop in a thread, on a free port,
keeping the messages it accepts and refusing what it is told to."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult

from rollout.alerting import email as mail

PASSWORD = "pw-9d2e-hunter"


@dataclass
class Arrived:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: bytes | None


@dataclass
class Inbox:
    """The server's handler: answers RCPT and DATA as told, keeps what it accepts."""

    rcpt_reply: dict[str, str] = field(default_factory=dict)  # address -> refusal
    data_reply: str | None = None  # a refusal of every message
    arrived: list[Arrived] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_reply:
            return self.rcpt_reply[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self.data_reply
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login if session.authenticated else None
        self.arrived.append(Arrived(envelope.mail_from, list(envelope.rcpt_tos), message, login))
        return "250 Accepted"


class SmtpServer:
    """aiosmtpd on its own event loop in a thread, listening on a free port."""

    def __init__(self, inbox: Inbox, *, require_auth: bool = False) -> None:
        self.inbox = inbox
        self.loop = asyncio.new_event_loop()
        kwargs: dict[str, Any] = {"hostname": "mail.test"}
        if require_auth:
            kwargs.update(
                auth_required=True, auth_require_tls=False, authenticator=self._authenticate
            )

        def factory() -> asyncio.Protocol:
            return SMTP(inbox, loop=self.loop, **kwargs)

        self.server = self.loop.run_until_complete(self.loop.create_server(factory, "127.0.0.1", 0))
        self.port: int = self.server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def _authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        ok = auth_data.login == b"alerts" and auth_data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def settings(self, **overrides: Any) -> mail.SmtpSettings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "sender": "Rollout <rollout@fleet.example>",
            "recipients": ("ops@fleet.example", "oncall@fleet.example"),
            "starttls": False,
            "timeout": 10.0,
        }
        values.update(overrides)
        return mail.SmtpSettings(**values)
