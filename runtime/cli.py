"""`mirage` command line: serve, demo, eval, bench, train, export."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

MiB = 2**20


def _serve(args: argparse.Namespace) -> int:
    from runtime.config import RuntimeConfig
    from runtime.server import serve

    config = RuntimeConfig()
    config.server.host = args.host
    config.server.port = args.port
    config.memory.budget_bytes = int(args.budget_mib * MiB)
    if args.generator:
        config.generator.name = args.generator
    if args.models_dir:
        config.generator.models_dir = args.models_dir
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(config))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from runtime.demo import DemoConfig, run_demo

    config = DemoConfig(
        out=Path(args.out), frames=args.frames, size=args.size, scene=args.scene, seed=args.seed
    )
    run_demo(config)
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.suite == "budget":
        from runtime.evaluation.budget import BudgetConfig, run_budget

        config = BudgetConfig(out=Path(args.out), seed=args.seed)
        if args.budgets:
            config.budgets_mib = tuple(int(b) for b in args.budgets.split(","))
        if args.frames:
            config.frames = tuple(int(n) for n in args.frames.split(","))
        if args.storage:
            config.storage = tuple(s.strip() for s in args.storage.split(",") if s.strip())
        run_budget(config)
        return 0
    from runtime.evaluation.suite import EvalConfig, run_eval

    chosen = tuple(g.strip() for g in args.generators.split(",") if g.strip())
    run_eval(EvalConfig(suite=args.suite, out=Path(args.out), seed=args.seed, generators=chosen))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from runtime.evaluation.bench import BenchConfig, run_bench

    sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip())
    run_bench(
        BenchConfig(
            sizes=sizes,
            frames=args.frames,
            soak_frames=args.soak_frames,
            soak_storage=args.soak_storage,
            json_path=args.json,
        )
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from runtime.training.train import TrainConfig, train

    config = TrainConfig(seed=args.seed, max_minutes=args.max_minutes)
    if args.run:
        config.run_dir = args.run
    if args.steps:
        config.steps = args.steps
    if args.init:
        config.init = args.init
    if args.lr:
        config.lr = args.lr
    if args.warmup >= 0:
        config.warmup = args.warmup
    if args.logmse:
        config.loss.logmse = args.logmse
    config.model.detail = args.detail
    if args.train_examples:
        config.data.examples = {**config.data.examples, "train": args.train_examples}
    run = train(config)
    print(f"run folder: {run}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from runtime.training.export import run_export

    return run_export(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirage", description="Mirage: video generation with persistent spatial memory"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC runtime")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback)")
    serve.add_argument("--port", type=int, default=50051, help="TCP port (0: any free port)")
    serve.add_argument("--budget-mib", type=float, default=128, help="default memory budget per session, MiB")
    serve.add_argument("--generator", default="", help="default exported model name")
    serve.add_argument(
        "--models-dir", default="", help="folder of exported models (default: exported_models/)"
    )
    serve.set_defaults(func=_serve)

    demo = sub.add_parser(
        "demo", help="stream an out-and-back path through an embedded runtime and score the return"
    )
    demo.add_argument("--out", default="demo_out", help="output folder")
    demo.add_argument("--frames", type=int, default=200, help="outbound frames N (the return adds N more)")
    demo.add_argument("--size", type=int, default=128, help="frame size in pixels (square, multiple of 8)")
    demo.add_argument("--scene", default="garden", help="Panda3D scene arrangement")
    demo.add_argument("--seed", type=int, default=0, help="seed for deterministic replay")
    demo.set_defaults(func=_demo)

    ev = sub.add_parser("eval", help="cycle, persistence and fidelity evaluation through the real gRPC path")
    ev.add_argument(
        "--suite",
        choices=("tiny", "quick", "full", "budget"),
        default="quick",
        help="how much to run; budget: memory persistence against the byte budget",
    )
    ev.add_argument(
        "--budgets", default="", help="budget suite: comma-separated budgets in MiB (default 8,32,128)"
    )
    ev.add_argument(
        "--frames",
        default="",
        help="budget suite: comma-separated outbound lengths N (default 300,1000,3000,10000)",
    )
    ev.add_argument(
        "--storage",
        default="",
        help="budget suite: comma-separated memory storage modes (default full,quantised)",
    )
    ev.add_argument(
        "--generators",
        default="",
        help="comma-separated models (NAME or NAME@DETAIL) that run the cycle and fidelity tests "
        "(default: the runtime's default, at detail 0 too when it has detail control, and push-pull)",
    )
    ev.add_argument("--out", default="eval_out", help="folder for report.json, report.md and plots")
    ev.add_argument("--seed", type=int, default=0, help="seed for paths and sessions")
    ev.set_defaults(func=_eval)

    bench = sub.add_parser("bench", help="speed and memory figures, over gRPC and in-process side by side")
    bench.add_argument("--sizes", default="128,256", help="comma-separated square frame sizes")
    bench.add_argument("--frames", type=int, default=200, help="frames per size for FPS and latency")
    bench.add_argument("--soak-frames", type=int, default=2000, help="frames of the RSS soak (0 skips it)")
    bench.add_argument(
        "--soak-storage", default="full", choices=("full", "quantised"), help="memory storage of the soak"
    )
    bench.add_argument("--json", default="", help="also write the figures to this JSON file")
    bench.set_defaults(func=_bench)

    tr = sub.add_parser(
        "train",
        help="train the learned generator on Panda3D-rendered data (CPU; resumes from its checkpoint)",
    )
    tr.add_argument("--run", default="", help="run folder (default ~/.cache/mirage/runs/learned_v1)")
    tr.add_argument("--steps", type=int, default=0, help="optimiser steps (default: the shipped model's)")
    tr.add_argument(
        "--train-examples", type=int, default=0, help="training examples to render (default 10000)"
    )
    tr.add_argument("--max-minutes", type=float, default=0.0, help="stop with a checkpoint after this long")
    tr.add_argument("--init", default="", help="start from this model.safetensors of an earlier run")
    tr.add_argument(
        "--detail", action="store_true", help="train a model with noise-modulated detail (see LearnedConfig)"
    )
    tr.add_argument("--lr", type=float, default=0.0, help="peak learning rate (default 2e-3)")
    tr.add_argument("--warmup", type=int, default=-1, help="warm-up steps (default 200)")
    tr.add_argument("--logmse", type=float, default=0.0, help="weight of the per-example log-MSE loss")
    tr.add_argument("--seed", type=int, default=0, help="seed for data, initialisation and batches")
    tr.set_defaults(func=_train)

    from runtime.training.export import REGISTRY, add_arguments

    ex = sub.add_parser("export", help="export a generator to ONNX with a parity check and write its card")
    ex.add_argument("name", choices=sorted(REGISTRY), help="registered model to export")
    add_arguments(ex)
    ex.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
