"""``rollout tokens``: a token printed once, listed without it, revoked; bad input one line."""

from __future__ import annotations

import json
from pathlib import Path

from rollout import access
from rollout.clock import SYSTEM_CLOCK
from rollout.ledger import Ledger
from tests.cli.support import rollout


def test_create_list_revoke(tmp_path: Path, ledger_url: str) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        res = rollout(*args, home=tmp_path, db_url=ledger_url)
        return res.returncode, res.stdout, res.stderr

    code, out, err = run("tokens", "create", "--role", "operator", "--name", "ci-bot")
    assert code == 0 and "shown only now" in err
    token = out.strip()
    assert token.startswith("rlt_") and len(token) > 40
    code, out, _ = run("tokens", "list", "--json")
    [listed] = json.loads(out)
    assert listed["name"] == "ci-bot" and listed["role"] == "operator"
    assert token not in out and listed["revoked_at"] is None
    ledger = Ledger.open(ledger_url)
    try:
        who = access.authenticate(ledger, token, now=SYSTEM_CLOCK.now())
        assert who is not None and who.role == access.Role.OPERATOR
        assert run("tokens", "revoke", "ci-bot")[0] == 0
        assert access.authenticate(ledger, token, now=SYSTEM_CLOCK.now()) is None
    finally:
        ledger.dispose()
    code, _, err = run("tokens", "revoke", "ci-bot")
    assert code == 1 and err.strip() == "error: token ci-bot is already revoked"
    code, _, err = run("tokens", "create", "--role", "root", "--name", "x")
    assert code == 2 and err.strip() == "error: 'root' is not a role (use viewer, operator, admin)"
    code, _, err = run("tokens", "create", "--role", "viewer", "--name", "ci-bot")
    assert code == 1 and "exists already" in err
    code, _, err = run("tokens", "create", "--role", "viewer", "--name", "bad name!")
    assert code == 1 and "1 to 64 letters" in err and len(err.strip().splitlines()) == 1
