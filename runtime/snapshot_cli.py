"""`mirage snapshot`: memory keys, and sealed exports of a running server's sessions, from the shell.

    mirage snapshot keygen memory.keys                      # a new AES-256 key file (mode 600)
    mirage snapshot export --session ID --out walk.sealed   # ExportMemory into a file
    mirage snapshot import --session ID --in walk.sealed    # ImportMemory from it
    mirage snapshot inspect walk.sealed                     # what its header says (no key needed)

export and import talk to ``--target`` (default 127.0.0.1:50051) with the real client: TLS with
``--tls-ca`` (and ``--tls-cert`` / ``--tls-key`` for mutual TLS), the bearer token from
``--token-file`` (a file holding the token, only its owner may read it) or the ``MIRAGE_TOKEN``
environment variable; never on the command line, where other users can read it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TOKEN_ENV = "MIRAGE_TOKEN"


def add_snapshot_flags(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="snapshot_command", required=True)
    keygen = sub.add_parser("keygen", help="write a new memory key file (for mirage serve --memory-key-file)")
    keygen.add_argument("path", help="the key file to create (never overwritten)")
    keygen.add_argument("--key-id", default="k1", help="the key's id (default: k1)")
    for name, help_text in (
        ("export", "seal a session's memory into a file (ExportMemory)"),
        ("import", "replace a session's memory with a sealed file (ImportMemory)"),
    ):
        q = sub.add_parser(name, help=help_text)
        add_connection_flags(q, "--token-file", TOKEN_ENV)
        q.add_argument("--session", required=True, help="the session id (OpenSession gave it)")
        if name == "export":
            q.add_argument("--out", required=True, help="the file to write (atomically)")
            q.add_argument(
                "--chunk-kib", type=int, default=1024, help="plaintext KiB a chunk (default: 1024)"
            )
        else:
            q.add_argument("--in", dest="source", required=True, help="a file mirage snapshot export wrote")
            q.add_argument(
                "--keep-provenance",
                action="store_true",
                help="keep what the export says of each point (default: all of it becomes imported)",
            )
    inspect = sub.add_parser("inspect", help="print what a sealed file's header says (no key needed)")
    inspect.add_argument("path")


def add_connection_flags(p: argparse.ArgumentParser, token_flag: str, token_env: str) -> None:
    """--target, the token's file (``token_flag``, or the ``token_env`` variable) and the TLS files:
    how a command reaches a running server (`client_from_args`)."""
    p.add_argument("--target", default="127.0.0.1:50051", help="the server (default: 127.0.0.1:50051)")
    p.add_argument(
        token_flag, dest="token_file", default="", help=f"file holding the bearer token (or set {token_env})"
    )
    p.add_argument("--tls-ca", default="", help="PEM CA that signed the server's certificate (TLS)")
    p.add_argument("--tls-cert", default="", help="PEM client certificate (mutual TLS)")
    p.add_argument("--tls-key", default="", help="PEM private key of --tls-cert")
    p.set_defaults(token_env=token_env)


def _token(args: argparse.Namespace) -> str | None:
    from runtime.auth import read_private_file

    if args.token_file:
        return read_private_file(Path(args.token_file), "token file", ValueError).strip()
    return os.environ.get(args.token_env) or None


def client_from_args(args: argparse.Namespace):
    """A MirageClient for `add_connection_flags`' flags (ValueError says what to fix)."""
    from plugin_bridge.client import MirageClient, tls_credentials

    credentials = None
    if args.tls_ca or args.tls_cert:
        credentials = tls_credentials(args.tls_ca or None, args.tls_cert or None, args.tls_key or None)
    return MirageClient(args.target, credentials=credentials, token=_token(args))


def run_snapshot(args: argparse.Namespace) -> int:
    from plugin_bridge.client import MirageError
    from plugin_bridge.exports import load_export, save_export
    from runtime.sealing import KeyFileError, write_key_file

    try:
        if args.snapshot_command == "keygen":
            key_id = write_key_file(args.path, args.key_id)
            print(f"wrote {args.path}: key {key_id!r} (mode 600); serve with --memory-key-file {args.path}")
        elif args.snapshot_command == "inspect":
            export = load_export(args.path)
            print(
                json.dumps(
                    {"chunks": len(export.chunks), "bytes": export.nbytes, "header": export.header}, indent=2
                )
            )
        elif args.snapshot_command == "export":
            with client_from_args(args) as client:
                export = client.export_memory(args.session, chunk_bytes=args.chunk_kib * 1024)
            written = save_export(export, args.out)
            meta = export.header.get("session", {})
            print(
                f"wrote {args.out}: {written} bytes, {len(export.chunks)} chunks, {meta.get('points', '?')} points, "
                f"sealed under key {export.header.get('key_id', '?')!r}"
            )
        else:
            export = load_export(args.source)
            with client_from_args(args) as client:
                result = client.import_memory(args.session, export, keep_provenance=args.keep_provenance)
            print(
                f"imported {args.source} into session {args.session}: {result.memory.points} points "
                f"(export {result.export_id} of session {result.source_session})"
            )
    except MirageError as exc:
        print(f"mirage snapshot {args.snapshot_command}: {exc.code.name}: {exc.details}", file=sys.stderr)
        return 1
    except (KeyFileError, ValueError, OSError) as exc:
        print(f"mirage snapshot {args.snapshot_command}: {exc}", file=sys.stderr)
        return 2
    return 0
