"""The checksum a model file carries of its graph (weights and nodes), read and written without the onnx package.

An ONNX file is one protobuf ModelProto. Its `graph` field (number 7) holds the nodes and the initializers (the
weights); its `metadata_props` (number 14) hold key/value pairs, the `musebridge.*` metadata among them. The key
CHECKSUM_KEY holds the SHA-256 (hex) of the graph field's bytes exactly as they lie in the file, so the engine
checks a file by reading it once (no re-serialization, no onnx package) and the export writes the key by
appending one metadata entry to the serialized model, which leaves every other byte as it was. A file without the
key (one exported before it existed) loads unchecked. Hashing the bundled 7.7 MB model takes a few milliseconds
(docs/engine.md, "The model file").
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelError
from ..files import atomic_write

CHECKSUM_KEY = "musebridge.graph_sha256"
_GRAPH, _METADATA = 7, 14  # ModelProto field numbers (onnx/onnx.proto)
_KEY, _VALUE = 1, 2  # StringStringEntryProto field numbers


class _Malformed(Exception):
    """The bytes are not a protobuf message (onnxruntime then says what is wrong with the file)."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int, int]]:
    """(field number, start of the field's tag, start of its value, end) of each top-level field of a message;
    for a length-delimited field the value is its payload."""
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, end = _varint(buf, pos)
        elif wire == 1:
            end = pos + 8
        elif wire == 5:
            end = pos + 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            end = pos + length
        else:
            raise _Malformed
        if end > len(buf) or number == 0:
            raise _Malformed
        yield number, start, pos, end
        pos = end


def _checksum_entries(buf: memoryview) -> list[tuple[int, int, str]]:
    """(start, end, value) of each CHECKSUM_KEY metadata entry."""
    found = []
    for number, start, value_at, end in _fields(buf):
        if number != _METADATA:
            continue
        sub = buf[value_at:end]
        entry = {n: bytes(sub[v:e]) for n, _, v, e in _fields(sub)}
        if entry.get(_KEY) == CHECKSUM_KEY.encode():
            found.append((start, end, entry.get(_VALUE, b"").decode("ascii", "replace")))
    return found


def graph_sha256(data: bytes) -> str:
    """SHA-256 (hex) of the graph field of a serialized model (several graph fields, which protobuf merges, are
    hashed in file order). ModelError when the bytes are not a model with a graph."""
    digest, graphs = hashlib.sha256(), 0
    try:
        buf = memoryview(data)
        for number, _, value_at, end in _fields(buf):
            if number == _GRAPH:
                digest.update(buf[value_at:end])
                graphs += 1
    except _Malformed:
        graphs = 0
    if not graphs:
        raise ModelError("not an ONNX model (no graph); export it again")
    return digest.hexdigest()


def verify(data: bytes, path: str) -> bool:
    """Check a serialized model against the checksum it carries: True when it carries one and it matches, False
    when it carries none (or is no protobuf at all: onnxruntime refuses it next). ModelError (one line naming
    the file and the fix) when the graph does not match its checksum."""
    try:
        entries = _checksum_entries(memoryview(data))
    except _Malformed:
        return False
    if not entries:
        return False
    try:
        actual = graph_sha256(data)
    except ModelError:
        actual = ""
    if actual != entries[-1][2]:
        raise ModelError(f"{path}: the model's weights do not match its checksum ({CHECKSUM_KEY}); the file is "
                         "corrupt: export it again or restore it")
    return True


def _entry(value: str) -> bytes:
    """One metadata_props entry (tag, length, StringStringEntryProto) as protobuf writes it."""

    def length_delimited(number: int, payload: bytes) -> bytes:
        out, n = bytearray([number << 3 | 2]), len(payload)
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out) + payload

    return length_delimited(_METADATA, length_delimited(_KEY, CHECKSUM_KEY.encode())
                            + length_delimited(_VALUE, value.encode()))


def stamped(data: bytes) -> bytes:
    """The serialized model with its checksum entry (re)computed: any old CHECKSUM_KEY entries are dropped and
    one new entry is appended; every other byte is kept as it was."""
    try:
        old = _checksum_entries(memoryview(data))
    except _Malformed:
        raise ModelError("not an ONNX model; export it again") from None
    kept, pos = bytearray(), 0
    for start, end, _ in old:
        kept += data[pos:start]
        pos = end
    kept += data[pos:]
    return bytes(kept) + _entry(graph_sha256(data))


def stamp_file(path: str | os.PathLike) -> str:
    """Write the checksum of a model file's graph into its metadata, atomically (engine/files.py); returns the
    checksum. The rewritten file is read back and verified before it replaces the old one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model ({exc.strerror}); check the path") from None
    try:
        new = stamped(data)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None

    def write(tmp: Path) -> None:
        tmp.write_bytes(new)
        if not verify(tmp.read_bytes(), str(path)):
            raise ModelError(f"{path}: the checksum did not stick; report a bug")

    atomic_write(path, write, ModelError, suffix=".onnx")
    return graph_sha256(new)
