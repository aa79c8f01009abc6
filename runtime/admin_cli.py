"""`mirage sessions`: a running server's sessions, from the shell, through its admin service.

    mirage sessions --admin-token-file admin.tokens               # a table, one session a line
    mirage sessions --admin-token-file admin.tokens --json        # the same as JSON

The token comes from ``--admin-token-file`` (a file holding it, only its owner may read it) or the
``MIRAGE_ADMIN_TOKEN`` environment variable; TLS as `mirage snapshot` (``--tls-ca`` ...).
"""

from __future__ import annotations

ADMIN_TOKEN_ENV = "MIRAGE_ADMIN_TOKEN"


def add_sessions_flags(p) -> None:
    from runtime.snapshot_cli import add_connection_flags

    add_connection_flags(p, "--admin-token-file", ADMIN_TOKEN_ENV)
    p.add_argument("--json", action="store_true", help="print the answer as JSON instead of a table")


def format_sessions(answer) -> str:
    """A table of `ServerSessions`: one session a line, then what the server admits."""
    mib = 2**20
    lines = [
        f"{'session':32}  {'owner':12} {'size':>9} {'frames':>7} {'stream':>6} {'idle s':>7} {'age s':>7} "
        f"{'points':>9} {'MiB':>7} {'budget':>7} {'ckpts':>5} {'durable':>7}  generator"
    ]
    for s in answer.sessions:
        lines.append(
            f"{s.session_id:32}  {(s.owner or '-')[:12]:12} {f'{s.width}x{s.height}':>9} {s.frames:>7} "
            f"{'yes' if s.streaming else 'no':>6} {s.idle_s:>7.1f} {s.age_s:>7.1f} {s.memory.points:>9} "
            f"{s.memory.bytes_used / mib:>7.1f} {s.memory.budget_bytes / mib:>7.0f} {s.checkpoints:>5} "
            f"{s.durable_frame:>7}  {s.generator}"
        )
    lines.append(
        f"{len(answer.sessions)} of at most {answer.max_sessions} sessions; "
        f"{answer.admitted_budget_bytes / mib:.0f} of {answer.total_budget_bytes / mib:.0f} MiB of budgets admitted"
        + ("; the server is stopping" if answer.stopping else "")
    )
    return "\n".join(lines)


def run_sessions(args) -> int:
    import dataclasses
    import json
    import sys

    from plugin_bridge.client import MirageError
    from runtime.snapshot_cli import client_from_args

    try:
        with client_from_args(args) as client:
            answer = client.list_sessions()
    except MirageError as exc:
        print(f"mirage sessions: {exc.code.name}: {exc.details}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"mirage sessions: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(answer), indent=2) if args.json else format_sessions(answer))
    return 0
