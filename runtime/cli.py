"""`mirage` command line: serve, demo, eval, bench, loadtest, train, export, snapshot, sessions."""

from __future__ import annotations

import argparse
import asyncio
import sys

from runtime.flags import Flag, add_flags, apply_flags

MiB = 2**20


SERVE_FLAGS = [
    Flag("server.host"),
    Flag("server.port"),
    Flag("server.tls_cert"),
    Flag("server.tls_key"),
    Flag("server.tls_client_ca"),
    Flag("server.insecure"),
    Flag("server.token_file"),
    Flag("server.rate_limit_per_s"),
    Flag("server.rate_limit_burst"),
    Flag("server.memory_key_file"),
    Flag("sessions.max_checkpoints"),
    Flag("sessions.max_sessions"),
    Flag("sessions.total_budget_bytes", "--total-budget-mib", scale=MiB, unit="MiB"),
    Flag("server.grace_s"),
    Flag("server.warm_sizes"),
    Flag("server.checkpoint_dir"),
    Flag("server.checkpoint_every"),
    Flag("server.checkpoint_keep_s"),
    Flag("server.admin_token_file"),
    Flag("server.metrics_port"),
    Flag("server.metrics_host"),
    Flag("server.log_format", choices=("text", "json")),
    Flag("server.log_level", choices=("debug", "info", "warning", "error")),
    Flag("memory.budget_bytes", "--budget-mib", scale=MiB, unit="MiB"),
    Flag("generator.name", "--generator"),
    Flag("generator.models_dir"),
    Flag("generator.spin", "--ort-spin"),
]
DEMO_FLAGS = [Flag("out"), Flag("frames"), Flag("size"), Flag("scene"), Flag("seed")]
EVAL_FLAGS = [
    Flag("suite", choices=("tiny", "quick", "full", "budget")),
    Flag("out"),
    Flag("seed"),
    Flag("generators"),
]
BUDGET_FLAGS = [Flag("budgets_mib", "--budgets"), Flag("frames"), Flag("storage")]
"""The budget suite's own flags (its out and seed are the eval's)."""
BENCH_FLAGS = [
    Flag("sizes"),
    Flag("frames"),
    Flag("soak_frames"),
    Flag("soak_storage", choices=("full", "quantised")),
    Flag("observe_frames"),
    Flag("queries"),
    Flag("session_counts"),
    Flag("session_frames"),
    Flag("sections", "--only"),
    Flag("query_size"),
    Flag("query_points"),
    Flag("query_count"),
    Flag("json_path", "--json"),
]
LOADTEST_FLAGS = [
    Flag("sessions"),
    Flag("frames"),
    Flag("size"),
    Flag("flood_rate"),
    Flag("flood_seconds"),
    Flag("target"),
    Flag("fault_frames"),
    Flag("fault_every"),
    Flag("json_path", "--json"),
]
TRAIN_FLAGS = [
    Flag("run_dir", "--run"),
    Flag("steps"),
    Flag("data.examples.train", "--train-examples", help="Training examples to render."),
    Flag("max_minutes"),
    Flag("init"),
    Flag("model.detail"),
    Flag("model.anchored"),
    Flag("palette"),
    Flag("data.train_families"),
    Flag("data.family_share"),
    Flag("lr"),
    Flag("warmup"),
    Flag("loss.logmse"),
    Flag("loss.ssim"),
    Flag("seed"),
]


def _serve(args: argparse.Namespace) -> int:
    from runtime.config import RuntimeConfig
    from runtime.server import serve
    from runtime.telemetry import configure_logging

    config = apply_flags(args, RuntimeConfig(), SERVE_FLAGS)
    configure_logging(config.server.log_format, config.server.log_level)
    try:
        asyncio.run(serve(config))
    except ValueError as exc:  # TLS files, token file, plaintext off loopback: the message says what to fix
        print(f"mirage serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    from runtime.demo import DemoConfig, run_demo

    run_demo(apply_flags(args, DemoConfig(), DEMO_FLAGS))
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.suite == "budget":
        from runtime.evaluation.budget import BudgetConfig, run_budget

        run_budget(apply_flags(args, BudgetConfig(), [Flag("out"), Flag("seed"), *BUDGET_FLAGS]))
        return 0
    from runtime.evaluation.suite import EvalConfig, run_eval

    run_eval(apply_flags(args, EvalConfig(), EVAL_FLAGS))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from runtime.evaluation.bench import BenchConfig, run_bench

    run_bench(apply_flags(args, BenchConfig(), BENCH_FLAGS))
    return 0


def _loadtest(args: argparse.Namespace) -> int:
    from runtime.evaluation.loadtest import LoadtestConfig, run_loadtest

    report = run_loadtest(apply_flags(args, LoadtestConfig(), LOADTEST_FLAGS))
    return 1 if report["errors"] else 0


def _loadtest_flags(p: argparse.ArgumentParser) -> None:
    from runtime.evaluation.loadtest import LoadtestConfig

    add_flags(p, LoadtestConfig(), LOADTEST_FLAGS)


def _train(args: argparse.Namespace) -> int:
    from runtime.training.train import TrainConfig, train

    run = train(apply_flags(args, TrainConfig(), TRAIN_FLAGS))
    print(f"run folder: {run}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from runtime.training.export import run_export

    return run_export(args)


def _snapshot(args: argparse.Namespace) -> int:
    from runtime.snapshot_cli import run_snapshot

    return run_snapshot(args)


def _snapshot_flags(p: argparse.ArgumentParser) -> None:
    from runtime.snapshot_cli import add_snapshot_flags

    add_snapshot_flags(p)


def _sessions(args: argparse.Namespace) -> int:
    from runtime.admin_cli import run_sessions

    return run_sessions(args)


def _sessions_flags(p: argparse.ArgumentParser) -> None:
    from runtime.admin_cli import add_sessions_flags

    add_sessions_flags(p)


def _serve_flags(p: argparse.ArgumentParser) -> None:
    from runtime.config import RuntimeConfig

    add_flags(p, RuntimeConfig(), SERVE_FLAGS)


def _demo_flags(p: argparse.ArgumentParser) -> None:
    from runtime.demo import DemoConfig

    add_flags(p, DemoConfig(), DEMO_FLAGS)


def _eval_flags(p: argparse.ArgumentParser) -> None:
    from runtime.evaluation.budget import BudgetConfig
    from runtime.evaluation.suite import EvalConfig

    add_flags(p, EvalConfig(), EVAL_FLAGS)
    add_flags(p.add_argument_group("budget suite"), BudgetConfig(), BUDGET_FLAGS)


def _bench_flags(p: argparse.ArgumentParser) -> None:
    from runtime.evaluation.bench import BenchConfig

    add_flags(p, BenchConfig(), BENCH_FLAGS)


def _train_flags(p: argparse.ArgumentParser) -> None:
    from runtime.training.train import TrainConfig

    add_flags(p, TrainConfig(), TRAIN_FLAGS)


def _export_flags(p: argparse.ArgumentParser) -> None:
    from runtime.training.export import REGISTRY, add_arguments

    p.add_argument("name", choices=sorted(REGISTRY), help="registered model to export")
    add_arguments(p)


COMMANDS = {
    "serve": ("run the gRPC runtime", _serve_flags, _serve),
    "demo": (
        "stream an out-and-back path through an embedded runtime and score the return",
        _demo_flags,
        _demo,
    ),
    "eval": (
        "cycle, persistence and fidelity evaluation through the real gRPC path; "
        "--suite budget: memory persistence against the byte budget",
        _eval_flags,
        _eval,
    ),
    "bench": ("speed and memory figures, over gRPC and in-process side by side", _bench_flags, _bench),
    "loadtest": (
        "S sessions x F frames at once over loopback gRPC, then a pose flood: errors, latency, throughput",
        _loadtest_flags,
        _loadtest,
    ),
    "train": (
        "train the learned generator on Panda3D-rendered data (CPU; resumes from its checkpoint)",
        _train_flags,
        _train,
    ),
    "export": ("export a generator to ONNX with a parity check and write its card", _export_flags, _export),
    "snapshot": (
        "memory keys, and sealed exports and imports of a running server's sessions",
        _snapshot_flags,
        _snapshot,
    ),
    "sessions": (
        "list a running server's sessions (the admin service: needs a token of its --admin-token-file)",
        _sessions_flags,
        _sessions,
    ),
}
"""command -> (help, what adds its flags, what runs it)."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `mirage` parser; with ``command``, only that command's flags are built (each command's
    config module is imported only when it runs, so `mirage serve` loads no training or evaluation)."""
    parser = argparse.ArgumentParser(
        prog="mirage", description="Mirage: video generation with persistent spatial memory"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, flags, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if command is None or command == name:
            flags(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
