"""HPACK the lean way for the push connection: request blocks encoded by hand, answers read lazily.

Both halves plug into ``h2`` (see ``connection._LeanH2Connection``): ``PreEncodedEncoder`` passes a
block ``jobs.build_jobs`` made straight through, ``LazyDecoder`` skips what nobody reads.
"""

from __future__ import annotations

from typing import Any

from hpack import (
    Decoder,
    Encoder,
    HPACKDecodingError,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman_table import decode_huffman

# ---- HPACK, pre-encoded ------------------------------------------------------------------------
#
# hpack's encoder (pure Python: table search, Huffman coding, debug logging per header) was the
# largest single cost per push when profiled. The request headers are nearly constant, so the
# client encodes each header block itself, once per batch for the constant part, using only the
# static table and "literal without indexing" (RFC 7541 6.1 and 6.2.2). That never touches the
# dynamic table, so the server's decoder state cannot drift; a few dozen more bytes per request
# are cheaper here than the CPU.

PRE_ENCODED = b"\x00rollout-hpack-block"
"""Header name marking a header list whose single value is an already encoded HPACK block."""


def hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer with an N-bit prefix; ``first`` holds the pattern bits of byte one."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(data: bytes) -> bytes:
    """An HPACK string literal, raw (no Huffman)."""
    return hpack_int(len(data), 7, 0x00) + data


def hpack_indexed(index: int) -> bytes:
    """A header field fully in the static table."""
    return hpack_int(index, 7, 0x80)


def hpack_literal(name: bytes | int, value: bytes) -> bytes:
    """A literal header field without indexing: static-table name index, or a new name."""
    if isinstance(name, int):
        return hpack_int(name, 4, 0x00) + hpack_str(value)
    return b"\x00" + hpack_str(name) + hpack_str(value)


class PreEncodedEncoder(Encoder):
    """An hpack ``Encoder`` that passes pre-encoded blocks through (and encodes anything else)."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        if type(headers) is list and len(headers) == 1 and headers[0][0] == PRE_ENCODED:
            block: bytes = headers[0][1]
            if self.header_table.resized:
                # Acknowledge the peer's new table size as the first thing in this block.
                self.header_table.resized = False
                return self._encode_table_size_change() + block
            return block
        return super().encode(headers, huffman)


# ---- HPACK, decoded lazily ----------------------------------------------------------------------
#
# On the answer side the client reads only ``:status`` (and h2 reads ``content-length``). Huffman
# decoding of the other values (date, server, apns-id...) was the top cost once requests were
# pre-encoded, so values of literal fields *not added to the dynamic table* (including every
# field while the peer has set the table size to 0) are decoded only for those names; whatever
# enters the dynamic table is decoded in full, because the table's size accounting (RFC 7541
# 4.1) depends on the decoded lengths.

_WANTED_VALUES = frozenset({b":status", b"content-length"})
_UNREAD = b""  # stands in for a header value nobody reads


def _read_int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HPACKDecodingError("HPACK integer too large")


def _read_str(data: bytes, pos: int, decode: bool) -> tuple[bytes, int]:
    huffman = data[pos] & 0x80
    length, pos = _read_int(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HPACKDecodingError("truncated HPACK string")
    raw = data[pos:end]
    if not huffman:
        return raw, end
    return (decode_huffman(raw) if decode else _UNREAD), end


class LazyDecoder(Decoder):
    """An hpack ``Decoder`` that skips Huffman-decoding values the client never reads."""

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table = self.header_table
        headers: list[tuple[bytes, bytes]] = []
        size = 0
        pos = 0
        end = len(data)
        try:
            while pos < end:
                first = data[pos]
                if first & 0x80:  # indexed field
                    index, pos = _read_int(data, pos, 7)
                    if index == 0:
                        raise HPACKDecodingError("HPACK index 0")
                    name, value = table.get_by_index(index)
                elif first & 0x40:  # literal, added to the dynamic table
                    index, pos = _read_int(data, pos, 6)
                    if index:
                        name = table.get_by_index(index)[0]
                    else:
                        name, pos = _read_str(data, pos, True)
                    if table.maxsize:
                        value, pos = _read_str(data, pos, True)
                        table.add(name, value)
                    else:  # a zero-size table keeps nothing (nginx signals size 0 first)
                        value, pos = _read_str(data, pos, name in _WANTED_VALUES)
                elif first & 0x20:  # dynamic table size update
                    new_size, pos = _read_int(data, pos, 5)
                    if new_size > self.max_allowed_table_size:
                        raise InvalidTableSizeError("table size update above the allowed maximum")
                    table.maxsize = new_size
                    continue
                else:  # literal without indexing / never indexed
                    index, pos = _read_int(data, pos, 4)
                    if index:
                        name = table.get_by_index(index)[0]
                    else:
                        name, pos = _read_str(data, pos, True)
                    value, pos = _read_str(data, pos, name in _WANTED_VALUES)
                size += len(name) + len(value) + 32
                if size > self.max_header_list_size:
                    raise OversizedHeaderListError("header list too large")
                headers.append((name, value))
        except IndexError as exc:
            raise HPACKDecodingError("truncated HPACK block") from exc
        return headers
