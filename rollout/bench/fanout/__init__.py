"""Fan-out benchmark: one rollout of N devices on PostgreSQL, Redis and two Celery workers.

Set-up (not timed): a database of its own on the local PostgreSQL (dropped afterwards), a Redis
database number of its own (flushed before and after), N devices with push tokens imported and a
started rollout created through the ledger API (:mod:`.fleet`), an APNs endpoint
(:mod:`.endpoint`), and two real ``celery worker`` processes (prefork) on the ``control`` and
``fanout`` queues (:mod:`.celery_workers`).

Timed (:mod:`.run`): from sending ``rollout.tick`` by name until every target is pushed or
beyond (``seconds_to_pushed``: its command queued and its push accepted), and until every target
is acknowledged in the ledger (``seconds_to_acknowledged``). Ticks are sent again, beat-like,
while planned targets remain and no tick is waiting in the control queue.

The APNs endpoint is nginx when ``/usr/sbin/nginx`` exists (HTTP/2 + TLS + client certificate,
``return 200``; it writes each pushed URI to a log the responder tails), because the Python
stand-in tops out near 3,500 pushes/s here and would measure itself; otherwise the stand-in runs
in this process and its ``on_push`` hook feeds the responder (``metrics.apns_server``).

Devices answer instantly (:mod:`.responder`): for each pushed token the responder reports
``Idle`` and then ``Acknowledged`` through the ledger's reconcile path
(``metrics.ack_path == "ledger"``).

``peak_rss_mb`` is the highest VmHWM (peak resident set) of any worker process or its pool
children, read from ``/proc/<pid>/status`` after the run; ``rss_mb`` lists them all.
"""

from rollout.bench.fanout.run import run_fanout_bench

__all__ = ["run_fanout_bench"]
