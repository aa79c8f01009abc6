"""Export a registered generator to ONNX, check torch vs onnxruntime parity, write its card.

    python -m runtime.generator.export pushpull_v1 [--out exported_models]

One self-contained ``.onnx`` file (legacy TorchScript exporter, opset 17, dynamic H and W), then a
parity check on random inputs with random holes, then ``NAME.card.json`` with the file's sha256 and
the measured parity figure. A learned model registers a builder in ``REGISTRY``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from runtime.generator.card import CARD_SUFFIX, ModelCard
from runtime.generator.host import CONTRACT_INPUTS, CONTRACT_OUTPUTS, default_models_dir, sha256_file

OPSET = 17
PARITY_TOLERANCE = 1e-4
PARITY_SIZES: tuple[tuple[int, int], ...] = ((128, 128), (256, 256), (120, 160))
"""(H, W) sizes the parity check runs at; 120x160 exercises odd pyramid levels."""


class ExportError(RuntimeError):
    """Export or its parity check failed; nothing was written."""


@dataclass
class ModelSpec:
    """How to build and describe a generator for export."""

    build: Callable[[], torch.nn.Module]
    inputs: tuple[str, ...]
    """Contract inputs the model's forward takes, in order."""
    kind: str
    description: str
    native_resolution: tuple[int, int] = (128, 128)
    size_multiple: int = 8
    training: dict = field(
        default_factory=lambda: {"data": "none (no learned weights)", "seed": None, "command": None}
    )
    evaluation: dict = field(default_factory=lambda: {"note": "see README Results"})
    license: str = "Apache-2.0"


def _build_pushpull() -> torch.nn.Module:
    from runtime.generator.pushpull import PushPullFiller

    return PushPullFiller()


REGISTRY: dict[str, ModelSpec] = {
    "pushpull_v1": ModelSpec(
        build=_build_pushpull,
        inputs=("memory_rgb", "memory_depth", "memory_coverage"),
        kind="push-pull hole filler (no learned weights)",
        description=(
            "Multi-scale push-pull (pyramid) interpolation: pixels memory covers (coverage >= 0.999) are "
            "returned exactly; every other pixel is a coverage-weighted blend of its own value and a smooth "
            "upsampled estimate from coarser pyramid levels, so holes are filled by interpolating the "
            "surrounding memory colour and depth (depth only from pixels with known depth > 0). It does not "
            "hallucinate new content: large holes come out as blurry blends of their borders, and with "
            "nothing covered it returns mid-grey (0.5) and depth 0."
        ),
    ),
}


@dataclass
class ExportResult:
    name: str
    onnx_path: Path
    card_path: Path
    sha256: str
    parity_max_abs_diff: float
    size_bytes: int


def random_inputs(names: Sequence[str], h: int, w: int, seed: int) -> dict[str, np.ndarray]:
    """Random contract inputs [1,C,H,W] with random hole masks (blocks, speckle, partial coverage)."""
    rng = np.random.default_rng(seed)
    cov = (rng.random((h, w)) > 0.3).astype(np.float32)
    for _ in range(4):
        y, x = rng.integers(0, h), rng.integers(0, w)
        cov[y : y + rng.integers(4, h // 2 + 5), x : x + rng.integers(4, w // 2 + 5)] = 0.0
    partial = rng.random((h, w)) < 0.05
    cov[partial] = rng.random(int(partial.sum())).astype(np.float32)
    depth = (rng.random((h, w)) * 20.0).astype(np.float32)
    depth[rng.random((h, w)) < 0.1] = 0.0
    rgb = rng.random((3, h, w), dtype=np.float32)
    rays = rng.standard_normal((3, h, w)).astype(np.float32)
    rays /= np.linalg.norm(rays, axis=0, keepdims=True)
    pool = {
        "memory_rgb": rgb * cov,
        "memory_depth": (depth * (cov > 0))[None],
        "memory_coverage": cov[None],
        "ray_dirs": rays,
        "noise": rng.standard_normal((h, w)).astype(np.float32)[None],
    }
    return {n: np.ascontiguousarray(pool[n])[None] for n in names}


def parity_check(
    module: torch.nn.Module, onnx_bytes: bytes, names: Sequence[str], sizes=PARITY_SIZES, seed: int = 0
) -> float:
    """Largest |torch - onnxruntime| over all outputs and sizes."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, (h, w) in enumerate(sizes):
        feeds = random_inputs(names, h, w, seed + i)
        with torch.no_grad():
            expected = module(*(torch.from_numpy(feeds[n]) for n in names))
        got = session.run(list(CONTRACT_OUTPUTS), feeds)
        for e, g in zip(expected, got, strict=True):
            if tuple(e.shape) != g.shape or not np.isfinite(g).all():
                raise ExportError(f"onnxruntime output at {h}x{w} has shape {g.shape} or non-finite values")
            worst = max(worst, float(np.abs(e.numpy() - g).max()))
    return worst


def export_model(name: str, out_dir: str | Path | None = None, *, verbose: bool = True) -> ExportResult:
    if name not in REGISTRY:
        raise ExportError(f"unknown model {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    spec = REGISTRY[name]
    unknown = [n for n in spec.inputs if n not in CONTRACT_INPUTS]
    if unknown:
        raise ExportError(f"{name}: inputs {unknown} are not in the host contract {sorted(CONTRACT_INPUTS)}")
    out = Path(out_dir) if out_dir else default_models_dir()
    out.mkdir(parents=True, exist_ok=True)
    onnx_path, card_path = out / f"{name}.onnx", out / f"{name}{CARD_SUFFIX}"
    tmp_path = out / f".{name}.onnx.tmp"

    torch.manual_seed(0)
    module = spec.build().eval()
    h, w = spec.native_resolution
    example = random_inputs(spec.inputs, h, w, seed=0)
    outputs = list(CONTRACT_OUTPUTS)
    axes = {n: {2: "H", 3: "W"} for n in (*spec.inputs, *outputs)}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                module,
                tuple(torch.from_numpy(example[n]) for n in spec.inputs),
                str(tmp_path),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(spec.inputs),
                output_names=outputs,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        blob = tmp_path.read_bytes()
        parity = parity_check(module, blob, spec.inputs)
        if not parity <= PARITY_TOLERANCE:
            raise ExportError(f"{name}: torch vs onnxruntime max abs diff {parity:.3g} > {PARITY_TOLERANCE}")
        tmp_path.replace(onnx_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    digest = sha256_file(onnx_path)
    card = ModelCard(
        name=name,
        file=onnx_path.name,
        sha256=digest,
        kind=spec.kind,
        description=spec.description,
        inputs=[CONTRACT_INPUTS[n] for n in spec.inputs],
        outputs=[CONTRACT_OUTPUTS[n] for n in outputs],
        native_resolution=list(spec.native_resolution),
        size_rule=f"H and W multiples of {spec.size_multiple}",
        size_multiple=spec.size_multiple,
        opset=OPSET,
        training=dict(spec.training),
        export={
            "command": f"python -m runtime.generator.export {name}",
            "exporter": "torch.onnx.export(dynamo=False), single file, dynamic H and W",
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "parity_max_abs_diff": float(f"{parity:.3g}"),
            "parity_sizes_hw": [list(s) for s in PARITY_SIZES],
        },
        evaluation=dict(spec.evaluation),
        license=spec.license,
        created=_dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
    )
    card.write(card_path)
    size = onnx_path.stat().st_size
    if verbose:
        print(f"{name}: wrote {onnx_path} ({size} bytes, sha256 {digest}) and {card_path.name}")
        print(f"{name}: parity torch vs onnxruntime max abs diff {parity:.3g} at {list(PARITY_SIZES)} (H, W)")
    return ExportResult(name, onnx_path, card_path, digest, parity, size)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.generator.export", description=__doc__.splitlines()[0]
    )
    parser.add_argument("name", choices=sorted(REGISTRY), help="registered model to export")
    parser.add_argument("--out", default=None, help="output directory (default: exported_models/)")
    args = parser.parse_args(argv)
    try:
        export_model(args.name, args.out)
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
