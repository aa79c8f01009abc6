"""Sealed memory transfer (runtime.sealing): round trips, and every tampering refused with its reason."""

from __future__ import annotations

import dataclasses
import json
import os
import stat

import pytest

from runtime.sealing import (
    KeyFileError,
    KeyRing,
    Opener,
    SealError,
    SealKeyError,
    SealTooLarge,
    open_all,
    seal,
    write_key_file,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
SESSION = {"session_id": "abc", "owner": "alice", "points": 3}
PAYLOAD = os.urandom(10_000)


def ring(*pairs) -> KeyRing:
    return KeyRing(pairs or [("k1", KEY_A)])


def sealed(payload: bytes = PAYLOAD, keyring: KeyRing | None = None, chunk: int = 1024) -> list:
    keyring = keyring or ring()
    return list(
        seal(
            [payload[i : i + 777] for i in range(0, len(payload), 777)], len(payload), keyring, SESSION, chunk
        )
    )


def test_round_trip_with_header_and_metadata():
    chunks = sealed()
    assert len(chunks) == 10 and chunks[-1].final and not any(c.final for c in chunks[:-1])
    assert chunks[0].header and not any(c.header for c in chunks[1:])
    assert all(len(c.nonce) == 12 for c in chunks) and len({c.nonce for c in chunks}) == 10
    assert all(PAYLOAD[:64] not in c.ciphertext for c in chunks)  # encrypted, not merely signed
    header, plain = open_all(chunks, ring(), len(PAYLOAD))
    assert plain == PAYLOAD and header.session == SESSION and header.key_id == "k1"
    assert header.plaintext_bytes == len(PAYLOAD) and header.chunks == 10


def test_empty_payload_is_one_final_chunk():
    chunks = sealed(b"")
    assert len(chunks) == 1 and chunks[0].final
    assert open_all(chunks, ring(), 0)[1] == b""


def test_two_exports_of_the_same_bytes_share_nothing():
    a, b = sealed(), sealed()
    assert a[0].header != b[0].header and a[1].ciphertext != b[1].ciphertext and a[1].nonce != b[1].nonce


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def refused(chunks, match, keyring=None, limit=None, error=SealError):
    with pytest.raises(error, match=match):
        open_all(chunks, keyring or ring(), len(PAYLOAD) if limit is None else limit)


@pytest.mark.parametrize("where", [0, 1, 5, 9])
@pytest.mark.parametrize("at", [0, 500, -1])  # first byte, middle, last byte of the tag
def test_a_flipped_ciphertext_bit_is_refused(where, at):
    chunks = sealed()
    chunks[where] = dataclasses.replace(chunks[where], ciphertext=flip(chunks[where].ciphertext, at))
    refused(chunks, f"chunk {where} failed authentication")


def test_a_changed_header_is_refused():
    chunks = sealed()
    header = json.loads(chunks[0].header)
    header["session"]["owner"] = "mallory"  # claim the export for someone else
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    refused([dataclasses.replace(chunks[0], header=raw), *chunks[1:]], "chunk 0 failed authentication")


def test_a_flipped_header_byte_is_refused():
    chunks = sealed()
    raw = chunks[0].header
    at = raw.index(b'"points":3') + len('"points":')
    refused(
        [dataclasses.replace(chunks[0], header=raw[:at] + b"4" + raw[at + 1 :]), *chunks[1:]],
        "failed authentication",
    )


def test_truncated_stream_is_refused():
    chunks = sealed()
    refused(chunks[:-1], "ended after 9 of 10 chunks: it was truncated")
    refused([], "held no chunk")


def test_a_final_flag_set_early_is_refused():
    chunks = sealed()
    cut = dataclasses.replace(chunks[4], final=True)
    refused([*chunks[:4], cut], "says final=True but is chunk 5 of 10")


@pytest.mark.parametrize(
    "order, match",
    [
        ([0, 2, 1], "index 2 arrived where 1 was due: chunks were reordered or dropped"),
        ([0, 1, 1], "index 1 arrived where 2 was due: chunks were replayed"),
        ([1, 2], "starts with chunk 1 without the header"),
    ],
)
def test_reordered_replayed_or_headless_chunks_are_refused(order, match):
    chunks = sealed()
    refused([chunks[i] for i in order], match)


def test_a_relabelled_chunk_is_refused():
    """Moving chunk 2 to position 1 by rewriting its index (and nonce) still fails: both are authenticated."""
    chunks = sealed()
    moved = dataclasses.replace(chunks[2], index=1, nonce=chunks[1].nonce)
    refused([chunks[0], moved], "chunk 1 failed authentication")
    renamed = dataclasses.replace(chunks[2], index=1)  # index alone: its nonce says 2
    refused([chunks[0], renamed], "nonce that is not its own")


def test_a_chunk_from_another_export_is_refused():
    a, b = sealed(), sealed()
    refused([a[0], b[1]], "nonce that is not its own")
    spliced = dataclasses.replace(b[1], nonce=a[1].nonce)
    refused([a[0], spliced], "chunk 1 failed authentication")
    refused([a[0], b[0]], "carries a header")


def test_a_chunk_after_the_final_one_is_refused():
    chunks = sealed()
    opener = Opener(ring(), len(PAYLOAD))
    for chunk in chunks:
        opener.feed(chunk)
    with pytest.raises(SealError, match="after the final chunk"):
        opener.feed(chunks[-1])


def test_wrong_key_and_unknown_key_id_are_refused():
    chunks = sealed()
    refused(
        chunks, "chunk 0 failed authentication.*another key with the id 'k1'", keyring=ring(("k1", KEY_B))
    )
    refused(
        chunks,
        "key 'k1', which this server's memory key file does not hold",
        keyring=ring(("k2", KEY_B)),
        error=SealKeyError,
    )
    # a rotated ring (new sealing key first, the old one kept) still opens it
    assert open_all(chunks, ring(("k2", KEY_B), ("k1", KEY_A)), len(PAYLOAD))[1] == PAYLOAD


def test_too_large_a_stream_is_refused_before_decrypting():
    refused(sealed(), "holds 10000 bytes; this session takes at most 9999", limit=9999, error=SealTooLarge)


def test_a_header_that_is_not_ours_is_refused():
    chunks = sealed()
    for raw, match in [
        (b"\xff", "not UTF-8 JSON"),
        (b'{"format": "other"}', "does not say format"),
        (json.dumps({**json.loads(chunks[0].header), "version": [2, 0]}).encode(), "format version 2.0"),
        (json.dumps({**json.loads(chunks[0].header), "chunks": 3}).encode(), "3 chunks cannot carry"),
    ]:
        refused([dataclasses.replace(chunks[0], header=raw), *chunks[1:]], match)


def test_key_file_rules(tmp_path):
    path = tmp_path / "memory.keys"
    assert write_key_file(path, "k7") == "k7"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keyring = KeyRing.from_file(path)
    assert keyring.sealing_id == "k7" and len(keyring.key("k7")) == 32
    with pytest.raises(KeyFileError, match="exists: keys are never overwritten"):
        write_key_file(path)
    bad = tmp_path / "bad.keys"
    for text, mode, match in [
        ("k1 " + "ab" * 32 + "\n", 0o644, "can be read by others"),
        ("k1 abcd\n", 0o600, "expected 'key_id hex'"),
        ("", 0o600, "lists no key"),
        ("k1 " + "ab" * 32 + "\nk1 " + "cd" * 32 + "\n", 0o600, "listed twice"),
        ("a " + "ab" * 32 + "\nb " + "ab" * 32 + "\n", 0o600, "repeats another id's key"),
        ("bad/id " + "ab" * 32 + "\n", 0o600, "key id 'bad/id'"),
    ]:
        bad.write_text(text)
        bad.chmod(mode)
        with pytest.raises(KeyFileError, match=match):
            KeyRing.from_file(bad)
