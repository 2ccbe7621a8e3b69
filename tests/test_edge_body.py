"""The body edge alone: content types, encodings, caps (no Redis needed)."""

from __future__ import annotations

import gzip

import pytest
import zstandard

from strictgate.errors import ApiError
from strictgate.ingest.body import _gunzip, _unzstd


def _status(fn: object, *args: object) -> int:
    with pytest.raises(ApiError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.status


def test_gzip_multi_member_and_truncated() -> None:
    assert _gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 10) == b"abcd"
    assert _status(_gunzip, gzip.compress(b"abcdefgh" * 100)[:-5], 10_000) == 400
    assert _status(_gunzip, b"not gzip at all", 10_000) == 400


def test_zstd_multi_frame_and_truncated() -> None:
    c = zstandard.ZstdCompressor()
    assert _unzstd(c.compress(b"hello ") + c.compress(b"world"), 100) == b"hello world"
    assert _status(_unzstd, c.compress(b"hello world" * 50)[:-3], 10_000) == 400
    assert _status(_unzstd, b"garbage!", 10_000) == 400


def test_bombs_stop_at_the_cap_across_members_and_frames() -> None:
    cap = 1_000_000
    part = b"a" * 600_000
    assert _status(_gunzip, gzip.compress(part) + gzip.compress(part), cap) == 413
    c = zstandard.ZstdCompressor()
    assert _status(_unzstd, c.compress(part) + c.compress(part), cap) == 413
    assert _status(_unzstd, c.compress(b"\0" * 50_000_000), cap) == 413
    assert _status(_gunzip, gzip.compress(b"\0" * 50_000_000), cap) == 413
