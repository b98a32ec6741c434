"""Reading S2 streams (the compression of JetStream snapshots) in pure Python.

A snapshot's `stream.tar.s2` is an S2 *stream*: Snappy's framing format with the
stream identifier `S2sTwO`, blocks of up to 4 MiB, and one extension to the block
format (a copy with offset 0 repeats the previous offset). Snappy streams
(`sNaPpY`) are valid S2 streams and read the same way.

Frames: one type byte, a 3-byte little-endian length, then the body. Data frames
start with the CRC-32C of the uncompressed data, masked. natsop only ever reads
these files (to check a backup); it never writes them, so there is no encoder.

CRC-32C uses the `crc32c` package when it is installed (hardware-accelerated) and a
table-driven fallback otherwise.
"""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["MAX_FRAME", "S2Error", "S2Reader", "crc32c", "decode_block", "scan_frames"]

STREAM_IDS = (b"S2sTwO", b"sNaPpY")
# S2 blocks decode to at most 4 MiB; a frame body is never much larger than that.
MAX_BLOCK = 4 << 20
MAX_FRAME = MAX_BLOCK + (MAX_BLOCK >> 4) + 64

_CHUNK_COMPRESSED = 0x00
_CHUNK_UNCOMPRESSED = 0x01
_CHUNK_PADDING = 0xFE
_CHUNK_STREAM_ID = 0xFF


class S2Error(Exception):
    """The data is not a valid S2 stream; `truncated` when it merely ends too early."""

    def __init__(self, message: str, *, offset: int, truncated: bool = False) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset
        self.truncated = truncated


def _make_tables() -> list[list[int]]:
    """Slicing-by-4 tables for CRC-32C (reflected polynomial 0x82F63B78)."""
    t0 = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t0.append(c)
    tables = [t0]
    for _ in range(3):
        prev = tables[-1]
        tables.append([(prev[n] >> 8) ^ t0[prev[n] & 0xFF] for n in range(256)])
    return tables


_TABLES = _make_tables()
_WIDE: tuple[list[int], list[int]] | None = None


def _wide_tables() -> tuple[list[int], list[int]]:
    """Two 65536-entry tables that take four bytes per lookup pair (built on first use: ~10 ms, 5 MB)."""
    global _WIDE
    if _WIDE is None:
        t0, t1, t2, t3 = _TABLES
        _WIDE = ([t3[i & 0xFF] ^ t2[i >> 8] for i in range(65536)],
                 [t1[i & 0xFF] ^ t0[i >> 8] for i in range(65536)])
    return _WIDE


def _crc32c_py(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C in pure Python, four bytes per step (~3x a byte loop; the crc32c package is ~500x)."""
    t0 = _TABLES[0]
    crc = 0xFFFFFFFF
    view = memoryview(bytes(data))
    whole = 0
    if sys.byteorder == "little" and len(view) >= 64:
        low, high = _wide_tables()
        whole = len(view) // 4 * 4
        for word in view[:whole].cast("I"):
            x = word ^ crc
            crc = low[x & 0xFFFF] ^ high[x >> 16]
    for b in view[whole:]:
        crc = t0[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _load_fast_crc() -> Callable[[bytes], int] | None:
    try:
        fn: Callable[[bytes], int] = importlib.import_module("crc32c").crc32c
    except (ImportError, AttributeError):
        return None
    return fn


_FAST_CRC = _load_fast_crc()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C (Castagnoli) of `data`."""
    if _FAST_CRC is not None:
        return _FAST_CRC(bytes(data))
    return _crc32c_py(data)


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _uvarint(src: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(src) or shift > 63:
            raise ValueError("bad varint")
        b = src[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def decode_block(src: bytes) -> bytes:
    """Decode one S2 (or Snappy) block: a varint length, then literals and copies."""
    try:
        return _decode_block(src)
    except IndexError:
        raise ValueError("block ends inside an element") from None


def _decode_block(src: bytes) -> bytes:
    size, s = _uvarint(src, 0)
    if size > MAX_BLOCK:
        raise ValueError(f"block claims {size} bytes, more than S2 allows")
    dst = bytearray()
    end = len(src)
    offset = 0
    while s < end:
        tag = src[s]
        kind = tag & 0x03
        if kind == 0:  # literal
            x = tag >> 2
            if x < 60:
                s += 1
            else:
                nbytes = x - 59
                x = int.from_bytes(src[s + 1:s + 1 + nbytes], "little")
                if s + 1 + nbytes > end:
                    raise ValueError("literal length cut off")
                s += 1 + nbytes
            length = x + 1
            if s + length > end or len(dst) + length > size:
                raise ValueError("literal runs past the block")
            dst += src[s:s + length]
            s += length
            continue
        if kind == 1:  # copy, 1-byte offset; offset 0 repeats the previous one (S2)
            length = (tag >> 2) & 0x07
            new_offset = ((tag & 0xE0) << 3) | src[s + 1]
            s += 2
            if new_offset == 0:
                if length == 5:
                    length = src[s] + 4
                    s += 1
                elif length == 6:
                    length = (src[s] | src[s + 1] << 8) + (1 << 8)
                    s += 2
                elif length == 7:
                    length = (src[s] | src[s + 1] << 8 | src[s + 2] << 16) + (1 << 16)
                    s += 3
            else:
                offset = new_offset
            length += 4
        elif kind == 2:  # copy, 2-byte offset
            length = 1 + (tag >> 2)
            offset = src[s + 1] | src[s + 2] << 8
            s += 3
        else:  # copy, 4-byte offset
            length = 1 + (tag >> 2)
            offset = int.from_bytes(src[s + 1:s + 5], "little")
            if s + 5 > end:
                raise ValueError("copy cut off")
            s += 5
        d = len(dst)
        if offset <= 0 or offset > d or d + length > size:
            raise ValueError("copy refers outside the block")
        start = d - offset
        if offset >= length:
            dst += dst[start:start + length]
        else:  # overlapping copy: the last `offset` bytes repeat
            pattern = bytes(dst[start:d])
            dst += (pattern * (length // offset + 1))[:length]
    if len(dst) != size:
        raise ValueError(f"block decoded to {len(dst)} bytes, expected {size}")
    return bytes(dst)


def _read_header(f: BinaryIO, pos: int) -> tuple[int, int] | None:
    header = f.read(4)
    if not header:
        return None
    if len(header) < 4:
        raise S2Error("the file ends inside a frame header", offset=pos, truncated=True)
    return header[0], int.from_bytes(header[1:4], "little")


def scan_frames(f: BinaryIO) -> tuple[int, int]:
    """Walk the frame headers without decoding, seeking over bodies: (frames, bytes).

    Cheap (one small read per frame) and catches a file cut short or not S2 at all.
    """
    pos = 0
    frames = 0
    while True:
        hdr = _read_header(f, pos)
        if hdr is None:
            break
        kind, length = hdr
        if frames == 0 and kind != _CHUNK_STREAM_ID:
            raise S2Error("not an S2 stream: no stream identifier at the start", offset=0)
        if 0x02 <= kind <= 0x7F:
            raise S2Error(f"unknown unskippable frame type 0x{kind:02x}", offset=pos)
        if length > MAX_FRAME:
            raise S2Error(f"frame of {length} bytes is larger than S2 allows", offset=pos)
        if kind == _CHUNK_STREAM_ID:
            body = f.read(length)
            if len(body) < length:
                raise S2Error("the file ends inside a frame", offset=pos, truncated=True)
            if body not in STREAM_IDS:
                raise S2Error("unknown stream identifier", offset=pos)
        else:
            here = f.tell()
            size = f.seek(0, io.SEEK_END)
            if here + length > size:
                raise S2Error("the file ends inside a frame", offset=pos, truncated=True)
            f.seek(here + length)
        pos += 4 + length
        frames += 1
    if frames == 0:
        raise S2Error("the file is empty", offset=0, truncated=True)
    return frames, pos


class S2Reader(io.RawIOBase):
    """A readable file of the decompressed data of an S2 stream, checking every frame's CRC.

    Memory stays bounded by one block (4 MiB) whatever the stream's size.
    """

    def __init__(self, source: BinaryIO, *, verify_crc: bool = True) -> None:
        super().__init__()
        self._src = source
        self._verify = verify_crc
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._started = False
        #: Compressed bytes consumed so far.
        self.compressed_offset = 0
        #: Decompressed bytes produced so far.
        self.decompressed_offset = 0

    def readable(self) -> bool:
        return True

    def _next_frame(self) -> bool:
        """Load the next data frame into the buffer; False at a clean end of stream."""
        while True:
            pos = self.compressed_offset
            hdr = _read_header(self._src, pos)
            if hdr is None:
                if not self._started:
                    raise S2Error("the file is empty", offset=0, truncated=True)
                return False
            kind, length = hdr
            if not self._started and kind != _CHUNK_STREAM_ID:
                raise S2Error("not an S2 stream: no stream identifier at the start", offset=0)
            if length > MAX_FRAME:
                raise S2Error(f"frame of {length} bytes is larger than S2 allows", offset=pos)
            body = self._src.read(length)
            if len(body) < length:
                raise S2Error("the file ends inside a frame", offset=pos, truncated=True)
            self.compressed_offset += 4 + length
            if kind == _CHUNK_STREAM_ID:
                if body not in STREAM_IDS:
                    raise S2Error("unknown stream identifier", offset=pos)
                self._started = True
                continue
            if kind in (_CHUNK_COMPRESSED, _CHUNK_UNCOMPRESSED):
                if length < 4:
                    raise S2Error("data frame too short for its checksum", offset=pos)
                want = int.from_bytes(body[:4], "little")
                if kind == _CHUNK_COMPRESSED:
                    try:
                        data = decode_block(body[4:])
                    except ValueError as exc:
                        raise S2Error(f"corrupt block: {exc}", offset=pos) from None
                else:
                    data = body[4:]
                if self._verify and _masked(crc32c(data)) != want:
                    raise S2Error("checksum mismatch: the data is corrupted", offset=pos)
                self._buf = data
                self._pos = 0
                return True
            if kind == _CHUNK_PADDING or kind >= 0x80:
                continue  # skippable (padding, S2's seek index)
            raise S2Error(f"unknown unskippable frame type 0x{kind:02x}", offset=pos)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts: list[bytes] = []
            while True:
                part = self.read(1 << 20)
                if not part:
                    return b"".join(parts)
                parts.append(part)
        if self._pos + size <= len(self._buf):  # the common case: one slice of the current block
            fast = self._buf[self._pos:self._pos + size]
            self._pos += size
            self.decompressed_offset += size
            return fast
        out = bytearray()
        while len(out) < size:
            if self._pos >= len(self._buf) and (self._eof or not self._next_frame()):
                self._eof = True
                break
            take = self._buf[self._pos:self._pos + size - len(out)]
            self._pos += len(take)
            out += take
        self.decompressed_offset += len(out)
        return bytes(out)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n
