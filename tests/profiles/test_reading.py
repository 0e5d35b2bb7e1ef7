"""Reading a profile file a person names: any kind of path, never more than the cap allows."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.files import FileReadError, FileTooLargeError, read_capped
from rollout.profiles import MAX_PROFILE_BYTES, ProfileKind, parse_profile
from rollout.sim.profiles import AppleLikeChain, make_profile


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe whose read end is also reachable by path (``/proc/self/fd/N``), as a FIFO is."""
    read_end, write_end = os.pipe()
    try:
        yield read_end, write_end
    finally:
        for fd in (read_end, write_end):
            with contextlib.suppress(OSError):  # a test may have closed it already
                os.close(fd)


def test_a_profile_file_is_read_whole_and_parses(tmp_path: Path, chain: AppleLikeChain) -> None:
    data = make_profile(chain)
    path = tmp_path / "a.mobileprovision"
    path.write_bytes(data)
    assert read_capped(path, MAX_PROFILE_BYTES) == data
    assert read_capped(path, len(data)) == data  # exactly at the cap is fine
    assert parse_profile(read_capped(str(path), MAX_PROFILE_BYTES)).kind is ProfileKind.ENTERPRISE


def test_a_regular_file_over_the_cap_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "big.mobileprovision"
    path.write_bytes(b"\x30" * 101)
    with pytest.raises(
        FileTooLargeError, match=r"^.*big\.mobileprovision: 101 bytes is over the 100-byte limit$"
    ):
        read_capped(path, 100)


def test_dev_zero_stops_at_the_cap() -> None:
    with pytest.raises(FileTooLargeError) as info:
        read_capped("/dev/zero", MAX_PROFILE_BYTES)
    assert str(info.value) == f"/dev/zero: over the {MAX_PROFILE_BYTES}-byte limit"


def test_a_pipe_is_read_to_at_most_one_byte_past_the_cap(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    os.write(write_end, b"x" * 5000)  # fits in the pipe's buffer: no writer thread needed
    os.close(write_end)
    with pytest.raises(FileTooLargeError, match="over the 1000-byte limit"):
        read_capped(f"/proc/self/fd/{read_end}", 1000)
    # what the reader left behind is still in the pipe: it took exactly cap + 1 bytes
    assert len(os.read(read_end, 10_000)) == 5000 - 1001


def test_a_pipe_under_the_cap_is_read_to_its_end(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    os.write(write_end, b"abc" * 100)
    os.close(write_end)
    assert read_capped(f"/proc/self/fd/{read_end}", 1000) == b"abc" * 100


@pytest.mark.parametrize(
    ("name", "reason"),
    [("missing.mobileprovision", "No such file or directory"), (".", "Is a directory")],
)
def test_unreadable_paths_are_one_line_naming_the_path(
    tmp_path: Path, name: str, reason: str
) -> None:
    path = tmp_path / name
    with pytest.raises(FileReadError) as info:
        read_capped(path, MAX_PROFILE_BYTES)
    assert str(info.value) == f"{path}: {reason}"
    assert isinstance(info.value, OSError)  # callers that catch OSError keep working


def test_a_real_world_profile_read_through_the_cap_parses_as_before(realworld: Path) -> None:
    path = realworld / "profiles" / "icyleaf_app_info_ios_adhoc.mobileprovision"
    data = read_capped(path, MAX_PROFILE_BYTES)
    assert data == path.read_bytes()
    assert parse_profile(data).kind is ProfileKind.AD_HOC
