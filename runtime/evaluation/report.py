"""`mirage eval` output: report.json (no NaN/Infinity tokens), report.md (compact markdown tables for
docs/benchmarks.md's tables) and the PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

PLOTS: dict[str, str] = {
    "accuracy_vs_frames": "accuracy_vs_frames.png",
    "return_psnr": "revisit_psnr_return.png",
    "contact_sheet": "contact_sheet.png",
    "memory": "memory_mirage.png",
    "generator_contact_sheet": "generator_contact_sheet.png",
}
"""Plot name -> file name inside the output folder."""

PATH_LABELS = {"out_and_back": "out-and-back", "abc_loop": "A-B-C-A"}
SHORT = {"window16": "w16", "window8": "w8", "no_memory": "none"}
DASH = "—"  # an undefined figure (null in report.json)


def persistence_display(frames: int | None, never_dropped: bool, tested: list[int]) -> str:
    """ "> max tested" when accuracy never dropped below the threshold, "< min tested" when the smallest
    N already failed, else the longest N that held."""
    if never_dropped:
        return f"> {max(tested)}"
    if frames is None:
        return f"< {min(tested)}"
    return str(frames)


def clean_json(value):
    """Plain JSON values: non-finite floats -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def environment() -> dict:
    """Machine, versions and commit, for report.json "environment"."""
    onnxruntime = _version("onnxruntime") or _version("onnxruntime-gpu")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu": _cpu_model(),
        "threads": os.cpu_count(),
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "torch": _version("torch"),
            "onnxruntime": onnxruntime,
            "grpcio": _version("grpcio"),
            "numpy": _version("numpy"),
            "panda3d": _version("panda3d"),
        },
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }


# ---------------------------------------------------------------- markdown


def _f(value, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(":--" if a == "l" else "--:" for a in align) + "|",
    ]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def cycle_table(report: dict) -> list[str]:
    baselines = [b for b in SHORT if any(b == r["method"] for r in report["cycle"])]
    clr_head = "CLR vs " + " / ".join(SHORT[b] for b in baselines)
    rows = []
    for r in report["cycle"]:
        clr = r.get("context_loss_reduction")
        rows.append(
            [
                r["scene"],
                PATH_LABELS.get(r["path"], r["path"]),
                str(r["frames"]),
                r["method"],
                _f(r["revisit_psnr"], 2),
                _f(r["revisit_ssim"], 3),
                _f(r["contextual_accuracy"], 3),
                _f(r["context_loss"], 3),
                " / ".join(_f(clr.get(b), 2) for b in baselines) if clr else "",
            ]
        )
    head = ["scene", "path", "N", "method", "PSNR dB", "SSIM", "ctx acc", "ctx loss", clr_head]
    return _table(head, rows, "llrlrrrrr")


def persistence_table(report: dict) -> list[str]:
    ns = sorted({int(n) for p in report["persistence"].values() for n in p["accuracy"]})
    rows = [
        [method, p["display"], " / ".join(_f(p["accuracy"].get(str(n)), 3) for n in ns)]
        for method, p in report["persistence"].items()
    ]
    return _table(["method", "persistence N", "ctx acc at N = " + " / ".join(map(str, ns))], rows, "lrr")


def fidelity_table(report: dict) -> list[str]:
    rows = [
        [
            r["scene"],
            r["method"],
            r.get("generator", ""),
            _f(r["psnr_all"], 2),
            _f(r["psnr_covered"], 2),
            _f(r["psnr_filled"], 2),
            _f(r["ssim_all"], 3),
            _f(None if r.get("coverage") is None else 100 * r["coverage"], 1),
        ]
        for r in report["fidelity"]
    ]
    head = [
        "scene",
        "method",
        "generator",
        "PSNR all",
        "PSNR covered",
        "PSNR filled",
        "SSIM all",
        "covered %",
    ]
    return _table(head, rows, "lllrrrrr")


def truth_table(report: dict) -> list[str]:
    """Per scene family, Mirage's memory beside Open3D's TSDF fusion against the engine's render."""
    rows = []
    by_family: dict[str, dict[str, dict]] = {}
    for r in report.get("truth", []):
        by_family.setdefault(r["family"], {})[r["method"]] = r
    for family, methods in by_family.items():
        peer = methods.get("open3d_tsdf")
        for method, r in methods.items():
            gap = ""
            if method == "mirage" and peer is not None:
                gap = _f(r["psnr_both"] - peer["psnr_both"], 2, signed=True)
            rows.append([
                family, method, _f(r["psnr_both"], 2), gap, _f(r["psnr_all"], 2), _f(r["ssim_all"], 3),
                _f(100 * r["coverage"], 2), _f(100 * r["see_through"], 2), _f(100 * r["unobserved"], 1),
            ])  # fmt: skip
    head = ["family", "memory", "PSNR both", "vs Open3D", "PSNR all", "SSIM all", "coverage %",
            "see-through %", "unobserved %"]  # fmt: skip
    return _table(head, rows, "llrrrrrrr")


def generator_table(report: dict) -> list[str]:
    rows = []
    for r in report.get("generators", []):
        for label, sub in (
            ("all", r),
            ("courtyard", r.get("courtyard")),
            ("arrangements", r.get("arrangements")),
        ):
            if not sub:
                continue
            rows.append(
                [
                    r["generator"]
                    + (" (default)" if r["generator"] == report.get("generator_default") else ""),
                    label,
                    str(sub["examples"]),
                    _f(sub["psnr_filled"], 2),
                    _f(sub["ssim_all"], 3),
                    _f(sub["gradient_ratio"], 2),
                    _f(r.get("ms_128"), 1) if label == "all" else "",
                    _f(r.get("ms_256"), 1) if label == "all" else "",
                    f"{r['model_bytes'] / 1e6:.2f}" if label == "all" else "",
                ]
            )
    kinds = sorted({k for r in report.get("generators", []) for k in r.get("by_kind", {})})
    for r in report.get("generators", []):
        for kind in kinds:
            sub = r.get("by_kind", {}).get(kind)
            if sub:
                rows.append([r["generator"], f"kind: {kind}", str(sub["examples"]), _f(sub["psnr_filled"], 2),
                             _f(sub["ssim_all"], 3), _f(sub["gradient_ratio"], 2), "", "", ""])  # fmt: skip
    head = ["generator", "held-out set", "examples", "PSNR filled", "SSIM all", "gradient ratio",
            "ms 128", "ms 256", "MB"]  # fmt: skip
    return _table(head, rows, "llrrrrrrr")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def generator_family_table(report: dict) -> list[str]:
    """Per scene family: every generator on the held-out worlds of that family, push-pull beside it
    (the differences are against push-pull's figure in the same family)."""
    rows_in = report.get("generator_families") or []
    info = report.get("generator_family_split") or {}
    held = set(info.get("held_out", []))
    base = next((r for r in rows_in if r["generator"] == "pushpull_v1"), None)
    families = list(dict.fromkeys(f for r in rows_in for f in r.get("by_scene", {})))
    rows = []
    for family in families:
        ref = (base or {}).get("by_scene", {}).get(family)
        for r in rows_in:
            sub = r["by_scene"].get(family)
            if not sub:
                continue
            name = r["generator"] + (
                " (default)" if r["generator"] == report.get("generator_default") else ""
            )
            delta_p = delta_s = ""
            if ref and r is not base:
                delta_p = _f(sub["psnr_filled"] - ref["psnr_filled"], 2, signed=True)
                delta_s = _f(sub["ssim_all"] - ref["ssim_all"], 3, signed=True)
            rows.append([
                family, "held out" if family in held else "trained", name, str(sub["examples"]),
                _f(sub["psnr_filled"], 2), delta_p, _f(sub["ssim_all"], 3), delta_s, _f(sub["gradient_ratio"], 2),
            ])  # fmt: skip
    if base and held:  # the mean over the held-out families
        for r in rows_in:
            subs = [r["by_scene"][f] for f in families if f in held and f in r["by_scene"]]
            refs = [base["by_scene"][f] for f in families if f in held and f in base["by_scene"]]
            if not subs or len(subs) != len(refs):
                continue
            p = _mean([x["psnr_filled"] for x in subs])
            s_ = _mean([x["ssim_all"] for x in subs])
            p0 = _mean([x["psnr_filled"] for x in refs])
            s0 = _mean([x["ssim_all"] for x in refs])
            name = r["generator"] + (
                " (default)" if r["generator"] == report.get("generator_default") else ""
            )
            rows.append([
                "mean of held out", "", name, str(sum(x["examples"] for x in subs)), _f(p, 2),
                "" if r is base else _f(p - p0, 2, signed=True), _f(s_, 3), "" if r is base else _f(s_ - s0, 3, signed=True), "",
            ])  # fmt: skip
    head = ["family", "", "generator", "examples", "PSNR filled", "vs push-pull", "SSIM all", "vs push-pull",
            "gradient ratio"]  # fmt: skip
    return _table(head, rows, "lllrrrrrr")


def markdown_tables(report: dict) -> str:
    """The three result tables with their headings (printed at the end and embedded in report.md)."""
    scene = report.get("persistence_scene", "")
    parts = [
        "### Cycle tests (revisit consistency)",
        "",
        *cycle_table(report),
        "",
        f"### Memory persistence ({scene}, out-and-back: longest N with contextual accuracy >= 0.90)",
        "",
        *persistence_table(report),
        "",
        "### Fidelity against the engine's render (held-out poses, observe mode)",
        "",
        *fidelity_table(report),
    ]
    if report.get("truth"):
        parts += [
            "",
            "### Memory against the truth per scene family (Mirage beside Open3D's TSDF fusion)",
            "",
            *truth_table(report),
        ]
    if report.get("generators"):
        parts += [
            "",
            "### Generators side by side (held-out test split: courtyard scene + held-out arrangements)",
            "",
            *generator_table(report),
        ]
    if report.get("generator_families"):
        parts += [
            "",
            "### Generators per scene family (held-out worlds; families no generator trained on first)",
            "",
            *generator_family_table(report),
        ]
    return "\n".join(parts)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def markdown(report: dict) -> str:
    env = report["environment"]
    v = env["versions"]
    commit = (env.get("git_commit") or "unknown")[:12] + (
        " (uncommitted changes)" if env.get("git_dirty") else ""
    )
    plan = report["plan"]
    scenes = "; ".join(
        f"{name} at {s['size']}x{s['size']}: out-and-back N = {', '.join(map(str, s['out_and_back']))}"
        + (f", A-B-C-A with {s['abc_n_per_leg']} poses per leg" if s["abc_n_per_leg"] else "")
        for name, s in plan["scenes"].items()
    )
    fid = plan["fidelity"]
    lines = [
        f"# Mirage evaluation: `{report['suite']}` suite",
        "",
        f"Machine: {env['cpu']}, {env['threads']} logical CPUs, CPU only. Commit {commit}. "
        f"Python {v['python']}, torch {v['torch']}, onnxruntime {v['onnxruntime']}, grpcio {v['grpcio']}, "
        f"numpy {v['numpy']}, panda3d {v['panda3d']}. Seed {report['seed']}. "
        f"Wall time {_minutes(report['seconds'])}, start-up included.",
    ]
    if "estimated_full_seconds" in report:
        lines.append(
            f"Estimated `full` suite on this machine: {_minutes(report['estimated_full_seconds'])} "
            "(from the per-frame cost measured here at each method's largest N)."
        )
    lines += [
        "",
        "## What ran",
        "",
        f"- Scenes (Panda3D, documented arrangements): {scenes}.",
        "- Every path runs through the real gRPC path (embedded runtime on a free port, the async client, "
        "lock-step). Each session first gets "
        f"{plan['seed_observations']} engine RGB-D observations over the first quarter of the path "
        "(of leg A->B for A-B-C-A), then streams the path in generate mode.",
        "- Methods, same generator (the runtime's default), only memory differs: mirage (persistent spatial memory), window16 / "
        "window8 (memory of the last 16 / 8 frames), no_memory (previous frame only).",
        "- Cycle metrics compare each return frame with the outbound frame at the same pose, averaged "
        "over pairs: N pairs for out-and-back (N = outbound frames), one pair for A-B-C-A (A at the start "
        "vs A at the end; N = 3 x poses per leg, the frames walked before the return). Contextual accuracy: "
        "fraction of pixels whose largest channel difference is <= 8/255. CLR: context-loss reduction of "
        "mirage vs each baseline, 1 - loss(mirage) / loss(baseline). Per-pair PSNR is capped at 100 dB.",
        f"- Fidelity: per scene, {fid['observations']} engine RGB-D observations (one pose in every "
        f"{fid['stride']} of an out-and-back outbound path) stream into a session; at {fid['views']} held-out poses "
        "(path poses moved 0.3-0.6 m sideways and turned 5-15 degrees, seeded) mirage's what-if frame "
        "(ContextualInference, commit=false) is compared with Panda3D's render. Covered: pixels the memory "
        "render covers (coverage >= 0.5, from SpatialMemoryQuery); filled: the rest, made by the generator. "
        "warp_nearest: the nearest observation (camera distance) forward-warped with a z-buffer, its holes "
        "filled by the same generator; covered = pixels the warp reached. Figures are means over views. "
        + (
            f"Besides the scenes, the truth test's world of each of the families {', '.join(fid['families'])} "
            "runs it too (at the truth test's size)."
            if fid.get("families")
            else ""
        ),
        "- Truth per scene family (`runtime.evaluation.truth`): in one world of each family "
        "(`runtime.scenes.families`: tiled, textured and flat grounds; bright, overcast, dusk and no sky; "
        "indoor and outdoor; near and far content; memory's colour fusion and its fused front's reach were "
        "chosen among variants measured on seed 0's hall and tiled_yard, docs/memory.md), the same engine RGB-D "
        "observations stream into a Mirage session and into Open3D's TSDF fusion (tensor VoxelBlockGrid, "
        "2 cm voxels); at held-out poses, half beside the path (0.3-0.6 m sideways, turned 5-15 degrees) and "
        "half up close (moved forward to 45 % of the depth at the image centre, at most 3 m), each memory is "
        "rendered (Mirage by SpatialMemoryQuery, memory unchanged; Open3D by ray casting) and compared with "
        "the engine's render. PSNR both: over the pixels both cover with a surface; PSNR / SSIM all: the "
        "whole render (Mirage draws the sky from its environment map, Open3D leaves it black); coverage: of "
        "the truth's surface pixels in range (40 m) that an observed frame saw, the share the memory covers; "
        "see-through: of those, the share showing no surface or one more than 10 % beyond the truth; "
        "unobserved: the truth's surface pixels no observed frame saw (left out of both). Open3D's rows are "
        "missing where open3d is not installed (`pip install -e .[peers]`).",
        "- Generators: every shipped model runs mirage's cycle tests (rows `mirage (NAME)` when NAME is not "
        "the runtime's default) and the fidelity test. On the held-out generator test split (Panda3D "
        "examples never trained on: the courtyard scene and held-out random arrangements; memory built from "
        "1-8 context views and rendered into a target pose), each model completes the memory render, covered "
        "pixels are kept and the frame is scored against the engine's: PSNR over the filled pixels, SSIM over "
        "the whole frame, gradient ratio = image-gradient energy of the filled pixels over the truth's at the "
        "same pixels (1 = as sharp as the engine), and the model alone in onnxruntime (2 threads, median ms).",
        "- Generators per scene family: the same scoring on examples rendered in held-out worlds (seeds no "
        "training world uses) of every scene family, camera on the families' ring; the families no generator "
        "trained on (`runtime.training.dataset.HELD_OUT_FAMILIES`) first, then those learned_v3 trained on. "
        "vs push-pull: the difference to pushpull_v1 in the same family; the last rows are means over the "
        "held-out families.",
        f"- {DASH} in a table (null in report.json) means undefined: a context-loss reduction against a "
        "baseline that lost nothing, or a PSNR over a region with no pixels in any view.",
        "",
        markdown_tables(report).replace("### ", "## "),
        "",
        "## Plots",
        "",
        f"- [Contextual accuracy against N]({PLOTS['accuracy_vs_frames']}) (out-and-back, log N)",
        f"- [Revisit PSNR along the return path]({PLOTS['return_psnr']}) "
        f"({report.get('persistence_scene', '')}, largest N)",
        f"- [Contact sheet: outbound vs return frames per method]({PLOTS['contact_sheet']})",
        f"- [Mirage memory points and bytes over the run]({PLOTS['memory']})",
        f"- [Generators on held-out examples: memory render (holes magenta), each model, the engine's truth]"
        f"({PLOTS['generator_contact_sheet']})",
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    """OUT/report.json (strict JSON: undefined figures are null) and OUT/report.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(clean_json(report), indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(markdown(report))


# ---------------------------------------------------------------- plots

_COLOURS = {"mirage": "tab:blue", "window16": "tab:orange", "window8": "tab:green", "no_memory": "tab:red"}


def plot_accuracy(report: dict, path: Path) -> None:
    rows = [r for r in report["cycle"] if r["path"] == "out_and_back"]
    scenes = list(dict.fromkeys(r["scene"] for r in rows))
    fig, axes = plt.subplots(1, max(len(scenes), 1), figsize=(5 * max(len(scenes), 1), 3.8), squeeze=False)
    for ax, scene in zip(axes[0], scenes, strict=False):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted(
                (r["frames"], r["contextual_accuracy"])
                for r in rows
                if r["scene"] == scene and r["method"] == method
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=method, color=_COLOURS.get(method))
        ax.axhline(0.9, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ns = sorted({r["frames"] for r in rows if r["scene"] == scene})
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("outbound frames N")
        ax.set_ylabel("contextual accuracy")
        ax.set_title(f"{scene}: out-and-back")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_return_psnr(series: dict[str, list[float]], frames: int, scene: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for method, values in series.items():
        ax.plot(range(len(values)), values, label=method, color=_COLOURS.get(method), linewidth=1)
    ax.set_xlabel("return index (frames since the turn; later = further back along the path)")
    ax.set_ylabel("revisit PSNR (dB)")
    ax.set_title(f"{scene}: out-and-back N={frames}, return frame vs outbound frame")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_memory(points: list[int], nbytes: list[int], frames: int, scene: str, path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    x = range(len(points))
    ax1.plot(x, points, color="tab:blue")
    ax1.set_ylabel("memory points")
    ax2.plot(x, [b / 2**20 for b in nbytes], color="tab:purple")
    ax2.set_ylabel("memory MiB")
    ax2.set_xlabel("frame")
    for ax in (ax1, ax2):
        ax.axvline(frames - 0.5, color="grey", linestyle="--", linewidth=0.8)
    ax1.set_title(f"mirage memory, {scene}: out-and-back N={frames} (dashed: the turn)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(report: dict, showcase, out: Path) -> None:
    """Every PNG but the contact sheet (written during the run, while its frames are at hand)."""
    out.mkdir(parents=True, exist_ok=True)
    scene = report.get("persistence_scene", "")
    plot_accuracy(report, out / PLOTS["accuracy_vs_frames"])
    plot_return_psnr(showcase.return_psnr, showcase.frames, scene, out / PLOTS["return_psnr"])
    plot_memory(showcase.memory_points, showcase.memory_bytes, showcase.frames, scene, out / PLOTS["memory"])
