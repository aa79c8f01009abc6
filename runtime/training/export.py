"""Export a registered generator to ONNX, check torch vs onnxruntime parity, write its card.

    python -m runtime.training.export pushpull_v1 [--out exported_models]
    mirage export learned_v1 --weights RUN/model.safetensors [--evaluate]

One self-contained ``.onnx`` file (legacy TorchScript exporter, opset 17, dynamic H and W), then a
parity check on random inputs with random holes, then ``NAME.card.json`` with the file's sha256 and
the measured parity figure. A learned model registers a builder in ``REGISTRY`` that takes its
trained weights (safetensors, never pickle); its card also records the training run (command, data,
seed, steps, wall time, validation) read from the weights file's metadata, and with ``--evaluate``
the held-out comparison against push-pull.
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
from runtime.training.record import ExportError, training_record

OPSET = 17
PARITY_TOLERANCE = 1e-4
PARITY_SIZES: tuple[tuple[int, int], ...] = ((128, 128), (256, 256), (120, 160))
"""(H, W) sizes the parity check runs at; 120x160 exercises odd pyramid levels."""


@dataclass
class ModelSpec:
    """How to build and describe a generator for export."""

    build: Callable[[str | None], torch.nn.Module]
    """Builds the module; gets the weights path (None for models without learned weights)."""
    inputs: tuple[str, ...]
    """Contract inputs the model's forward takes, in order."""
    kind: str
    description: str
    native_resolution: tuple[int, int] = (128, 128)
    size_multiple: int = 8
    training: dict = field(
        default_factory=lambda: {"data": "none (no learned weights)", "seed": None, "command": None}
    )
    evaluation: dict = field(default_factory=lambda: {"note": "see docs/benchmarks.md"})
    license: str = "Apache-2.0"
    detail: dict | None = None
    """Card key ``detail`` of a model whose noise input scales its detail (``default``: the strength
    the host uses when a session does not ask for one)."""


def _build_pushpull(weights: str | None) -> torch.nn.Module:
    from runtime.training.pushpull import PushPullFiller

    if weights:
        raise ExportError("pushpull_v1 has no learned weights; drop --weights")
    return PushPullFiller()


def _learned_builder(
    name: str, detail: bool, anchored: bool = False
) -> Callable[[str | None], torch.nn.Module]:
    def build(weights: str | None) -> torch.nn.Module:
        from runtime.training.train import load_weights

        if not weights:
            raise ExportError(
                f"{name} needs its trained weights: --weights RUN_DIR/model.safetensors (train with `mirage train`)"
            )
        model = load_weights(weights)
        if model.config.detail != detail:
            raise ExportError(
                f"{name} is a model {'with' if detail else 'without'} detail, but {weights} holds one "
                f"{'with' if model.config.detail else 'without'} (`mirage train --detail` trains one with it)"
            )
        if model.config.anchored != anchored:
            raise ExportError(
                f"{name} is {'an anchored' if anchored else 'a residual'} model, but {weights} holds "
                f"{'an anchored' if model.config.anchored else 'a residual'} one (`mirage train --anchored` "
                "trains an anchored one)"
            )
        return model

    return build


LEARNED_DESCRIPTION = (
    "Completes a memory render: holes are first filled by the push-pull pyramid, then a small "
    "encoder-decoder (space-to-depth, 1/2-1/4-1/8 resolution with a dilated context block, skips fused "
    "at every scale, depth-to-space) predicts a residual colour and inverse depth on top, from memory "
    "colour, inverse depth, coverage, the fill, its edges, camera rays{noise}. Pixels "
    "memory covers (coverage >= 0.999) are returned exactly. Predicted inverse depth below 1e-3 is "
    "returned as +inf (sky: the runtime puts it in the environment map). See runtime/training/learned.py."
)
DETAIL_DEFAULT = 0.5
"""learned_v2's detail strength when a session does not ask for one: the largest of EVALUATE_DETAILS
whose whole-frame SSIM on the held-out test split stays above push-pull's (0.765 against 0.759; at
1.0 it is 0.753), so the detail shows as far as it does not cost fidelity the baseline keeps."""
EVALUATE_DETAILS = (0.0, 0.25, 0.5, 1.0)
"""Detail strengths ``--evaluate`` scores a model with detail control at."""


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
    "learned_v1": ModelSpec(
        build=_learned_builder("learned_v1", detail=False),
        inputs=("memory_rgb", "memory_depth", "memory_coverage", "ray_dirs", "noise"),
        kind="learned multi-scale encoder-decoder (trained on Panda3D renders of Mirage memory)",
        description=LEARNED_DESCRIPTION.format(noise=" and a noise channel"),
    ),
    "learned_v2": ModelSpec(
        build=_learned_builder("learned_v2", detail=True),
        inputs=("memory_rgb", "memory_depth", "memory_coverage", "ray_dirs", "noise"),
        kind="learned multi-scale encoder-decoder with noise-modulated detail (trained on Panda3D renders "
        "of Mirage memory)",
        description=LEARNED_DESCRIPTION.format(noise="")
        + " A second head predicts a per-pixel, per-colour detail amplitude from the decoder's features; "
        "the output colour is the mean prediction plus amplitude x noise, so unseen texture (grass, gravel) "
        "has the local strength the scene has instead of being smoothed away. The noise input enters only "
        "there: scaling it scales the detail (0 gives the mean prediction, the best PSNR).",
        detail={
            "input": "noise",
            "default": DETAIL_DEFAULT,
            "range": [0.0, 4.0],
            "description": "the host multiplies the standard normal noise by this strength "
            "(OpenSessionRequest.generator_detail; absent: default); 0: mean prediction only, "
            "1: detail as trained (the local texture strength the detail loss matched)",
        },
    ),
    "learned_v3": ModelSpec(
        build=_learned_builder("learned_v3", detail=False, anchored=True),
        inputs=("memory_rgb", "memory_depth", "memory_coverage", "ray_dirs"),
        kind="learned anchored filler: a multi-scale encoder-decoder that weights candidate colours taken "
        "from the memory render (trained on Panda3D renders of Mirage memory, recoloured at random)",
        description=(
            "Completes a memory render without painting any colour the scene lacks: holes are first filled "
            "by the push-pull pyramid (plain, favouring far surfaces, along rows and along columns); a small encoder-decoder "
            "(space-to-depth, 1/2-1/4-1/8 resolution with a dilated context block, skips fused at every scale, "
            "depth-to-space) sees the memory and the fills with their colours normalised by the frame's own "
            "mean and spread, with coverage, inverse depth, edges and camera rays, and predicts per pixel the "
            "softmax weights of 13 candidates: the four fills (plain, far, rows, columns), the frame's mean colour and the fill shifted by "
            "4 and 12 pixels in each direction (texture carried across a hole's border). The colour is that "
            "convex combination; inverse depth is a residual over the fill's. Trained with every example "
            "recoloured at random (channel order, hue turn, saturation, gain, offset; sky and ground apart), so "
            "it cannot learn a palette. Pixels memory covers (coverage >= 0.999) are returned exactly. "
            "Predicted inverse depth below 1e-3 is returned as +inf (sky: the runtime puts it in the "
            "environment map). See runtime/training/learned.py."
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
    """Largest |torch - onnxruntime| over all sizes, of colour and of inverse depth 1 / (1 + depth)
    (depth compared on a bounded scale: far depths, up to thousands of metres, are exact only to float32
    relative precision); outputs must be finite."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, (h, w) in enumerate(sizes):
        feeds = random_inputs(names, h, w, seed + i)
        with torch.no_grad():
            expected = module(*(torch.from_numpy(feeds[n]) for n in names))
        got = session.run(list(CONTRACT_OUTPUTS), feeds)
        for e, g in zip(expected, got, strict=True):
            e = e.numpy().astype(np.float64)
            g = g.astype(np.float64)
            if tuple(e.shape) != g.shape or not np.isfinite(g).all():
                raise ExportError(f"onnxruntime output at {h}x{w} has shape {g.shape} or non-finite values")
            if e.shape[1] == 1:  # depth
                e, g = 1.0 / (1.0 + e), 1.0 / (1.0 + g)
            worst = max(worst, float(np.abs(e - g).max()))
    return worst


def export_model(
    name: str,
    out_dir: str | Path | None = None,
    *,
    weights: str | None = None,
    evaluation: dict | None = None,
    verbose: bool = True,
) -> ExportResult:
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
    module = spec.build(weights).eval()
    training = dict(spec.training)
    if weights:
        training = training_record(weights)
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
        training=training,
        export={
            "command": f"mirage export {name}"
            + (" --weights RUN_DIR/model.safetensors --evaluate" if weights else ""),
            "exporter": "torch.onnx.export(dynamo=False), single file, dynamic H and W",
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "parity_max_abs_diff": float(f"{parity:.3g}"),
            "parity_metric": "max |torch - onnxruntime| of rgb and of inverse depth 1/(1+depth), random inputs",
            "parity_sizes_hw": [list(s) for s in PARITY_SIZES],
        },
        evaluation=dict(evaluation) if evaluation else dict(spec.evaluation),
        license=spec.license,
        created=_dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        extra={"detail": dict(spec.detail)} if spec.detail else {},
    )
    card.write(card_path)
    size = onnx_path.stat().st_size
    if verbose:
        print(f"{name}: wrote {onnx_path} ({size} bytes, sha256 {digest}) and {card_path.name}")
        print(f"{name}: parity torch vs onnxruntime max abs diff {parity:.3g} at {list(PARITY_SIZES)} (H, W)")
    return ExportResult(name, onnx_path, card_path, digest, parity, size)


INT8_SUFFIX = "_int8"
INT8_CALIBRATION_EXAMPLES = 32


def export_int8(
    name: str,
    out_dir: str | Path | None = None,
    *,
    weights: str,
    data=None,  # DatasetConfig whose val split calibrates (default: the shipped model's)
    verbose: bool = True,
) -> ExportResult:
    """Static int8 quantisation (QDQ, per-channel weights, uint8 activations, convolutions only) of the
    exported ``name``, calibrated on held-out validation examples; writes ``NAME_int8.onnx`` and its
    card. Its distance to the torch model is reported, not bounded (int8 differs by design); the
    held-out scores (``--evaluate``) say whether it keeps quality."""
    import dataclasses
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from runtime.training.dataset import DatasetConfig, Split, build_dataset
    from runtime.training.scoring import calibration_feeds

    out = Path(out_dir) if out_dir else default_models_dir()
    spec = REGISTRY[name]
    fp32_path, fp32_card = out / f"{name}.onnx", out / f"{name}{CARD_SUFFIX}"
    if not fp32_path.is_file():
        raise ExportError(f"{fp32_path} is missing: export {name} first")
    qname = name + INT8_SUFFIX
    onnx_path, card_path = out / f"{qname}.onnx", out / f"{qname}{CARD_SUFFIX}"
    data = data or DatasetConfig()
    split = Split(build_dataset(data, splits=("val",)) / "val")
    items = calibration_feeds(split, data.fov_x_deg, INT8_CALIBRATION_EXAMPLES, spec.inputs)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(items)

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(onnx_path), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
        )  # fmt: skip
    module = spec.build(weights).eval()
    distance = parity_check(module, onnx_path.read_bytes(), spec.inputs)
    digest = sha256_file(onnx_path)
    base = ModelCard.load(fp32_card)
    card = dataclasses.replace(
        base,
        name=qname,
        file=onnx_path.name,
        sha256=digest,
        kind=f"int8 quantised {name} (static QDQ: per-channel int8 weights, uint8 activations, convolutions)",
        description=base.description
        + f" This is {name} with its convolutions quantised to int8, calibrated on "
        f"{len(items)} held-out validation examples; smaller and faster on CPU.",
        export={
            **base.export,
            "command": f"mirage export {name} --weights RUN_DIR/model.safetensors --int8",
            "quantization": {
                "format": "QDQ",
                "weights": "int8 per channel",
                "activations": "uint8",
                "ops": ["Conv"],
                "calibration_examples": len(items),
                "calibration": "held-out validation split (dataset val)",
            },
            "parity_max_abs_diff": float(f"{distance:.3g}"),
            "parity_metric": "max |torch fp32 - onnxruntime int8| of rgb and of inverse depth, random inputs "
            "(reported, not bounded: see the evaluation for quality)",
        },  # fmt: skip
        created=_dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
    )
    card.write(card_path)
    size = onnx_path.stat().st_size
    if verbose:
        print(
            f"{qname}: wrote {onnx_path} ({size} bytes, sha256 {digest}); max |fp32 torch - int8| {distance:.3g}"
        )
    return ExportResult(qname, onnx_path, card_path, digest, distance, size)


def evaluate_export(name: str, models_dir: Path, baseline: str = "pushpull_v1") -> dict:
    """Held-out comparison of ``name``, its int8 variant when exported, and ``baseline``: on the test
    split (courtyard + held-out arrangements) and on the family test split (worlds of the held-out
    scene families, then of the training families, none seen in training), per family."""
    from runtime.training.dataset import (
        HELD_OUT_FAMILIES,
        TRAIN_FAMILIES,
        DatasetConfig,
        Split,
        build_dataset,
        family_test_config,
    )
    from runtime.training.scoring import compare_generators, parse_generator

    data = DatasetConfig()
    split = Split(build_dataset(data, splits=("test",)) / "test")
    families = family_test_config()
    family_split = Split(build_dataset(families, splits=("test",)) / "test")
    names = [name] if name == baseline else [name, baseline]
    if (models_dir / f"{name}{INT8_SUFFIX}{CARD_SUFFIX}").is_file():
        names.insert(1, name + INT8_SUFFIX)
    if REGISTRY[name].detail:  # the same model at other detail strengths, side by side
        names[1:1] = [f"{name}@{d:g}" for d in EVALUATE_DETAILS if d != REGISTRY[name].detail["default"]]
    dirs = {
        n: str(models_dir) if (models_dir / f"{parse_generator(n)[0]}{CARD_SUFFIX}").is_file() else None
        for n in names
    }
    rows, family_rows = [], []
    for n in names:
        rows.extend(compare_generators([n], split, data.fov_x_deg, models_dir=dirs[n]))
        family_rows.extend(
            compare_generators(
                [n], family_split, families.fov_x_deg, models_dir=dirs[n], timing=False, by_scene=True
            )
        )
    return {
        "test_split": f"{len(split)} held-out examples (courtyard scene + held-out random arrangements), "
        f"dataset {data.key()}",
        "family_split": f"{len(family_split)} examples in held-out worlds of the scene families "
        f"(held-out families {', '.join(HELD_OUT_FAMILIES)}; training families {', '.join(TRAIN_FAMILIES)}), "
        f"dataset {families.key()}",
        "command": f"mirage export {name} --weights RUN_DIR/model.safetensors --evaluate",
        "rows": rows,
        "family_rows": family_rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.training.export", description=__doc__.splitlines()[0]
    )
    parser.add_argument("name", choices=sorted(REGISTRY), help="registered model to export")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_export(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="output directory (default: exported_models/)")
    parser.add_argument("--weights", default=None, help="trained weights (safetensors) for learned models")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write NAME_int8: static int8 quantisation, calibrated on held-out data",
    )
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="score the export against pushpull_v1 on the held-out test split and write it into the card",
    )


def run_export(args: argparse.Namespace) -> int:
    try:
        result = export_model(args.name, args.out, weights=args.weights)
        results = [result]
        if args.int8:
            if not args.weights:
                raise ExportError("--int8 quantises a learned model: give --weights")
            results.append(export_int8(args.name, args.out, weights=args.weights))
        if args.evaluate:
            evaluation = evaluate_export(args.name, result.onnx_path.parent)
            for r in results:
                card = ModelCard.load(r.card_path)
                card.evaluation = evaluation
                card.write(r.card_path)
                print(f"{r.name}: held-out evaluation written into {r.card_path.name}")
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
