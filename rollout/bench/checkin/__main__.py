"""``python -m rollout.bench.checkin ROLE ...``: one of the bench's child processes.

Roles: ``serve-product CFG.json``, ``serve-baseline CFG.json`` (until SIGINT) and
``generate JOB.pickle OUT.json`` (the load generator; its measurements go to OUT.json).
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the role ``argv[0]`` names; the process's exit status."""
    role = argv[0] if argv else ""
    if role == "serve-product":
        from rollout.bench.checkin.servers import serve_product

        serve_product(json.loads(Path(argv[1]).read_text()))
    elif role == "serve-baseline":
        from rollout.bench.checkin.servers import serve_baseline

        serve_baseline(json.loads(Path(argv[1]).read_text()))
    elif role == "generate":
        from rollout.bench.checkin.load import generate

        # A pickle the parent bench wrote a moment ago into its own temporary folder.
        job = pickle.loads(Path(argv[1]).read_bytes())
        Path(argv[2]).write_text(json.dumps(generate(job)))
    else:
        print(f"unknown role {role!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
