"""Generators scored side by side on dataset examples (``runtime.training.dataset``): training's
validation, export's card figures and `mirage eval`'s generator table all use these.

For each example, the memory render (colour, depth, coverage) goes through a generator; the pixels
memory covered are kept, the rest come from the generator, exactly as the session composes a frame.
Scores against the engine's own frame at the target pose:

- ``psnr_filled``: PSNR over the filled pixels (memory coverage < 0.5), averaged over examples;
- ``ssim_all``: SSIM of the whole composed frame;
- ``gradient_ratio``: image-gradient energy of the filled pixels over that of the truth at the same
  pixels (``metrics.gradient_energy``, means over examples first): 1 is as sharp as the engine,
  near 0 is a smooth blur.
- ``ms_128`` / ``ms_256``: the generator alone in onnxruntime, median of repeated runs (when timed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from plugin_bridge.camera import Intrinsics
from runtime.generator.host import ray_directions
from runtime.metrics import PSNR_CAP_DB, gradient_energy, psnr, ssim

FEED_NAMES = ("memory_rgb", "memory_depth", "memory_coverage", "ray_dirs", "noise")


def example_feeds(
    split, idx: np.ndarray, rays: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The generator's inputs [N, C, H, W] for examples ``idx`` of ``split`` (noise drawn from ``rng``)."""
    n = len(idx)
    h, w = split["memory_depth"].shape[1:3]
    rgb = np.asarray(split["memory_rgb"][idx], dtype=np.float32) / 255.0
    return {
        "memory_rgb": np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)),
        "memory_depth": np.asarray(split["memory_depth"][idx], dtype=np.float32)[:, None],
        "memory_coverage": np.asarray(split["memory_coverage"][idx], dtype=np.float32)[:, None] / 255.0,
        "ray_dirs": np.ascontiguousarray(np.broadcast_to(rays[None], (n, 3, h, w))),
        "noise": rng.standard_normal((n, 1, h, w), dtype=np.float32),
    }


def calibration_feeds(
    split, fov_x_deg: float, count: int, names, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """``count`` single-example feeds [1,C,H,W] spread over ``split`` (for int8 calibration)."""
    h, w = split["memory_depth"].shape[1:3]
    rays = ray_directions(Intrinsics.from_fov(w, h, fov_x_deg))
    picks = np.linspace(0, len(split) - 1, num=min(count, len(split))).round().astype(np.int64)
    out = []
    for i in picks:
        feeds = example_feeds(split, np.array([i]), rays, np.random.default_rng([seed, int(i)]))
        out.append({n: feeds[n] for n in names})
    return out


def score_examples(
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    split,
    fov_x_deg: float,
    *,
    seed: int = 0,
    batch: int = 16,
    keep: Callable[[dict], bool] | None = None,
) -> dict:
    """Score ``run`` (feeds [N,C,H,W] -> rgb [N,3,H,W] on 0..1) over a split's examples."""
    h, w = split["memory_depth"].shape[1:3]
    rays = ray_directions(Intrinsics.from_fov(w, h, fov_x_deg))
    rng = np.random.default_rng([seed, 0xE7A1])
    chosen = np.array([i for i, m in enumerate(split.meta) if keep is None or keep(m)], dtype=np.int64)
    psnrs, ssims, e_out, e_true = [], [], [], []
    for start in range(0, len(chosen), batch):
        idx = chosen[start : start + batch]
        feeds = example_feeds(split, idx, rays, rng)
        out = run(feeds)
        for j, i in enumerate(idx):
            covered = split["memory_coverage"][i] >= 128
            gen = np.clip(np.rint(out[j].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
            frame = np.where(covered[..., None], split["memory_rgb"][i], gen)
            truth = np.asarray(split["truth_rgb"][i])
            ssims.append(ssim(frame, truth))
            filled = ~covered
            if filled.sum() >= 16:
                psnrs.append(min(psnr(frame, truth, filled), PSNR_CAP_DB))
                eo, et = gradient_energy(frame, filled), gradient_energy(truth, filled)
                if math.isfinite(eo) and math.isfinite(et):
                    e_out.append(eo)
                    e_true.append(et)
    return {
        "examples": int(len(chosen)),
        "psnr_filled": float(np.mean(psnrs)) if psnrs else math.nan,
        "ssim_all": float(np.mean(ssims)) if ssims else math.nan,
        "gradient_ratio": float(np.mean(e_out) / np.mean(e_true)) if e_true else math.nan,
    }


def parse_generator(label: str) -> tuple[str, float | None]:
    """``"NAME"`` or ``"NAME@DETAIL"`` (a model with detail control at that detail strength)."""
    name, sep, detail = label.partition("@")
    if not sep:
        return name, None
    try:
        value = float(detail)
    except ValueError:
        raise ValueError(f"{label!r}: the detail after '@' must be a number, e.g. {name}@0.5") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{label!r}: the detail after '@' must be >= 0")
    return name, value


def load_generator(label: str, models_dir: str | None = None):
    """(host, detail) for a ``parse_generator`` label; a detail on a model without control is refused."""
    from runtime.generator.host import GeneratorConfig, GeneratorHost

    name, detail = parse_generator(label)
    host = GeneratorHost.load(GeneratorConfig(name=name, models_dir=models_dir))
    if detail is not None and not host.detail_control:
        raise ValueError(f"{label!r}: model {name!r} has no detail control; drop the '@{detail:g}'")
    return host, detail


def host_runner(host, detail: float | None = None) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """Run a GeneratorHost's onnxruntime session one example at a time on batched feeds; a model with
    detail control gets its noise scaled by ``detail`` (None: the card's default), as the host does."""
    scale = host.detail_in_use(detail)

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        outs = []
        for j in range(feeds["memory_rgb"].shape[0]):
            one = {name: feeds[name][j : j + 1] for name in host.input_names}
            if scale is not None:
                one["noise"] = one["noise"] * np.float32(scale)
            outs.append(host.session.run(["rgb"], one)[0][0])
        return np.stack(outs)

    return run


def time_generator(host, size: int, repeats: int = 30, seed: int = 0) -> float:
    """Median ms of one onnxruntime run at size x size on realistic holes (40% uncovered)."""
    rng = np.random.default_rng(seed)
    cov = (rng.random((1, 1, size, size)) > 0.4).astype(np.float32)
    pool = {
        "memory_rgb": rng.random((1, 3, size, size), dtype=np.float32) * cov,
        "memory_depth": (rng.random((1, 1, size, size), dtype=np.float32) * 20.0) * cov,
        "memory_coverage": cov,
        "ray_dirs": ray_directions(Intrinsics.from_fov(size, size, 60.0))[None],
        "noise": rng.standard_normal((1, 1, size, size), dtype=np.float32),
    }
    feeds = {n: pool[n] for n in host.input_names}
    for _ in range(5):
        host.session.run(["rgb", "depth"], feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        host.session.run(["rgb", "depth"], feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def compare_generators(names: list[str], split, fov_x_deg: float, *, seed: int = 0, timing: bool = True,
                       models_dir: str | None = None, by_scene: bool = False) -> list[dict]:  # fmt: skip
    """One row per generator (``parse_generator`` labels): scores over ``split``, also per scene: the
    held-out scene vs arrangements, or with ``by_scene`` (a split of scene families) under
    ``row["by_scene"]``, one entry per scene in the split's order."""
    rows = []
    for name in names:
        host, detail = load_generator(name, models_dir)
        run = host_runner(host, detail)
        row = {"generator": name, **score_examples(run, split, fov_x_deg, seed=seed)}
        if host.detail_control:
            row["detail"] = host.detail_default if detail is None else detail
        if by_scene:
            scenes = list(dict.fromkeys(m["scene"] for m in split.meta))
            row["by_scene"] = {
                scene: score_examples(
                    run, split, fov_x_deg, seed=seed, keep=lambda m, s=scene: m["scene"] == s
                )
                for scene in scenes
            }
        else:
            for label, test in (("courtyard", lambda m: m["scene"] == "courtyard"),
                                ("arrangements", lambda m: m["scene"] != "courtyard")):  # fmt: skip
                row[label] = score_examples(run, split, fov_x_deg, seed=seed, keep=test)
        kinds = sorted({m["kind"] for m in split.meta})
        row["by_kind"] = {
            kind: score_examples(run, split, fov_x_deg, seed=seed, keep=lambda m, k=kind: m["kind"] == k)
            for kind in kinds
        }
        if timing:
            row["ms_128"] = round(time_generator(host, 128), 2)
            row["ms_256"] = round(time_generator(host, 256), 2)
        row["model_bytes"] = host.path.stat().st_size
        rows.append(row)
    return rows
