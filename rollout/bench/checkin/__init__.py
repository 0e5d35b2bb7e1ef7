"""Check-in benchmark: whole device cycles through the MDM endpoint on PostgreSQL.

One cycle is what a device does when a renewal is waiting for it: ``Idle`` → the server answers
with ``InstallProvisioningProfile`` (a real test-signed profile) → the device reports
``Acknowledged`` → the server persists it and answers with the empty body. Two HTTP requests,
both signed (``Mdm-Signature``), both verified by the server (identity mode ``strict`` with the
fleet's device CA).

Three processes, so no two share a GIL: this one (set-up and checks, :mod:`.run` and
:mod:`.fleet`), the server (uvicorn, one worker, the product's app: :mod:`.servers`) and the
load generator (:mod:`.load`), started as ``python -m rollout.bench.checkin ROLE``
(:mod:`.__main__`).

``baseline_checkins_per_s`` is a bare Starlette handler, measured in the same run by the same
generator: parse a ~1 KB plist, append one row to the ledger's journal in its own transaction,
answer 200. It is reported as requests/s; a product cycle is two requests.

The bench makes its own database (``rollout_bench_<hex>`` on the local server, or the server of
``ROLLOUT_BENCH_POSTGRES_URL``) and drops it afterwards.
"""

from rollout.bench.checkin.run import run_checkin_bench

__all__ = ["run_checkin_bench"]
