"""File helpers shared by the client and the runtime (standard library only: no protobuf, no gRPC)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def atomic_write(path: str | os.PathLike, pieces: Iterable[bytes]) -> int:
    """Write the bytes ``pieces`` to ``path`` atomically (a temporary file beside it, fsync, rename: never
    a half-written file under the final name); returns the bytes written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    total = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in pieces:
                out.write(piece)
                total += len(piece)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return total
