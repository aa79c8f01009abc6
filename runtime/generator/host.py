"""Generator host: loads an exported ONNX model after checking its sha256 against its card, and runs it.

The I/O contract (NCHW float32, batch 1, H and W per the card's size rule) is fixed here; a model
declares in its graph only the inputs it uses and the host feeds exactly those. Nothing is ever
unpickled: the model is ONNX, the card is JSON.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from plugin_bridge.camera import Intrinsics
from runtime.generator.card import CARD_SUFFIX, ModelCard, ModelCardError, TensorSpec

MODELS_DIR_ENV = "MIRAGE_MODELS_DIR"
_CHUNK = 1 << 20

CONTRACT_INPUTS: dict[str, TensorSpec] = {
    spec.name: spec
    for spec in (
        TensorSpec("memory_rgb", [1, 3, "H", "W"], "float32", [0, 1],
                   "memory render colour, 0..1 (0 where memory does not cover the pixel)"),
        TensorSpec("memory_depth", [1, 1, "H", "W"], "float32", [0, None],
                   "memory render planar depth in metres; 0 where unknown or at infinity"),
        TensorSpec("memory_coverage", [1, 1, "H", "W"], "float32", [0, 1],
                   "1 where memory covers the pixel (a surface point or the environment map), 0 where not"),
        TensorSpec("ray_dirs", [1, 3, "H", "W"], "float32", [-1, 1],
                   "unit camera-frame ray direction per pixel (OpenCV axes: x right, y down, z forward)"),
        TensorSpec("noise", [1, 1, "H", "W"], "float32", [None, None],
                   "standard normal noise drawn from the session seed (deterministic replay)"),
    )
}  # fmt: skip
"""Every input the host can provide, by name."""

CONTRACT_OUTPUTS: dict[str, TensorSpec] = {
    spec.name: spec
    for spec in (
        TensorSpec("rgb", [1, 3, "H", "W"], "float32", [0, 1], "completed colour, 0..1"),
        TensorSpec(
            "depth", [1, 1, "H", "W"], "float32", [0, None], "completed planar depth in metres (>= 0)"
        ),
    )
}
"""Outputs every generator must produce."""


class ModelIntegrityError(Exception):
    """The model file's sha256 differs from the one its card declares."""


class ModelNotFoundError(Exception):
    """No card (or no model file) for the requested name; the message lists what is available."""


class ModelContractError(ValueError):
    """The graph asks for inputs the host cannot provide or lacks the required outputs."""


def default_models_dir() -> Path:
    """``$MIRAGE_MODELS_DIR`` if set, else ``<repo>/exported_models``."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "exported_models"


def available_models(models_dir: str | Path | None = None) -> list[str]:
    """Names with both ``NAME.card.json`` and the model file next to it, sorted."""
    root = Path(models_dir) if models_dir else default_models_dir()
    if not root.is_dir():
        return []
    names = []
    for card in root.glob("*" + CARD_SUFFIX):
        name = card.name[: -len(CARD_SUFFIX)]
        if (root / f"{name}.onnx").is_file():
            names.append(name)
    return sorted(names)


def models_with_detail(models_dir: str | Path | None = None) -> list[str]:
    """Installed models whose card declares detail control (read from the cards, nothing loaded)."""
    root = Path(models_dir) if models_dir else default_models_dir()
    out = []
    for name in available_models(root):
        try:
            if "detail" in ModelCard.load(root / f"{name}{CARD_SUFFIX}").extra:
                out.append(name)
        except ModelCardError:
            continue
    return out


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ray_directions(intrinsics: Intrinsics) -> np.ndarray:
    """[3, H, W] float32 unit rays ((u - cx) / fx, (v - cy) / fy, 1) normalised, OpenCV camera axes."""
    u = (np.arange(intrinsics.width, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    v = (np.arange(intrinsics.height, dtype=np.float64) - intrinsics.cy) / intrinsics.fy
    x = np.broadcast_to(u[None, :], (intrinsics.height, intrinsics.width))
    y = np.broadcast_to(v[:, None], (intrinsics.height, intrinsics.width))
    rays = np.stack([x, y, np.ones_like(x)])
    return (rays / np.linalg.norm(rays, axis=0, keepdims=True)).astype(np.float32)


@dataclass
class GeneratorConfig:
    name: str = "learned_v2_int8"
    """Exported model name: ``NAME.onnx`` with ``NAME.card.json`` in the models directory."""
    models_dir: str | None = None
    """Where exported models live; None: ``$MIRAGE_MODELS_DIR`` or ``<repo>/exported_models``."""
    providers: tuple[str, ...] | None = None
    """onnxruntime execution providers in order; None: CUDA when available, then CPU."""
    intra_op_threads: int = 2
    """onnxruntime intra-op threads."""
    spin: bool = False
    """Let onnxruntime's idle intra-op threads spin-wait for work (its own default). Off: on 2 cores
    the spinning threads took the CPU that the event loop, the other sessions and the transport
    needed, though one call alone is 12-20% faster with it (docs/benchmarks.md, "Load and flood")."""


def _providers(requested: tuple[str, ...] | None) -> list[str]:
    available = ort.get_available_providers()
    if requested is None:
        chosen = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []
        return chosen + ["CPUExecutionProvider"]
    missing = [p for p in requested if p not in available]
    if missing:
        raise ValueError(
            f"onnxruntime providers {missing} are not available here (available: {available}); "
            "leave GeneratorConfig.providers as None to pick CUDA when present, else CPU"
        )
    chosen = list(requested)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class GeneratorHost:
    """A loaded, integrity-checked generator. Use ``GeneratorHost.load(GeneratorConfig(...))``."""

    def __init__(self, card: ModelCard, session: ort.InferenceSession, sha256: str, path: Path) -> None:
        self.card = card
        self.name = card.name
        self.sha256 = sha256
        self.path = path
        self.session = session
        self.providers: list[str] = list(session.get_providers())
        self.input_names: tuple[str, ...] = tuple(i.name for i in session.get_inputs())
        self.output_names: tuple[str, ...] = tuple(o.name for o in session.get_outputs())
        self._rays: dict[Intrinsics, np.ndarray] = {}
        self._check_contract()
        self.detail_default: float | None = self._detail_default()
        """The card's default detail strength; None when the model has no detail control (its noise
        input, if any, is not a detail scale)."""

    @classmethod
    def load(cls, config: GeneratorConfig) -> GeneratorHost:
        root = Path(config.models_dir) if config.models_dir else default_models_dir()
        card_path = root / f"{config.name}{CARD_SUFFIX}"
        if not card_path.is_file():
            available = available_models(root)
            raise ModelNotFoundError(
                f"no model named {config.name!r} in {root} (looked for {card_path.name}); "
                f"available: {', '.join(available) or 'none'}"
            )
        card = ModelCard.load(card_path)
        if card.name != config.name:
            raise ModelCardError(
                f"{card_path}: card names model {card.name!r} but the file is named for {config.name!r}; "
                "rename one so they agree"
            )
        model_path = root / card.file
        if not model_path.is_file():
            raise ModelNotFoundError(
                f"{card_path} points to {card.file!r}, which is not in {root}; restore it or re-export with "
                f"`python -m runtime.training.export {config.name}`"
            )
        # Read once, hash what was read and build the session from those same bytes (no swap in between).
        digest = hashlib.sha256()
        blob = bytearray()
        with open(model_path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                blob += chunk
        actual = digest.hexdigest()
        if actual != card.sha256:
            raise ModelIntegrityError(
                f"{model_path}: sha256 {actual} does not match the card's declared sha256 {card.sha256} "
                f"({card_path.name}); the file was modified or corrupted. Refusing to load it: restore the "
                f"file or re-export with `python -m runtime.training.export {config.name}`"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(config.intra_op_threads)
        options.inter_op_num_threads = 1
        if not config.spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            bytes(blob), sess_options=options, providers=_providers(config.providers)
        )
        return cls(card, session, actual, model_path)

    def _check_contract(self) -> None:
        unknown = [n for n in self.input_names if n not in CONTRACT_INPUTS]
        if unknown:
            raise ModelContractError(
                f"model {self.name!r} asks for inputs {unknown} that the host does not provide; "
                f"the host provides {sorted(CONTRACT_INPUTS)}"
            )
        for tensor in self.session.get_inputs():
            if tensor.type != "tensor(float)":
                raise ModelContractError(
                    f"model {self.name!r}: input {tensor.name!r} is {tensor.type}; the contract is float32"
                )
        missing = [n for n in CONTRACT_OUTPUTS if n not in self.output_names]
        if missing:
            raise ModelContractError(
                f"model {self.name!r} lacks outputs {missing} (it has {list(self.output_names)}); "
                f"every generator must output {list(CONTRACT_OUTPUTS)}"
            )
        if set(self.card.input_names) != set(self.input_names):
            raise ModelCardError(
                f"model {self.name!r}: card lists inputs {list(self.card.input_names)} but the graph declares "
                f"{list(self.input_names)}; re-export to rewrite the card"
            )

    def _detail_default(self) -> float | None:
        detail = self.card.extra.get("detail")
        if detail is None:
            return None
        default = detail.get("default") if isinstance(detail, dict) else None
        if (
            "noise" not in self.input_names
            or not isinstance(default, (int, float))
            or isinstance(default, bool)
        ):
            raise ModelCardError(
                f"model {self.name!r}: card key 'detail' must be an object with a numeric 'default' on a "
                f"model with a noise input, got {detail!r:.120}; re-export to rewrite the card"
            )
        return float(default)

    @property
    def detail_control(self) -> bool:
        """Whether the noise input scales the model's detail (``generate(..., detail=)``)."""
        return self.detail_default is not None

    def detail_in_use(self, detail: float | None = None) -> float | None:
        """The strength the noise is scaled by for a requested ``detail`` (None: the card's default);
        None for a model without detail control, which refuses a requested one (ValueError)."""
        if not self.detail_control:
            if detail is not None:
                raise ValueError(
                    f"model {self.name!r} has no detail control (no 'detail' in its card); pass detail=None"
                )
            return None
        return float(self.detail_default if detail is None else detail)

    def _rays_for(self, intrinsics: Intrinsics) -> np.ndarray:
        rays = self._rays.get(intrinsics)
        if rays is None:
            if len(self._rays) > 8:
                self._rays.clear()
            rays = self._rays[intrinsics] = ray_directions(intrinsics)[None]
        return rays

    def generate(
        self,
        memory_rgb: np.ndarray,
        memory_depth: np.ndarray,
        memory_coverage: np.ndarray,
        *,
        intrinsics: Intrinsics,
        seed: int = 0,
        detail: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Complete a memory render. In: rgb [H,W,3] 0..1, depth [H,W] metres (0 unknown, inf allowed),
        coverage [H,W] 0..1. Out: rgb [H,W,3] float32 0..1 and depth [H,W] float32 metres (>= 0).
        ``detail`` scales the noise of a model with detail control (None: the card's default)."""
        scale = self.detail_in_use(detail)
        rgb = np.asarray(memory_rgb)
        depth = np.asarray(memory_depth)
        cov = np.asarray(memory_coverage)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"memory_rgb must be [H, W, 3], got shape {rgb.shape}")
        h, w = rgb.shape[:2]
        for label, arr in (("memory_depth", depth), ("memory_coverage", cov)):
            if arr.shape != (h, w):
                raise ValueError(
                    f"{label} must be [H, W] = {(h, w)} to match memory_rgb, got shape {arr.shape}"
                )
        m = self.card.size_multiple
        if h % m or w % m or h == 0 or w == 0:
            fix_h, fix_w = max(m, -(-h // m) * m), max(m, -(-w // m) * m)
            raise ValueError(
                f"model {self.name!r} needs {self.card.size_rule} (got H={h}, W={w}); render or pad to "
                f"{fix_h}x{fix_w} (H x W) and crop the result"
            )
        if (intrinsics.width, intrinsics.height) != (w, h):
            raise ValueError(
                f"intrinsics are for {intrinsics.width}x{intrinsics.height} but the images are {w}x{h} (W x H); "
                f"pass intrinsics.scaled({w}, {h})"
            )
        feeds: dict[str, np.ndarray] = {}
        for name in self.input_names:
            if name == "memory_rgb":
                x = np.nan_to_num(rgb.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
                feeds[name] = np.ascontiguousarray(x.transpose(2, 0, 1))[None]
            elif name == "memory_depth":
                d = depth.astype(np.float32, copy=False)
                d = np.where(np.isfinite(d) & (d > 0), d, np.float32(0.0))
                feeds[name] = np.ascontiguousarray(d)[None, None]
            elif name == "memory_coverage":
                c = np.clip(np.nan_to_num(cov.astype(np.float32, copy=False), nan=0.0), 0.0, 1.0)
                feeds[name] = np.ascontiguousarray(c)[None, None]
            elif name == "ray_dirs":
                feeds[name] = self._rays_for(intrinsics)
            elif name == "noise":
                rng = np.random.default_rng(seed)
                feeds[name] = rng.standard_normal((1, 1, h, w), dtype=np.float32)
                if scale is not None:
                    feeds[name] *= np.float32(scale)
        out_rgb, out_depth = self.session.run(["rgb", "depth"], feeds)
        return (
            np.ascontiguousarray(out_rgb[0].transpose(1, 2, 0), dtype=np.float32),
            np.ascontiguousarray(out_depth[0, 0], dtype=np.float32),
        )
