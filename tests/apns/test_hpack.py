"""The client's own HPACK pieces agree with the reference ``hpack`` package."""

from __future__ import annotations

import random

import pytest
from hpack import Decoder, Encoder, HPACKDecodingError, NeverIndexedHeaderTuple

from rollout.apns.hpack_codec import (
    PRE_ENCODED,
    LazyDecoder,
    PreEncodedEncoder,
    hpack_indexed,
    hpack_int,
    hpack_literal,
)


def test_pre_encoded_blocks_decode_with_reference_decoder() -> None:
    long_token = "ab" * 100  # forces multi-byte length prefixes
    block = (
        hpack_indexed(3)
        + hpack_indexed(7)
        + hpack_literal(1, b"api.push.apple.com")
        + hpack_literal(4, b"/3/device/" + long_token.encode())
        + hpack_literal(b"apns-id", b"x" * 300)
        + hpack_literal(28, b"17")
    )
    assert Decoder().decode(block, raw=True) == [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"api.push.apple.com"),
        (b":path", b"/3/device/" + long_token.encode()),
        (b"apns-id", b"x" * 300),
        (b"content-length", b"17"),
    ]
    assert hpack_int(1337, 5, 0) == bytes([31, 154, 10])  # RFC 7541 C.1.2


def test_pre_encoded_encoder_acknowledges_table_size_change() -> None:
    enc = PreEncodedEncoder()
    block = hpack_indexed(3)
    assert enc.encode([(PRE_ENCODED, block)]) == block
    enc.header_table_size = 0
    framed = enc.encode([(PRE_ENCODED, block)])
    dec = Decoder()
    assert dec.decode(framed, raw=True) == [(b":method", b"POST")]
    assert dec.header_table_size == 0
    assert enc.encode([(b"x-other", b"1")])  # anything else still encodes normally


def test_lazy_decoder_matches_reference_on_what_it_reads() -> None:
    rng = random.Random(7)
    enc, ref, lazy = Encoder(), Decoder(), LazyDecoder()
    names = [b":status", b"content-length", b"apns-id", b"date", b"server", b"x-custom"]
    for round_no in range(300):
        if round_no % 50 == 49:
            enc.header_table_size = rng.choice([0, 256, 4096])
        headers: list[tuple[bytes, bytes] | NeverIndexedHeaderTuple] = []
        for name in rng.sample(names, rng.randint(1, len(names))):
            value = bytes(rng.choice(b"0123456789abcdef-") for _ in range(rng.randint(0, 40)))
            if rng.random() < 0.3:
                headers.append(NeverIndexedHeaderTuple(name, value))
            else:
                headers.append((name, value))
        block = enc.encode(headers, huffman=rng.random() < 0.8)
        expected = [(bytes(n), bytes(v)) for n, v in ref.decode(block, raw=True)]
        got = lazy.decode(block, raw=True)
        assert [n for n, _ in got] == [n for n, _ in expected]
        for (name, value), (_, want) in zip(got, expected, strict=True):
            if name in (b":status", b"content-length") or value:
                assert value == want
        assert lazy.header_table.maxsize == ref.header_table.maxsize
        assert list(lazy.header_table.dynamic_entries) == list(ref.header_table.dynamic_entries)


@pytest.mark.parametrize("block", [b"\x80", b"\x41", b"\x00\x85ab", b"\xff\xff\xff\xff\xff\xff"])
def test_lazy_decoder_rejects_broken_blocks(block: bytes) -> None:
    with pytest.raises(HPACKDecodingError):
        LazyDecoder().decode(block)
