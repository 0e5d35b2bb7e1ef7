"""The embedded broker: kombu's filesystem transport, with messages written atomically.

kombu writes a message file in place, so a worker in another process can list and read it
before the last byte is written and fail on half a message. Here each message is written to a
hidden temporary name and renamed into the queue folder, which makes it appear whole or not at
all. Messages are taken (moved away) when read, so a worker that dies mid-task loses its
message; the ledger's dispatch deadline re-sends the batch, as it does for any lost message.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    """A filesystem channel whose ``_put`` is atomic (write, fsync-free rename)."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4()}")
        with open(partial, "wb") as f:
            f.write(str_to_bytes(dumps(payload)))
        os.replace(partial, final)


class Transport(filesystem.Transport):
    """The filesystem transport with :class:`Channel`."""

    Channel = Channel
