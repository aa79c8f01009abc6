"""Sealed memory transfer: a snapshot streamed as AES-256-GCM chunks that only this server's keys open.

A memory snapshot (`runtime.memory.snapshot`, a plain byte payload) leaves the server only sealed.
`seal` cuts it into chunks and encrypts each with AES-256-GCM; `Opener` takes the chunks back one by
one and refuses, with a `SealError` saying what happened, anything that is not exactly one export as
it was sealed:

* **Keys.** ``mirage serve --memory-key-file F`` reads ``key_id hex`` lines (64 hex digits: 32 random
  bytes; ``mirage snapshot keygen F`` writes one), a file only its owner may read. The first key
  seals; every key listed opens, so keys rotate by adding a new first line and keeping the old ones.
* **One key per export.** Each export draws a random 32-byte salt and derives its own AES key with
  HKDF-SHA256 from the master key and the salt, so chunks of two exports never share a key: a chunk
  replayed from another export fails authentication.
* **The header** (UTF-8 JSON, sent in the clear with chunk 0) names the format and version, the key
  id, the salt, the nonce prefix, the sizes and the session's metadata (its id, owner, storage,
  budget, points, frames). Its SHA-256 is in every chunk's associated data: changing one byte of it
  fails every chunk.
* **Chunk i** is sealed under the nonce ``prefix (7 random bytes) | i (uint32 big-endian) | final
  (1 byte)`` with associated data ``sha256(header) | i (uint64 big-endian) | final``. A chunk carries
  its index and nonce; the opener checks both against what the position must be, and the tag checks
  them again, so a reordered, dropped, duplicated or replayed chunk is refused, as is a chunk after
  the final one, or a stream that ends before it (truncation).

The plaintext is the snapshot, whose own SHA-256 and layout checks run again when it is loaded. The
sealing proves who wrote it (a holder of the key: this server or one sharing its key file); the
snapshot digest alone proves nothing (anyone can recompute it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runtime.auth import private_lines

SEAL_FORMAT = "mirage.memory.sealed"
SEAL_VERSION = (1, 0)
"""Major: a change older openers would misread (they refuse it); minor: header keys they may ignore."""
KEY_BYTES = 32  # AES-256
SALT_BYTES = 32
NONCE_PREFIX_BYTES = 7
NONCE_BYTES = 12  # prefix 7 + index 4 + final 1
TAG_BYTES = 16
DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20
MAX_CHUNKS = 2**32 - 1  # the nonce holds a 4-byte index
MAX_HEADER_BYTES = 64 << 10
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_INFO = b"mirage.memory.sealed/1 chunk key"
_HEADER_KEYS = {
    "format", "version", "key_id", "salt", "nonce_prefix", "export_id", "plaintext_bytes", "chunks",
    "chunk_bytes", "session",
}  # fmt: skip


class SealError(ValueError):
    """A sealed stream that cannot be opened; the message says what is wrong and what to do."""


class SealKeyError(SealError):
    """The stream was sealed under a key id this server's key file does not hold."""


class SealTooLarge(SealError):
    """The stream declares more bytes than the target may take."""


class KeyFileError(ValueError):
    """The memory key file cannot be used (the message says what to fix)."""


@dataclass(frozen=True)
class SealedChunk:
    """One chunk as it travels (`mirage.v1.SealedChunk` on the wire)."""

    index: int
    nonce: bytes
    ciphertext: bytes  # AES-256-GCM output: encrypted bytes, then the 16-byte tag
    final: bool
    header: bytes = b""  # chunk 0 only: the header JSON


class KeyRing:
    """Memory keys by id; the first seals."""

    def __init__(self, keys: Iterable[tuple[str, bytes]]):
        self._keys: dict[str, bytes] = {}
        self.sealing_id = ""
        for key_id, key in keys:
            if not _KEY_ID.fullmatch(key_id):
                raise KeyFileError(f"key id {key_id!r}: use 1 to 64 of A-Z a-z 0-9 . _ -")
            if len(key) != KEY_BYTES:
                raise KeyFileError(f"key {key_id!r} has {len(key)} bytes: AES-256 needs {KEY_BYTES}")
            if key_id in self._keys:
                raise KeyFileError(f"key id {key_id!r} is listed twice: give each key its own id")
            if key in self._keys.values():
                raise KeyFileError(f"key {key_id!r} repeats another id's key: draw a new one")
            self._keys[key_id] = bytes(key)
            self.sealing_id = self.sealing_id or key_id
        if not self._keys:
            raise KeyFileError(
                "the memory key file lists no key: add a line 'key_id hex' (mirage snapshot keygen F)"
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> KeyRing:
        path = Path(path)
        keys = []
        for number, fields in private_lines(path, "memory key file", KeyFileError):
            if len(fields) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[1]):
                raise KeyFileError(
                    f"{path} line {number}: expected 'key_id hex' (an id, one space, 64 hex digits); "
                    "mirage snapshot keygen F writes such a file"
                )
            keys.append((fields[0], bytes.fromhex(fields[1])))
        return cls(keys)

    def key(self, key_id: str) -> bytes | None:
        return self._keys.get(key_id)

    def __contains__(self, key_id: str) -> bool:
        return key_id in self._keys


def write_key_file(path: str | os.PathLike, key_id: str = "k1") -> str:
    """Write a new key file (mode 600, refusing to overwrite) holding one fresh key; returns its id."""
    if not _KEY_ID.fullmatch(key_id):
        raise KeyFileError(f"key id {key_id!r}: use 1 to 64 of A-Z a-z 0-9 . _ -")
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path} exists: keys are never overwritten; add a line to it or pick a new path"
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("# Mirage memory keys: the first seals, every one opens. Keep this file secret.\n")
        out.write(f"{key_id} {secrets.token_hex(KEY_BYTES)}\n")
    return key_id


def _chunk_key(master: bytes, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_INFO)
    return AESGCM(hkdf.derive(master))


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + struct.pack(">IB", index, int(final))


def _aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return header_digest + struct.pack(">QB", index, int(final))


def seal(
    pieces: Iterable[bytes],
    plaintext_bytes: int,
    keyring: KeyRing,
    session: dict,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[SealedChunk]:
    """Seal ``plaintext_bytes`` bytes arriving as ``pieces`` into chunks of ``chunk_bytes`` plaintext
    (the last shorter; an empty payload is one empty final chunk). ``session``: the metadata bound to
    the stream (JSON values). Raises SealError when the pieces do not add up to plaintext_bytes."""
    if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk_bytes={chunk_bytes}: use 1 to {MAX_CHUNK_BYTES}")
    chunks = max(1, -(-plaintext_bytes // chunk_bytes))
    if chunks > MAX_CHUNKS:
        raise ValueError(
            f"{plaintext_bytes} bytes need {chunks} chunks, more than {MAX_CHUNKS}: use larger chunks"
        )
    salt, prefix = os.urandom(SALT_BYTES), os.urandom(NONCE_PREFIX_BYTES)
    header = json.dumps(
        {
            "format": SEAL_FORMAT,
            "version": list(SEAL_VERSION),
            "key_id": keyring.sealing_id,
            "salt": salt.hex(),
            "nonce_prefix": prefix.hex(),
            "export_id": secrets.token_hex(16),
            "plaintext_bytes": int(plaintext_bytes),
            "chunks": chunks,
            "chunk_bytes": int(chunk_bytes),
            "session": session,
        },
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    ).encode("utf-8")
    aead = _chunk_key(keyring.key(keyring.sealing_id), salt)
    digest = hashlib.sha256(header).digest()
    pending, index, sent = bytearray(), 0, 0

    def emit(data: bytes, final: bool) -> SealedChunk:
        nonce = _nonce(prefix, index, final)
        ciphertext = aead.encrypt(nonce, data, _aad(digest, index, final))
        return SealedChunk(index, nonce, ciphertext, final, header if index == 0 else b"")

    for piece in pieces:
        pending += piece
        sent += len(piece)
        if sent > plaintext_bytes:
            raise SealError(f"the payload grew past the {plaintext_bytes} bytes announced while sealing it")
        while len(pending) >= chunk_bytes and index < chunks - 1:
            yield emit(bytes(pending[:chunk_bytes]), False)
            del pending[:chunk_bytes]
            index += 1
    if sent != plaintext_bytes:
        raise SealError(f"the payload held {sent} bytes, {plaintext_bytes} were announced")
    yield emit(bytes(pending), True)


@dataclass(frozen=True)
class SealHeader:
    """What chunk 0's header says (parsed and checked; authenticated once chunk 0 opens)."""

    key_id: str
    export_id: str
    plaintext_bytes: int
    chunks: int
    chunk_bytes: int
    session: dict
    version: tuple[int, int]
    raw: bytes
    salt: bytes
    nonce_prefix: bytes


def parse_header(raw: bytes) -> SealHeader:
    """The header of chunk 0, checked for shape (not yet for authenticity: `Opener` does that)."""
    if len(raw) > MAX_HEADER_BYTES:
        raise SealError(
            f"sealed header of {len(raw)} bytes (at most {MAX_HEADER_BYTES}): not a Mirage export"
        )
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SealError("sealed header is not UTF-8 JSON: not a Mirage export, or damaged") from None
    if not isinstance(header, dict) or header.get("format") != SEAL_FORMAT:
        raise SealError(f"sealed header does not say format {SEAL_FORMAT!r}: not a Mirage memory export")
    missing = sorted(_HEADER_KEYS - header.keys())
    if missing:
        raise SealError(f"sealed header lacks {', '.join(missing)}: damaged")
    version = header["version"]
    if not (isinstance(version, list) and len(version) == 2 and all(type(v) is int for v in version)):
        raise SealError(f"sealed header version {version!r} is not [major, minor]: damaged")
    if version[0] != SEAL_VERSION[0]:
        raise SealError(
            f"sealed with format version {version[0]}.{version[1]}; this runtime opens {SEAL_VERSION[0]}.x: "
            "use the Mirage version that wrote it"
        )

    def number(name: str, lo: int, hi: int) -> int:
        value = header[name]
        if type(value) is not int or not lo <= value <= hi:
            raise SealError(f"sealed header {name}={value!r} is outside [{lo}, {hi}]: damaged")
        return value

    plaintext = number("plaintext_bytes", 0, 2**62)
    chunk_bytes = number("chunk_bytes", 1, MAX_CHUNK_BYTES)
    chunks = number("chunks", 1, MAX_CHUNKS)
    if chunks != max(1, -(-plaintext // chunk_bytes)):
        raise SealError(
            f"sealed header: {chunks} chunks cannot carry {plaintext} bytes in {chunk_bytes}: damaged"
        )
    for name, size in (("salt", SALT_BYTES), ("nonce_prefix", NONCE_PREFIX_BYTES), ("export_id", 16)):
        if not isinstance(header[name], str) or not re.fullmatch(f"[0-9a-f]{{{2 * size}}}", header[name]):
            raise SealError(f"sealed header {name} is not {size} bytes of hex: damaged")
    if not isinstance(header["key_id"], str) or not isinstance(header["session"], dict):
        raise SealError("sealed header key_id must be a string and session an object: damaged")
    return SealHeader(
        key_id=header["key_id"],
        export_id=header["export_id"],
        plaintext_bytes=plaintext,
        chunks=chunks,
        chunk_bytes=chunk_bytes,
        session=header["session"],
        version=(version[0], version[1]),
        raw=bytes(raw),
        salt=bytes.fromhex(header["salt"]),
        nonce_prefix=bytes.fromhex(header["nonce_prefix"]),
    )


class Opener:
    """Opens one sealed stream chunk by chunk (`feed`), then `finish` says it was whole.

    ``max_plaintext_bytes``: a header announcing more is refused (SealTooLarge) before anything is
    decrypted. Nothing a chunk holds is returned before its tag verified.
    """

    def __init__(self, keyring: KeyRing, max_plaintext_bytes: int):
        self.keyring = keyring
        self.max_plaintext_bytes = int(max_plaintext_bytes)
        self.header: SealHeader | None = None
        self._aead: AESGCM | None = None
        self._digest = b""
        self._prefix = b""
        self._next = 0
        self._received = 0
        self._done = False

    def feed(self, chunk: SealedChunk) -> bytes:
        """The plaintext of the next chunk, verified; SealError when it is not the chunk due next."""
        if self._done:
            raise SealError(
                f"chunk {chunk.index} arrived after the final chunk: the stream holds more than was sealed"
            )
        if self.header is None:
            self._begin(chunk)
        elif chunk.header:
            raise SealError(f"chunk {chunk.index} carries a header: only chunk 0 does (two exports spliced?)")
        header = self.header
        if chunk.index != self._next:
            what = "replayed" if chunk.index < self._next else "reordered or dropped"
            raise SealError(
                f"chunk index {chunk.index} arrived where {self._next} was due: chunks were {what}"
            )
        final = self._next == header.chunks - 1
        if bool(chunk.final) != final:
            raise SealError(
                f"chunk {chunk.index} says final={bool(chunk.final)} but is chunk {chunk.index + 1} of "
                f"{header.chunks}: the stream was cut or extended"
            )
        if chunk.nonce != _nonce(self._prefix, chunk.index, final):
            raise SealError(f"chunk {chunk.index} carries a nonce that is not its own: replayed or altered")
        try:
            data = self._aead.decrypt(chunk.nonce, chunk.ciphertext, _aad(self._digest, chunk.index, final))
        except InvalidTag:
            raise SealError(
                f"chunk {chunk.index} failed authentication: its bytes or the header were changed, or it was "
                f"sealed under another key with the id {header.key_id!r}; refusing the stream"
            ) from None
        expected = (
            header.chunk_bytes if not final else header.plaintext_bytes - header.chunk_bytes * chunk.index
        )
        if len(data) != expected:  # authentic yet inconsistent: only a writer with the key could do this
            raise SealError(f"chunk {chunk.index} holds {len(data)} bytes, its header says {expected}")
        self._received += len(data)
        self._next += 1
        self._done = final
        return data

    def _begin(self, chunk: SealedChunk) -> None:
        if not chunk.header:
            raise SealError(
                f"the stream starts with chunk {chunk.index} without the header chunk 0 carries: "
                "send the export from its first chunk"
            )
        header = parse_header(chunk.header)
        master = self.keyring.key(header.key_id)
        if master is None:
            raise SealKeyError(
                f"sealed under key {header.key_id!r}, which this server's memory key file does not hold: "
                "start the server with the key file that sealed it (old keys stay listed after rotation)"
            )
        if header.plaintext_bytes > self.max_plaintext_bytes:
            raise SealTooLarge(
                f"the export holds {header.plaintext_bytes} bytes; this session takes at most "
                f"{self.max_plaintext_bytes}: import it into a session with a larger memory budget"
            )
        self.header = header
        self._aead = _chunk_key(master, header.salt)
        self._digest = hashlib.sha256(header.raw).digest()
        self._prefix = header.nonce_prefix

    def finish(self) -> SealHeader:
        """The header, once every chunk arrived and verified; SealError for a cut stream."""
        if self.header is None:
            raise SealError("the stream held no chunk: send an export's chunks, from chunk 0")
        if not self._done:
            raise SealError(
                f"the stream ended after {self._next} of {self.header.chunks} chunks: it was truncated; "
                "send the whole export"
            )
        return self.header


def chunk_from_proto(message) -> SealedChunk:
    """A `mirage.v1.SealedChunk` message as the opener takes it."""
    return SealedChunk(message.index, message.nonce, message.ciphertext, message.final, message.header)


def chunk_to_proto(chunk: SealedChunk, message_type):
    """``chunk`` as a ``message_type`` (`mirage.v1.SealedChunk`) message."""
    return message_type(
        index=chunk.index,
        nonce=chunk.nonce,
        ciphertext=chunk.ciphertext,
        final=chunk.final,
        header=chunk.header,
    )


def open_all(
    chunks: Iterable[SealedChunk], keyring: KeyRing, max_plaintext_bytes: int
) -> tuple[SealHeader, bytes]:
    """Every chunk opened and checked; (header, plaintext)."""
    opener, parts = Opener(keyring, max_plaintext_bytes), []
    for chunk in chunks:
        parts.append(opener.feed(chunk))
    return opener.finish(), b"".join(parts)
