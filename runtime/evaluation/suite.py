"""`mirage eval`: cycle tests, memory persistence, fidelity and generators side by side.

An embedded runtime on a free port, the real async client and the Panda3D scene source (as in
`mirage demo`). Writes OUT/report.json (layout stable for scripts), OUT/report.md and PNG plots, and
prints the markdown tables. What each suite runs is the one table ``SUITES`` below. Every generator
in ``EvalConfig.generators`` (the runtime's default first, then the other shipped float model) runs mirage's
cycle tests and the fidelity test; every shipped model (``EvalConfig.table_generators``) is scored on
the held-out generator test split (``runtime.training.scoring``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from plugin_bridge.client import AsyncMirageClient
from runtime.config import RuntimeConfig
from runtime.evaluation import report as R
from runtime.evaluation.cycle import METHOD_WINDOWS, CycleRun, run_cycle, write_contact_sheet
from runtime.evaluation.fidelity import FidelitySpec, run_fidelity
from runtime.evaluation.generators import contact_sheet
from runtime.evaluation.truth import TruthSpec, run_truth, truth_units
from runtime.generator.host import available_models, models_with_detail
from runtime.metrics import PSNR_CAP_DB, context_loss_reduction, memory_persistence, psnr
from runtime.scenes.panda_source import PandaSceneSource, SceneConfig
from runtime.scenes.paths import abc_loop, out_and_back, revisit_pairs, seed_poses_for
from runtime.server import run_server, stop_server
from runtime.training.dataset import (
    HELD_OUT_FAMILIES,
    TRAIN_FAMILIES,
    DatasetConfig,
    Split,
    build_dataset,
    family_test_config,
)
from runtime.training.scoring import compare_generators, load_generator

BASELINES: tuple[str, ...] = tuple(m for m in METHOD_WINDOWS if m != "mirage")
"""The memory baselines mirage's context-loss reduction is reported against."""


@dataclass(frozen=True)
class SceneRuns:
    size: int
    """Square frame size in pixels (multiple of 8)."""
    out_and_back: tuple[int, ...]
    """Outbound frame counts N of the out-and-back cycle tests (each comes back along N more)."""
    abc_n_per_leg: int | None
    """Poses per leg of the A->B->C->A loop (None: no loop)."""


@dataclass(frozen=True)
class SuiteSpec:
    scenes: dict[str, SceneRuns]
    """Scene name -> what runs in it; the first scene is the persistence scene and the plots' scene."""
    seed_observations: int
    """Engine RGB-D observations sent at the start of every cycle session (first quarter of the path)."""
    fidelity: FidelitySpec = field(default_factory=FidelitySpec)
    """Observe-mode fidelity against the engine's render, per scene."""
    generator_data: DatasetConfig = field(default_factory=DatasetConfig)
    """Dataset whose held-out ``test`` split (courtyard + held-out arrangements) scores the generators."""
    family_data: DatasetConfig = field(default_factory=family_test_config)
    """Dataset whose ``test`` split (held-out worlds of every scene family) scores the generators per
    family: the families no generator trains on, then the training ones."""
    truth: TruthSpec = field(default_factory=TruthSpec)
    """Memory against the engine's render per scene family, Open3D's TSDF fusion beside it."""
    fidelity_families: tuple[str, ...] = (*HELD_OUT_FAMILIES, *TRAIN_FAMILIES)
    """Scene families (of those the truth test builds) whose world also runs the fidelity test with
    every generator: generate-side figures in worlds no generator trained on."""

    @property
    def persistence_scene(self) -> str:
        return next(iter(self.scenes))


SUITES: dict[str, SuiteSpec] = {
    # a few frames at 64x64, for the CI test
    "tiny": SuiteSpec(
        scenes={"garden": SceneRuns(64, (4,), 3), "courtyard": SceneRuns(64, (4,), 3)},
        seed_observations=2,
        fidelity=FidelitySpec(observations=6, stride=2, views=3),
        generator_data=DatasetConfig(
            size=64, examples={"train": 0, "val": 0, "test": 4}, per_arrangement=2, context_views=(1, 3)
        ),
        family_data=family_test_config(size=64, per_family=2, per_arrangement=2),
        truth=TruthSpec(size=48, observations=4, stride=3, views=2),
        fidelity_families=("tiled_yard",),
    ),
    # under 5 minutes on 2 CPU cores: courtyard only at N=100 (persistence and plots use garden)
    "quick": SuiteSpec(
        scenes={"garden": SceneRuns(128, (100, 300), 40), "courtyard": SceneRuns(128, (100,), 40)},
        seed_observations=6,
        fidelity=FidelitySpec(observations=40, stride=5, views=20),
    ),
    # under 45 minutes on 2 CPU cores (estimated from quick's measured per-frame cost): courtyard
    # stops at N=1000, its N=3000 alone would cost about 15 minutes more
    "full": SuiteSpec(
        scenes={
            "garden": SceneRuns(128, (100, 300, 1000, 3000), 100),
            "courtyard": SceneRuns(128, (100, 300, 1000), 100),
        },
        seed_observations=6,
        fidelity=FidelitySpec(observations=40, stride=5, views=20),
    ),
}
"""What each suite runs."""


@dataclass
class EvalConfig:
    suite: str = "quick"
    """Which entry of SUITES to run: tiny (CI), quick (< 5 min) or full (< 45 min)."""
    out: Path = Path("eval_out")
    """Output folder for report.json, report.md and the PNG plots."""
    seed: int = 0
    """Seed for the camera paths, held-out poses and sessions (deterministic replay)."""
    progress: bool = True
    """Show a tqdm progress bar over the whole run."""
    generators: tuple[str, ...] = ()
    """Models (``NAME`` or ``NAME@DETAIL``) that run the cycle and fidelity tests; empty: the runtime's
    default (and, when it has detail control, the same model at detail 0), then its baseline (the
    first of pushpull_v1 / learned_v1 that is not the default)."""
    table_generators: tuple[str, ...] = ()
    """Models scored on the held-out generator test split; empty: every shipped model, default first."""

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"unknown suite {self.suite!r}; valid: {', '.join(SUITES)}")
        self.out = Path(self.out)
        default = RuntimeConfig().generator.name
        shipped = available_models()
        plain = set(models_with_detail())
        if not self.generators:
            baseline = [n for n in ("pushpull_v1", "learned_v1") if n != default and n in shipped]
            # a default with detail control also runs without its detail (NAME@0)
            self.generators = (default, *((f"{default}@0",) if default in plain else ()), *baseline[:1])
        if not self.table_generators:
            # a model with detail control is also scored without its detail (NAME@0)
            order = (default, *(n for n in shipped if n != default))
            self.table_generators = tuple(x for n in order for x in ((n, f"{n}@0") if n in plain else (n,)))

    @property
    def spec(self) -> SuiteSpec:
        return SUITES[self.suite]


def cycle_plan(spec: SuiteSpec) -> list[tuple[str, str, int, int]]:
    """(scene, path kind, frames, path parameter) per cycle group, in run order.

    frames is N for out_and_back and 3 * n_per_leg (frames walked before the return to A) for abc_loop.
    """
    plan = []
    for scene, runs in spec.scenes.items():
        plan += [(scene, "out_and_back", n, n) for n in runs.out_and_back]
        if runs.abc_n_per_leg:
            plan.append((scene, "abc_loop", 3 * runs.abc_n_per_leg, runs.abc_n_per_leg))
    return plan


def _path(kind: str, param: int, seed: int) -> list[np.ndarray]:
    return out_and_back(param, seed=seed) if kind == "out_and_back" else abc_loop(param, seed=seed)


def path_frames(kind: str, param: int) -> int:
    """Frames streamed for one method on one path."""
    return 2 * param if kind == "out_and_back" else 3 * param + 1


def total_frames(spec: SuiteSpec, generators: int = 1) -> int:
    """Progress units: every streamed cycle frame, every fidelity observation and held-out view."""
    runs = len(METHOD_WINDOWS) + generators - 1  # mirage once per generator
    cycle = sum(path_frames(kind, p) for _, kind, _, p in cycle_plan(spec)) * runs
    fid = spec.fidelity
    scenes = len(spec.scenes) + len(fidelity_families(spec))
    return cycle + scenes * (fid.observations + fid.views) * generators + truth_units(spec.truth)


def fidelity_families(spec: SuiteSpec) -> list[str]:
    """The families whose truth world also runs the fidelity test, in the truth test's order."""
    return [f for f in spec.truth.families if f in spec.fidelity_families]


def method_label(method: str, generator: str, default: str) -> str:
    """Row label: the method, with the generator when it is not the default one."""
    return method if generator == default else f"{method} ({generator})"


def pair_psnr(run: CycleRun) -> list[float]:
    """Per-pair revisit PSNR in return order (capped at PSNR_CAP_DB, as in revisit_scores)."""
    pairs = sorted(run.pairs, key=lambda p: p[1])
    return [min(psnr(run.frames_rgb[i], run.frames_rgb[j]), PSNR_CAP_DB) for i, j in pairs]


def cycle_rows(
    scene: str, kind: str, frames: int, size: int, runs: list[CycleRun], streamed: int
) -> list[dict]:
    """report.json "cycle" rows for one (scene, path, frames) group of runs that streamed ``streamed``
    frames each; mirage's row carries its context-loss reduction against each baseline."""
    rows = []
    for run in runs:
        acc = run.scores.contextual_accuracy
        rows.append(
            {
                "scene": scene,
                "path": kind,
                "frames": frames,
                "method": run.method,
                "revisit_psnr": run.scores.psnr,
                "revisit_ssim": run.scores.ssim,
                "contextual_accuracy": acc,
                "context_loss": 1.0 - acc,
                "size": size,
                "pairs": len(run.pairs),
                "seconds": run.seconds,
                "ms_per_frame": 1e3 * run.seconds / max(streamed, 1),
            }
        )
    loss = {r["method"]: r["context_loss"] for r in rows}
    for r in rows:
        if r["method"] == "mirage":
            r["context_loss_reduction"] = {
                b: context_loss_reduction(loss["mirage"], loss[b]) for b in BASELINES if b in loss
            }
    return rows


def persistence(rows: list[dict], scene: str) -> dict[str, dict]:
    """report.json "persistence": per method, from the out-and-back rows of ``scene``."""
    result = {}
    for method in METHOD_WINDOWS:
        by_n = {
            r["frames"]: r["contextual_accuracy"]
            for r in rows
            if r["scene"] == scene and r["path"] == "out_and_back" and r["method"] == method
        }
        n, never = memory_persistence(by_n)
        result[method] = {
            "frames": n,
            "never_dropped": never,
            "display": R.persistence_display(n, never, list(by_n)),
            "accuracy": {str(k): v for k, v in sorted(by_n.items())},
        }
    return result


@dataclass
class _Showcase:
    """What the plots need beyond report.json (the persistence scene's largest out-and-back N)."""

    frames: int = 0
    return_psnr: dict[str, list[float]] = field(default_factory=dict)
    memory_points: list[int] = field(default_factory=list)
    memory_bytes: list[int] = field(default_factory=list)


async def _run(config: EvalConfig, bar: tqdm) -> tuple[list[dict], list[dict], list[dict], _Showcase]:
    spec = config.spec
    runtime_config = RuntimeConfig()
    runtime_config.server.port = 0
    server, port = await run_server(runtime_config)
    hosts = [(label, *load_generator(label)) for label in config.generators]  # (label, host, detail)
    default = runtime_config.generator.name
    show_scene = spec.persistence_scene
    show_n = max(spec.scenes[show_scene].out_and_back)
    showcase = _Showcase(frames=show_n)
    rows: list[dict] = []
    fidelity: list[dict] = []
    truth: list[dict] = []
    config.out.mkdir(parents=True, exist_ok=True)
    try:
        async with AsyncMirageClient(f"127.0.0.1:{port}") as client:
            for scene_name, runs_spec in spec.scenes.items():
                size = runs_spec.size
                scene_config = SceneConfig(name=scene_name, width=size, height=size)
                with PandaSceneSource(scene_config) as scene:
                    for name, kind, frames, param in cycle_plan(spec):
                        if name != scene_name:
                            continue
                        path = _path(kind, param, config.seed)
                        pairs = revisit_pairs(kind, param)
                        seeds = seed_poses_for(path, param, spec.seed_observations)
                        showcase_group = (scene_name, kind, frames) == (show_scene, "out_and_back", show_n)
                        runs = []
                        plan = [(m, default) for m in METHOD_WINDOWS]
                        plan[1:1] = [("mirage", g) for g in config.generators if g != default]
                        for method, gen in plan:
                            bar.set_postfix_str(f"{scene_name} {kind} N={frames} {method} {gen}")
                            run = await run_cycle(
                                client,
                                scene,
                                path,
                                pairs,
                                method=method,
                                seed_poses=seeds,
                                seed=config.seed,
                                generator=gen,
                                progress=bar.update,
                            )
                            run.method = method_label(method, gen, default)
                            if showcase_group:
                                showcase.return_psnr[run.method] = pair_psnr(run)
                            else:
                                run.frames_rgb.clear()  # scored already: keep memory flat
                            runs.append(run)
                        rows += cycle_rows(scene_name, kind, frames, size, runs, len(path))
                        if showcase_group:
                            write_contact_sheet(runs, config.out / R.PLOTS["contact_sheet"])
                            mirage = next(run for run in runs if run.method == "mirage")
                            showcase.memory_points = list(mirage.memory_points)
                            showcase.memory_bytes = list(mirage.memory_bytes)
                            for run in runs:
                                run.frames_rgb.clear()
                    for label, host, detail in hosts:
                        bar.set_postfix_str(f"{scene_name} fidelity {label}")
                        fidelity += await run_fidelity(
                            client,
                            scene,
                            scene_name,
                            host,
                            spec.fidelity,
                            seed=config.seed,
                            detail=detail,
                            label=label,
                            progress=bar.update,
                        )
            truth_spec = spec.truth
            for family in truth_spec.families:
                bar.set_postfix_str(f"truth {family}")
                family_config = SceneConfig(
                    name=family, width=truth_spec.size, height=truth_spec.size, seed=config.seed
                )
                with PandaSceneSource(family_config) as scene:
                    truth += await run_truth(
                        client, scene, family, truth_spec, seed=config.seed, progress=bar.update
                    )
                    if family not in fidelity_families(spec):
                        continue
                    for label, host, detail in hosts:
                        bar.set_postfix_str(f"{family} fidelity {label}")
                        fidelity += await run_fidelity(
                            client, scene, family, host, spec.fidelity, seed=config.seed, detail=detail,
                            label=label, progress=bar.update,
                        )  # fmt: skip
    finally:
        await stop_server(server, 1.0)
    return rows, fidelity, truth, showcase


def estimate_seconds(spec: SuiteSpec, rows: list[dict], fixed_s: float) -> float:
    """Wall time of ``spec``: its cycle frames at this run's measured cost per frame and method (taken
    at each method's largest measured N, the most expensive point), plus ``fixed_s`` (start-up,
    fidelity, plots) scaled by the number of scenes."""
    ms = {}
    for method in METHOD_WINDOWS:
        mine = [r for r in rows if r["method"] == method and r["path"] == "out_and_back"]
        ms[method] = max(mine, key=lambda r: (r["frames"], r["ms_per_frame"]))["ms_per_frame"]
    frames = sum(path_frames(kind, p) for _, kind, _, p in cycle_plan(spec))
    scenes_here = max(len({r["scene"] for r in rows}), 1)
    return fixed_s * len(spec.scenes) / scenes_here + frames * sum(ms.values()) / 1e3


def run_eval(config: EvalConfig) -> dict:
    """Run the suite and write OUT/report.json, OUT/report.md and the plots; returns the report dict."""
    started = time.perf_counter()
    spec = config.spec
    with tqdm(
        total=total_frames(spec, len(config.generators)),
        desc=f"eval {config.suite}",
        unit="frame",
        disable=not config.progress,
    ) as bar:
        rows, fidelity, truth, showcase = asyncio.run(_run(config, bar))
    data = spec.generator_data
    split = Split(build_dataset(data, progress=config.progress, splits=("test",)) / "test")
    generators = compare_generators(list(config.table_generators), split, data.fov_x_deg, seed=config.seed)
    fam = spec.family_data
    fam_split = Split(build_dataset(fam, progress=config.progress, splits=("test",)) / "test")
    family_rows = compare_generators(
        list(config.table_generators), fam_split, fam.fov_x_deg, seed=config.seed, timing=False, by_scene=True
    )
    config.out.mkdir(parents=True, exist_ok=True)
    contact_sheet(
        list(config.table_generators), split, data.fov_x_deg, config.out / R.PLOTS["generator_contact_sheet"],
        seed=config.seed,
    )  # fmt: skip
    report = {
        "suite": config.suite,
        "seed": config.seed,
        "seconds": None,
        "cycle": rows,
        "persistence_scene": spec.persistence_scene,
        "persistence": persistence(rows, spec.persistence_scene),
        "fidelity": fidelity,
        "truth": truth,
        "generators": generators,
        "generator_default": RuntimeConfig().generator.name,
        "generator_test_split": {"examples": len(split), "dataset": data.key(), "size": data.size},
        "generator_families": family_rows,
        "generator_family_split": {
            "examples": len(fam_split),
            "dataset": fam.key(),
            "size": fam.size,
            "held_out": list(HELD_OUT_FAMILIES),
            "trained": list(TRAIN_FAMILIES),
        },
        "environment": R.environment(),
        "plan": {
            "scenes": {
                name: {"size": s.size, "out_and_back": list(s.out_and_back), "abc_n_per_leg": s.abc_n_per_leg}
                for name, s in spec.scenes.items()
            },
            "methods": dict(METHOD_WINDOWS),
            "seed_observations": spec.seed_observations,
            "fidelity": {
                "observations": spec.fidelity.observations,
                "stride": spec.fidelity.stride,
                "views": spec.fidelity.views,
                "families": fidelity_families(spec),
            },
            "truth": {
                "families": list(spec.truth.families),
                "size": spec.truth.size,
                "observations": spec.truth.observations,
                "stride": spec.truth.stride,
                "views": spec.truth.views,
                "depth_range": spec.truth.depth_range,
                "voxel_size": spec.truth.voxel_size,
            },
        },
        "plots": dict(R.PLOTS),
    }
    R.write_plots(report, showcase, config.out)
    seconds = time.perf_counter() - started
    report["seconds"] = seconds
    if config.suite == "quick" and rows:
        fixed_s = max(seconds - sum(r["seconds"] for r in rows), 0.0)  # start-up, fidelity, plots
        report["estimated_full_seconds"] = estimate_seconds(SUITES["full"], rows, fixed_s)
    R.write_report(report, config.out)
    print()
    print(R.markdown_tables(report))
    print(f"wrote {config.out / 'report.json'} and {config.out / 'report.md'} in {seconds:.1f} s")
    return report
