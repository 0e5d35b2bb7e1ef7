"""Property tests: whatever bytes come in, the only exception is a ProfileError.

Its message, and a signature verdict's reason, are plain words: no library type names or debug
syntax, and no warning printed on the way.
"""

from __future__ import annotations

import datetime as dt
import warnings
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.profiles import Profile, ProfileError, parse_profile
from rollout.sim.profiles import (
    AppleLikeChain,
    make_apple_like_chain,
    make_profile,
    plist_bytes,
    profile_plist,
    sign_content,
)
from tests.profiles.test_errors import INTERNALS

_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def _chain() -> AppleLikeChain:
    return make_apple_like_chain(not_before=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))


@cache
def _plist() -> bytes:
    return plist_bytes(profile_plist(_chain(), kind="ad-hoc"))


@cache
def _samples() -> tuple[bytes, ...]:
    chain = _chain()
    created = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return (
        make_profile(chain, kind="ad-hoc", created_at=created),
        make_profile(chain, kind="enterprise", created_at=created, encoding="ber", digest="sha1"),
    )


def _parse_or_profile_error(data: bytes) -> None:
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        try:
            result = parse_profile(data, trust_anchors=[])
        except ProfileError as exc:
            assert str(exc) and "\n" not in str(exc)
            assert not INTERNALS.search(str(exc)), str(exc)
        else:
            assert isinstance(result, Profile)
            result.to_json()
            reason = result.signature.reason or ""
            assert not INTERNALS.search(reason), reason
    assert not shown, [str(w.message) for w in shown]


@_SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    _parse_or_profile_error(data)


@_SETTINGS
@given(st.binary(max_size=512))
def test_random_bytes_after_a_sequence_header(tail: bytes) -> None:
    _parse_or_profile_error(b"\x30\x80" + tail)
    _parse_or_profile_error(b"\x30" + bytes([min(len(tail), 127)]) + tail)


@_SETTINGS
@given(
    sample=st.integers(0, 1),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
)
def test_mutated_profiles(sample: int, edits: list[tuple[float, int]]) -> None:
    data = bytearray(_samples()[sample])
    for where, value in edits:
        data[int(where * len(data))] = value
    _parse_or_profile_error(bytes(data))


@_SETTINGS
@given(
    sample=st.integers(0, 1),
    cut=st.floats(0, 1),
    insert=st.binary(max_size=16),
)
def test_truncated_and_spliced_profiles(sample: int, cut: float, insert: bytes) -> None:
    data = _samples()[sample]
    at = int(cut * len(data))
    _parse_or_profile_error(data[:at])
    _parse_or_profile_error(data[:at] + insert + data[at:])


@_SETTINGS
@given(
    sample=st.integers(0, 1),
    edits=st.lists(st.tuples(st.integers(-700, 80), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_structure(sample: int, edits: list[tuple[int, int]]) -> None:
    """Edits in the outer headers (first bytes) and the signer info (last bytes)."""
    data = bytearray(_samples()[sample])
    for where, value in edits:
        data[where] = value
    _parse_or_profile_error(bytes(data))


_XMLISH = st.sampled_from(list(b'<>/=" \nkeystringdatatruefalsearraydictinteger0123456789+QUJD'))


@_SETTINGS
@given(
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.lists(_XMLISH, max_size=6)),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_signed_plists(edits: list[tuple[float, list[int]]]) -> None:
    """Broken plists that are properly signed reach the plist and field checks."""
    content = bytearray(_plist())
    for where, chars in edits:
        at = int(where * len(content))
        content[at : at + len(chars)] = bytes(chars)
    _parse_or_profile_error(sign_content(_chain(), bytes(content)))
