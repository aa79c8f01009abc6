"""Sealed memory exports on disk: what `mirage snapshot export` writes and `mirage snapshot import` reads.

A file is the magic ``MIRAGE-SEALED-EXPORT\\n`` and then every chunk of the export in order, each as
a little-endian uint32 length and that many bytes (a serialized ``mirage.v1.SealedChunk``). The file
adds no protection of its own and needs none: every chunk is sealed (AES-256-GCM) and authenticated
by the server that opens it, which refuses a file whose bytes, order or length were changed.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from plugin_bridge import wire
from plugin_bridge.files import atomic_write
from plugin_bridge.types import SealedExport

MAGIC = b"MIRAGE-SEALED-EXPORT\n"
MAX_RECORD_BYTES = (4 << 20) + (1 << 20)
"""A chunk of at most 4 MiB plaintext, its header and framing: anything longer is not an export."""
_LENGTH = struct.Struct("<I")


def save_export(export: SealedExport, path: str | os.PathLike) -> int:
    """Write ``export`` to ``path`` atomically; returns the bytes written."""

    def records():
        yield MAGIC
        for chunk in export.chunks:
            yield _LENGTH.pack(len(chunk))
            yield chunk

    return atomic_write(path, records())


def load_export(path: str | os.PathLike) -> SealedExport:
    """The export in ``path``; ValueError says what is wrong with a file that is not one."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path} is not a Mirage sealed export (it lacks the {MAGIC!r} magic)")
    chunks, at = [], len(MAGIC)
    while at < len(data):
        if at + _LENGTH.size > len(data):
            raise ValueError(f"{path} ends inside a record length at byte {at}: the file is truncated")
        (length,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if length > MAX_RECORD_BYTES or at + length > len(data):
            raise ValueError(
                f"{path}: record {len(chunks)} claims {length} bytes past the file's end or limit"
            )
        chunks.append(data[at : at + length])
        at += length
    if not chunks:
        raise ValueError(f"{path} holds no chunk")
    return wire.sealed_export_from_bytes(chunks)
