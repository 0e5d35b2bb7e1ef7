"""Nothing a device sends can be too big for the ledger: every stored field is bounded, and the
parsers refuse what is over its bound, NaN or too deep before a report joins a batch."""

from __future__ import annotations

import pytest

from rollout import bounds
from rollout.ledger.models import Base

# --- the table ------------------------------------------------------------------------------


@pytest.mark.parametrize("column", sorted(bounds.COLUMNS))
def test_bounds_match_the_ledger_columns(column: str) -> None:
    table, name = column.split(".")
    assert Base.metadata.tables[table].c[name].type.length == bounds.COLUMNS[column]


def test_derived_bounds_fit_their_columns() -> None:
    assert bounds.PUSH_TOKEN_HEX == 2 * bounds.PUSH_TOKEN_BYTES
    assert max(bounds.UDID, bounds.ENROLLMENT_ID) <= bounds.COLUMNS["devices.enrollment_id"]
    assert max(bounds.UDID, bounds.ENROLLMENT_ID) <= bounds.ENROLLMENT_KEY
    # "<ErrorDomain>:<ErrorCode>" is a failed target's reason.
    longest_code = max(len(str(bounds.INTEGER_MIN)), len(str(bounds.INTEGER_MAX)))
    assert bounds.ERROR_DOMAIN + 1 + longest_code <= bounds.TARGET_REASON
