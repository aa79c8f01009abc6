"""Train the learned generator on the engine-rendered dataset (``runtime.training.dataset``).

    mirage train [--steps N] [--run DIR] [--seed S]

CPU only, 2 threads. Random crops with horizontal flips; losses on the pixels the generator fills
(covered pixels are returned exactly, so they carry no loss): L1 colour, 1 - SSIM, L1 of image
gradients, a local gradient-energy term (so large unseen areas get texture of the right strength, not
mush), and L1 of inverse depth. Validation on held-out arrangements every ``val_every`` steps (step 0
is the push-pull fill, since the network's head starts at zero). Checkpoints are safetensors (model,
optimiser moments, step), written atomically every ``checkpoint_every`` steps and at the end; a run
started again in the same folder resumes where it stopped. The batch at step t depends only on
(seed, t), so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from plugin_bridge.camera import Intrinsics
from runtime.generator.host import ray_directions
from runtime.training.dataset import DatasetConfig, Split, build_dataset
from runtime.training.learned import NOISE_CHANNEL, LearnedConfig, LearnedFiller, inverse_depth
from runtime.training.pushpull import COVERED

CHECKPOINT = "checkpoint.safetensors"
FINAL = "model.safetensors"


@dataclass
class LossWeights:
    l1: float = 1.0
    mse: float = 2.0
    ssim: float = 0.2
    grad: float = 0.5
    energy: float = 0.0
    depth: float = 0.5
    detail: float = 1.0
    """Models with detail only: local gradient energy of (mean + amplitude * noise) against the
    truth's, |log| ratio per 4x4 window of filled pixels. Only the detail head learns from it."""
    logmse: float = 0.0
    """Mean over examples of log(MSE of the filled pixels): the per-image PSNR the model is judged by
    (up to scale), so an example with small holes counts as much as one with huge ones."""


@dataclass
class TrainConfig:
    """One training run; the defaults train the shipped ``learned_v1``."""

    run_dir: str = str(Path.home() / ".cache" / "mirage" / "runs" / "learned_v1")
    """Checkpoints, log and loss curves go here (outside the repository)."""
    data: DatasetConfig = field(default_factory=DatasetConfig)
    model: LearnedConfig = field(default_factory=LearnedConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    steps: int = 16000
    """Optimiser steps in all (a resumed run goes on to this many)."""
    batch: int = 8
    crop: int = 96
    """Square random crop (pixels) of the 128x128 examples; 0 trains on whole frames."""
    lr: float = 2e-3
    """Peak learning rate, reached after the warm-up; a cosine then takes it to 5% of this at the end."""
    warmup: int = 200
    """Warm-up steps (the learning rate rises linearly to lr)."""
    weight_decay: float = 1e-4
    val_every: int = 500
    checkpoint_every: int = 250
    threads: int = 1
    """torch intra-op threads: one trains these small convolutions about as fast as two here (0.2 s a
    step either way on this 2-core machine), and leaves the other core free."""
    seed: int = 0
    """Seed for data, initialisation and batches."""
    init: str = ""
    """Weights (a ``model.safetensors`` of an earlier run) to start from instead of the push-pull fill:
    a second stage fine-tunes the first one's model with other losses."""
    palette: bool = False
    """Recolour every training example: one random colour map for the ground and things and another
    for the sky (channel order, a turn of hue about the grey axis, saturation, per-channel gain and
    offset), applied alike to the memory render and the truth, so no fixed palette can be learned."""
    max_minutes: float = 0.0
    """Stop (with a checkpoint) after this much wall time in this invocation; 0 = no limit."""
    progress: bool = True


# ------------------------------------------------------------------------------------------ losses
def _gauss(window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


_G = _gauss()


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM [N,1,H,W] of [N,3,H,W] images on [0,1] (7x7 Gaussian, mean over channels)."""
    c = a.shape[1]
    g = _G.to(a).expand(c, 1, -1, -1)
    pad = g.shape[-1] // 2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (pad,) * 4, mode="replicate"), g, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=1, keepdim=True)


def _grads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` [N,C,H,W] over the mask [N,1,H,W] of each example, then over the examples that have
    any masked pixel: every example weighs the same, as in the per-image PSNR the model is judged by
    (a pooled mean would let the few examples with huge holes drown the thin slivers)."""
    dims = (1, 2, 3)
    count = m.sum(dim=dims) * (x.shape[1] / m.shape[1])
    per_example = (x * m).sum(dim=dims) / count.clamp_min(1.0)
    has = (count > 0).to(x.dtype)
    return (per_example * has).sum() / has.sum().clamp_min(1.0)


def losses(
    rgb: torch.Tensor,  # [N,3,H,W] prediction (every pixel)
    inv: torch.Tensor,  # [N,1,H,W] predicted inverse depth
    batch: dict[str, torch.Tensor],
    weights: LossWeights,
    amp: torch.Tensor | None = None,  # [N,3,H,W] detail amplitude of a model with detail
) -> dict[str, torch.Tensor]:
    """Loss terms over filled pixels (and their total under ``total``). ``rgb`` is the mean
    prediction: the reconstruction terms judge it without detail, the detail term judges the
    detail added to it (and reaches only the amplitude)."""
    m = batch["filled"]
    truth = batch["truth_rgb"]
    composed = torch.where(m > 0, rgb, batch["memory_rgb"])
    out = {"l1": _masked_mean((rgb - truth).abs(), m)}
    out["mse"] = _masked_mean((rgb - truth) ** 2, m)
    count = m.sum(dim=(1, 2, 3)) * 3.0
    per_mse = ((rgb - truth) ** 2 * m).sum(dim=(1, 2, 3)) / count.clamp_min(1.0)
    has = (count > 0).to(rgb.dtype)
    out["logmse"] = (torch.log(per_mse + 1e-4) * has).sum() / has.sum().clamp_min(1.0)
    out["ssim"] = _masked_mean(1.0 - ssim_map(composed, truth), m)
    (px, py), (tx, ty) = _grads(rgb), _grads(truth)
    mx, my = m[..., :, 1:] * m[..., :, :-1], m[..., 1:, :] * m[..., :-1, :]
    out["grad"] = 0.5 * (_masked_mean((px - tx).abs(), mx) + _masked_mean((py - ty).abs(), my))
    # local gradient energy (8x8 windows): as much texture as the truth has there, wherever it sits
    e_pred = px[..., :-1, :].abs() + py[..., :, :-1].abs()
    e_true = tx[..., :-1, :].abs() + ty[..., :, :-1].abs()
    m_e = m[..., :-1, :-1]
    pool = [F.avg_pool2d(t, 8, 8) for t in (e_pred * m_e, e_true * m_e, m_e)]
    full = (pool[2] > 0.75).to(rgb.dtype)
    out["energy"] = _masked_mean((pool[0] - pool[1]).abs() / pool[2].clamp_min(1e-3), full)
    out["depth"] = _masked_mean((inv - batch["truth_inv"]).abs(), m)
    if amp is not None:
        out["detail"] = detail_loss((rgb.detach() + amp * batch["noise"]).clamp(0.0, 1.0), truth, m)
    out["total"] = sum(getattr(weights, k) * v for k, v in out.items())
    return out


def window_energy(img: torch.Tensor, m: torch.Tensor, window: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean of gx^2 + gy^2 over channels and the window's pixel pairs inside the mask, the share of
    such pairs) per ``window`` x ``window`` window, [N,1,H/w,W/w]: forward differences as in
    ``metrics.gradient_energy``, a pair counting only when both ends are in the mask."""
    gx = img[..., :-1, 1:] - img[..., :-1, :-1]
    gy = img[..., 1:, :-1] - img[..., :-1, :-1]
    energy = (gx * gx + gy * gy).mean(dim=1, keepdim=True)
    pairs = m[..., :-1, :-1] * m[..., :-1, 1:] * m[..., 1:, :-1]
    share = F.avg_pool2d(pairs, window, window)
    return F.avg_pool2d(energy * pairs, window, window) / share.clamp_min(1e-6), share


def detail_loss(final: torch.Tensor, truth: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """|log| of the local gradient-energy ratio, output against truth, over 4x4 windows at least
    half made of filled pixel pairs: as much texture as the truth has there, wherever it sits."""
    e_out, share = window_energy(final, m)
    e_true, _ = window_energy(truth, m)
    ratio = (torch.log(e_out + 1e-4) - torch.log(e_true + 1e-4)).abs()
    return _masked_mean(ratio, (share >= 0.5).to(final.dtype))


# ------------------------------------------------------------------------------------------ data
def random_colour_map(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(matrix [3,3], offset [3]) of a random affine colour map ``x @ matrix.T + offset``: channel order,
    a turn of hue about the grey axis, saturation 0.3-1.5, per-channel gain 0.6-1.4, offset +-0.15."""
    perm = np.eye(3)[rng.permutation(3)]
    axis = np.ones(3) / math.sqrt(3.0)
    angle = rng.uniform(-math.pi, math.pi)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    turn = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)  # Rodrigues
    grey = np.full((3, 3), 1.0 / 3.0)
    saturation = grey + rng.uniform(0.3, 1.5) * (np.eye(3) - grey)
    gain = np.diag(rng.uniform(0.6, 1.4, size=3))
    return gain @ saturation @ turn @ perm, rng.uniform(-0.15, 0.15, size=3)


def recolour(
    memory_rgb: np.ndarray,  # [H,W,3] float 0..1 (0 where uncovered)
    memory_covered: np.ndarray,  # [H,W] bool
    memory_sky: np.ndarray,  # [H,W] bool: covered by the environment (no depth)
    truth_rgb: np.ndarray,  # [H,W,3] float 0..1
    truth_sky: np.ndarray,  # [H,W] bool: truth at infinity
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The example with one random colour map on its ground and things and another on its sky (the
    same map as the ground's half the time), alike in memory and truth; memory's holes stay 0."""
    ground = random_colour_map(rng)
    sky = ground if rng.random() < 0.5 else random_colour_map(rng)

    def apply(img: np.ndarray, sky_mask: np.ndarray) -> np.ndarray:
        out = np.empty_like(img)
        for (m, o), mask in ((ground, ~sky_mask), (sky, sky_mask)):
            out[mask] = img[mask] @ m.T.astype(img.dtype) + o.astype(img.dtype)
        return np.clip(out, 0.0, 1.0)

    mem = np.where(memory_covered[..., None], apply(memory_rgb, memory_sky), 0.0).astype(memory_rgb.dtype)
    return mem, apply(truth_rgb, truth_sky)


class Batches:
    """Deterministic batches: the batch of step t depends only on (seed, t)."""

    def __init__(self, split: Split, config: TrainConfig):
        self.arrays = {name: np.asarray(split[name]) for name in split.arrays}  # into RAM
        self.n = len(split)
        size = self.arrays["memory_rgb"].shape[1]
        self.size = size
        k = Intrinsics.from_fov(size, size, config.data.fov_x_deg)
        self.rays = ray_directions(k)  # [3,H,W]; symmetric, so a horizontal flip keeps it valid
        self.config = config

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, step, 0xBA7C])
        idx = rng.integers(0, self.n, size=cfg.batch)
        crop = cfg.crop or self.size
        out: dict[str, list[np.ndarray]] = {
            k: []
            for k in ("memory_rgb", "memory_depth", "memory_coverage", "ray_dirs", "truth_rgb", "truth_depth")
        }
        for i in idx:
            y, x = (int(v) for v in rng.integers(0, self.size - crop + 1, size=2))
            flip = rng.random() < 0.5
            sl = (slice(y, y + crop), slice(x, x + crop))
            for name in ("memory_rgb", "memory_depth", "memory_coverage", "truth_rgb", "truth_depth"):
                a = self.arrays[name][i][sl]
                out[name].append(a[:, ::-1] if flip else a)
            out["ray_dirs"].append(self.rays[:, sl[0], sl[1]])
        b = {k: np.stack(v) for k, v in out.items()}
        mem_rgb = b["memory_rgb"].astype(np.float32) / 255.0
        truth_rgb = b["truth_rgb"].astype(np.float32) / 255.0
        if cfg.palette:
            for j in range(cfg.batch):
                covered = b["memory_coverage"][j] > 0
                mem_rgb[j], truth_rgb[j] = recolour(
                    mem_rgb[j], covered, covered & (b["memory_depth"][j] <= 0), truth_rgb[j],
                    ~np.isfinite(b["truth_depth"][j]), rng,
                )  # fmt: skip
        t = {
            "memory_rgb": torch.from_numpy(mem_rgb).permute(0, 3, 1, 2),
            "memory_depth": torch.from_numpy(b["memory_depth"].astype(np.float32))[:, None],
            "memory_coverage": torch.from_numpy(b["memory_coverage"].astype(np.float32) / 255.0)[:, None],
            "ray_dirs": torch.from_numpy(np.ascontiguousarray(b["ray_dirs"])),
            "noise": torch.from_numpy(rng.standard_normal((cfg.batch, 1, crop, crop), dtype=np.float32)),
            "truth_rgb": torch.from_numpy(truth_rgb).permute(0, 3, 1, 2),
        }
        t["truth_inv"] = inverse_depth(torch.from_numpy(b["truth_depth"].astype(np.float32))[:, None])
        t["filled"] = (t["memory_coverage"] < COVERED).to(torch.float32)
        return {k: v.contiguous() for k, v in t.items()}


MODEL_INPUTS = ("memory_rgb", "memory_depth", "memory_coverage", "ray_dirs", "noise")


# ------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(
    path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, extra: dict
) -> None:
    """Model weights, Adam moments and step as safetensors, written atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    names = dict(model.named_parameters())
    index = {id(p): n for n, p in names.items()}
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    tensors[f"opt.{index[id(p)]}.{key}"] = state[key].contiguous()
    meta = {"step": str(step), "extra": json.dumps(extra)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(
    path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer | None
) -> tuple[int, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    step = int(meta["step"])
    if opt is not None:
        for name, p in model.named_parameters():
            if f"opt.{name}.exp_avg" in tensors:
                opt.state[p] = {
                    "step": torch.tensor(float(step)),
                    "exp_avg": tensors[f"opt.{name}.exp_avg"],
                    "exp_avg_sq": tensors[f"opt.{name}.exp_avg_sq"],
                }
    return step, json.loads(meta.get("extra", "{}"))


def _read_weights(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, model state) of a safetensors file ``mirage train`` wrote (weights or checkpoint)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        state = {k.removeprefix("model."): fh.get_tensor(k) for k in fh.keys() if not k.startswith("opt.")}
    return meta, state


def load_weights(path: str | Path) -> LearnedFiller:
    """A LearnedFiller with the weights (and the widths) that ``mirage train`` saved (safetensors, no pickle)."""
    meta, state = _read_weights(path)
    model_cfg = json.loads(meta["config"])["model"] if "config" in meta else {}
    config = LearnedConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in model_cfg.items()})
    model = LearnedFiller(config)
    model.load_state_dict(state)
    return model.eval()


# ------------------------------------------------------------------------------------------ validation
def validate(
    model: LearnedFiller,
    split: Split,
    fov_x_deg: float,
    seed: int = 0,
    batch: int = 16,
    noise_scale: float = 1.0,
) -> dict:
    """Filled-pixel PSNR, whole-frame SSIM and gradient-energy ratio over a split (uint8 frames);
    ``noise_scale`` scales the noise input (a model with detail: 0 is its mean prediction)."""
    from runtime.training.scoring import score_examples

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {**feeds, "noise": feeds["noise"] * np.float32(noise_scale)}
        with torch.no_grad():
            rgb, _ = model(*(torch.from_numpy(feeds[n]) for n in MODEL_INPUTS))
        return rgb.numpy()

    return score_examples(run, split, fov_x_deg, seed=seed, batch=batch)


def _validation(model: LearnedFiller, split: Split, cfg: TrainConfig) -> dict:
    """Validation figures; a model with detail also without it (``mean``: noise scaled to 0)."""
    scores = validate(model, split, cfg.data.fov_x_deg, seed=cfg.seed)
    if model.config.detail:
        scores["mean"] = validate(model, split, cfg.data.fov_x_deg, seed=cfg.seed, noise_scale=0.0)
    return scores


DETAIL_LR_SCALE = 5.0
"""The detail head learns at this multiple of the learning rate: it starts from nothing, usually on
top of a trained trunk whose learning rate is low."""


def _param_groups(model: LearnedFiller) -> list[dict]:
    detail = [p for n, p in model.named_parameters() if n.startswith("detail_head.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("detail_head.")]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if detail:
        groups.append({"params": detail, "lr_scale": DETAIL_LR_SCALE})
    return groups


def init_from(model: LearnedFiller, path: str | Path) -> None:
    """Start ``model`` from the weights of an earlier run (same widths). From a model without detail
    into one with it: the first layer's noise inputs are dropped and the detail head starts fresh."""
    _, state = _read_weights(path)
    first = "enc1.0.0.weight"
    own = model.state_dict()
    if state[first].shape[1] == own[first].shape[1] + 4 and model.config.detail:
        keep = [c for c in range(state[first].shape[1]) if c // 4 != NOISE_CHANNEL]
        state[first] = state[first][:, keep]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: other widths
        raise ValueError(f"{path}: weights do not fit this model ({exc})") from exc
    if unexpected or any(not k.startswith("detail_head.") for k in missing):
        raise ValueError(
            f"{path}: weights do not fit this model (missing {missing}, unexpected {unexpected})"
        )


# ------------------------------------------------------------------------------------------ loop
def _lr(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t))))


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the run folder holding ``model.safetensors``."""
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    data_dir = build_dataset(cfg.data, progress=cfg.progress)
    train_split, val_split = Split(data_dir / "train"), Split(data_dir / "val")
    batches = Batches(train_split, cfg)
    torch.manual_seed(cfg.seed)
    model = LearnedFiller(cfg.model)
    if cfg.init:
        init_from(model, cfg.init)
    model.train()
    opt = torch.optim.AdamW(_param_groups(model), lr=cfg.lr, weight_decay=cfg.weight_decay)
    log_path = run / "log.jsonl"
    step, history = 0, {"train": [], "val": [], "seconds": 0.0}
    ckpt = run / CHECKPOINT
    if ckpt.is_file():
        _check_resume(run, cfg)
        step, history = load_checkpoint(ckpt, model, opt)
        print(f"resuming {run} at step {step}")
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    t_start = time.perf_counter()
    seconds0 = float(history.get("seconds", 0.0))
    bar = tqdm(
        total=cfg.steps, initial=step, desc="train", unit="step", disable=not cfg.progress, mininterval=5.0
    )
    running: dict[str, float] = {}

    def elapsed() -> float:
        return seconds0 + time.perf_counter() - t_start

    def checkpoint() -> None:
        history["seconds"] = round(elapsed(), 1)
        save_checkpoint(ckpt, model, opt, step, history)

    while step < cfg.steps:
        if step % cfg.val_every == 0 and not any(v["step"] == step for v in history["val"]):
            model.eval()
            scores = _validation(model, val_split, cfg)
            model.train()
            history["val"].append({"step": step, **scores})
            _log(log_path, {"val": history["val"][-1]})
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step) * group["lr_scale"]
        batch = batches(step)
        rgb, inv, amp = model.complete(*(batch[n] for n in MODEL_INPUTS))
        terms = losses(rgb, inv, batch, cfg.loss, amp)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        for k, v in terms.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        if step % 50 == 0:
            entry = {
                "step": step,
                **{k: round(v / 50, 5) for k, v in running.items()},
                "seconds": round(elapsed(), 1),
            }
            history["train"].append(entry)
            _log(log_path, {"train": entry})
            bar.set_postfix(loss=f"{entry['total']:.4f}")
            running = {}
        bar.update(1)
        if step % cfg.checkpoint_every == 0:
            checkpoint()
            plot_curves(history, run / "loss_curves.png")
        if cfg.max_minutes and time.perf_counter() - t_start > cfg.max_minutes * 60:
            print(
                f"stopping at step {step}: {cfg.max_minutes} min limit of this invocation (resume to continue)"
            )
            break
    bar.close()
    if step >= cfg.steps:
        if not any(v["step"] == step for v in history["val"]):
            model.eval()
            history["val"].append({"step": step, **_validation(model, val_split, cfg)})
            _log(log_path, {"val": history["val"][-1]})
        checkpoint()
        from safetensors.torch import save_file

        history["seconds"] = round(elapsed(), 1)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / FINAL),
                  metadata={"step": str(step), "history": json.dumps(history), "config": json.dumps(asdict(cfg))})  # fmt: skip
    else:
        checkpoint()
    plot_curves(history, run / "loss_curves.png")
    return run


def _check_resume(run: Path, cfg: TrainConfig) -> None:
    """A run resumes only with the model and losses it was started with."""
    saved_path = run / "config.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text())
    now = json.loads(json.dumps(asdict(cfg)))
    # fields added since the run started take their defaults (what that run used)
    defaults = json.loads(json.dumps(asdict(TrainConfig())))
    saved = {**defaults, **saved}
    for key in ("model", "loss", "data"):
        saved[key] = {**defaults[key], **saved[key]}
    differ = [
        k
        for k in ("model", "loss", "init", "lr", "batch", "crop", "palette", "data")
        if saved.get(k) != now.get(k)
    ]
    if differ:
        raise ValueError(
            f"{run} holds a run started with other settings ({', '.join(differ)}: "
            f"{ {k: saved.get(k) for k in differ} }); resume it with the same flags, or use another --run folder"
        )


def _log(path: Path, entry: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def plot_curves(history: dict, path: Path) -> None:
    """Training loss terms and validation figures against step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    tr = history.get("train", [])
    if tr:
        steps = [e["step"] for e in tr]
        for key in ("total", "l1", "mse", "ssim", "grad", "energy", "depth", "detail"):
            if key in tr[0]:
                axes[0].plot(steps, [e[key] for e in tr], label=key)
        axes[0].set_yscale("log")
        axes[0].set_title("training loss terms")
        axes[0].legend(fontsize=8)
    va = history.get("val", [])
    if va:
        steps = [e["step"] for e in va]
        detail = "mean" in va[0]
        axes[1].plot(
            steps, [e["psnr_filled"] for e in va], "o-", label="model, detail 1" if detail else "model"
        )
        if detail:
            axes[1].plot(steps, [e["mean"]["psnr_filled"] for e in va], "^-", label="model without detail")
        axes[1].axhline(va[0]["psnr_filled"], color="grey", ls="--", label="start (step 0)")
        axes[1].set_title("held-out PSNR on filled pixels (dB)")
        axes[1].legend(fontsize=8)
        axes[2].plot(steps, [e["ssim_all"] for e in va], "o-", label="SSIM whole frame")
        axes[2].plot(steps, [e["gradient_ratio"] for e in va], "s-", label="gradient-energy ratio")
        axes[2].set_title("held-out SSIM and sharpness")
        axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
