"""The Celery queues' names, shared by the workers (routing) and the web app (their depth).

``control`` carries the controller tick, the time-out sweep, the expiry scan and alert delivery;
``fanout`` carries the push batches.
"""

from __future__ import annotations

CONTROL_QUEUE = "control"
FANOUT_QUEUE = "fanout"
QUEUES = (CONTROL_QUEUE, FANOUT_QUEUE)
