"""Training data for learned generators, rendered by Panda3D through Mirage's own memory.

One example: a random arrangement, a short camera path of K context views whose engine RGB-D frames
are ingested into a fresh :class:`SpatialMemory` (observe mode, exactly as the runtime does), then a
target pose; the example holds the memory rendered into the target (colour, depth, coverage: what the
generator gets at run time) and the engine's own colour and depth at the target (the truth).

Target kinds, so the data covers what the runtime meets (``KINDS``, with their shares):

- ``small``: a small step and turn from the last context view (thin disocclusion slivers);
- ``turn``: a 15-60 degree turn (a large unseen band at one side);
- ``close``: 1-4 m forward (splats seen up close, magnified, with gaps);
- ``back``: 0.5-3 m backward (new content at every border);
- ``far``: a random pose within 3 m, any heading (little overlap);
- ``empty``: no context at all (the first frame of a pose-only stream).

Splits: ``train`` draws random arrangements with seeds from ``TRAIN_SEEDS``, garden variants and, with
``train_families``, worlds of those scene families (``runtime.scenes.families``); ``val`` uses held-out
random arrangements; ``test`` holds the courtyard (never trained on) and other held-out random
arrangements, or, with ``test_families``, held-out worlds of those families only (one family after
the other, seeds no training world uses): the generator's judgement in worlds it never saw. Everything is deterministic from ``DatasetConfig.seed``; the arrays
are cached on disk (``$MIRAGE_CACHE`` or ``~/.cache/mirage``) as plain ``.npy`` files (no pickle)
and rebuilt only when the config changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from plugin_bridge.camera import Camera
from plugin_bridge.conventions import look_at

SPLITS: tuple[str, ...] = ("train", "val", "test")
KINDS: dict[str, float] = {"small": 0.3, "turn": 0.22, "close": 0.15, "back": 0.15, "far": 0.1, "empty": 0.08}
"""Target kinds and their shares of a split."""
TRAIN_SEEDS = range(1, 10_000)
"""Random-arrangement seeds training may use; val uses 10_001.., test 20_001.. (never trained on)."""
_SPLIT_SEED_BASE = {"train": 1, "val": 10_001, "test": 20_001}
_LAWN_X, _LAWN_Y = (-9.0, 9.0), (-11.0, 17.0)
FORMAT_VERSION = 1
ARRAYS: dict[str, tuple[str, tuple[int, ...]]] = {
    # name -> (dtype, trailing shape after [N, H, W])
    "memory_rgb": ("uint8", (3,)),  # memory render colour (0 where uncovered)
    "memory_depth": ("float32", ()),  # metres; 0 uncovered or at infinity (as the host feeds it)
    "memory_coverage": ("uint8", ()),  # 0 or 255
    "truth_rgb": ("uint8", (3,)),  # engine colour at the target
    "truth_depth": ("float32", ()),  # engine planar depth, metres; inf = sky
}


@dataclass
class DatasetConfig:
    """What to render; every field changes the cache key."""

    size: int = 128
    """Square image size in pixels (examples are rendered at this size)."""
    fov_x_deg: float = 60.0
    """Horizontal field of view (the runtime's default camera)."""
    examples: dict[str, int] = field(default_factory=lambda: {"train": 10000, "val": 160, "test": 240})
    """Examples per split."""
    per_arrangement: int = 40
    """Examples rendered per arrangement before moving to the next (building a scene costs time)."""
    context_views: tuple[int, int] = (1, 8)
    """Smallest and largest number K of context views (inclusive), for every kind but ``empty``."""
    garden_share: float = 0.2
    """Share of train arrangements that are jittered garden variants instead of random arrangements."""
    courtyard_share: float = 0.5
    """Share of test arrangements that are the courtyard (the held-out scene)."""
    budget_mib: int = 32
    """Memory budget of the example memories."""
    seed: int = 0
    train_families: tuple[str, ...] = ()
    """Scene families whose worlds (seeds from ``TRAIN_SEEDS``) make ``family_share`` of the train
    arrangements."""
    family_share: float = 0.0
    """Share of train arrangements that are worlds of ``train_families``."""
    test_families: tuple[str, ...] = ()
    """When set, the test split holds worlds of these families only (``examples["test"]`` split evenly
    among them, held-out seeds), instead of the courtyard and random arrangements."""

    def key(self) -> str:
        fields = asdict(self)
        for name in _ADDED_FIELDS:  # fields added later leave the keys of datasets built before them alone
            if fields[name] == _ADDED_FIELDS[name]:
                del fields[name]
        blob = json.dumps({**fields, "format": FORMAT_VERSION}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


_ADDED_FIELDS = {"train_families": (), "family_share": 0.0, "test_families": ()}

TRAIN_FAMILIES: tuple[str, ...] = ("meadow",)
"""Scene families learned_v3 trains on (beside the garden and random arrangements, all grass worlds)."""
HELD_OUT_FAMILIES: tuple[str, ...] = ("tiled_yard", "plaza", "hall", "canyon")
"""Families no generator trains on, unlike the training worlds in ground, sky, light and layout: a tiled
floor under a white sky, flat sand at dusk, indoors, a sand canyon under a deep blue sky."""


def family_test_config(size: int = 128, per_family: int = 80, per_arrangement: int = 20) -> DatasetConfig:
    """The generator test split in the scene families: ``per_family`` examples in held-out worlds
    (seeds no training world uses) of every held-out family, then of the training families."""
    families = (*HELD_OUT_FAMILIES, *TRAIN_FAMILIES)
    return DatasetConfig(
        size=size,
        examples={"train": 0, "val": 0, "test": per_family * len(families)},
        per_arrangement=per_arrangement,
        test_families=families,
    )


def default_cache_dir() -> Path:
    """``$MIRAGE_CACHE/datasets`` or ``~/.cache/mirage/datasets`` (outside the repository)."""
    root = os.environ.get("MIRAGE_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "mirage") / "datasets"


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world rotation (OpenCV axes, Z-up world) looking along heading ``yaw``, ``pitch`` up."""
    forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    return look_at(np.zeros(3), forward)[:3, :3]


def _pose(eye: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = _rotation(yaw, pitch)
    pose[:3, 3] = eye
    return pose


_RING_CENTRE = np.array([0.0, 2.0])
_RING_WALK = (6.4, 9.6)
"""Radii about the ring centre a camera walks in a family world (``runtime.scenes.families`` keeps
6.2-9.8 m clear of shapes, and the hall's walls beyond it)."""


def _keep_on_lawn(eye: np.ndarray) -> None:
    eye[0] = float(np.clip(eye[0], *_LAWN_X))
    eye[1] = float(np.clip(eye[1], *_LAWN_Y))


def _keep_on_ring(eye: np.ndarray) -> None:
    offset = eye[:2] - _RING_CENTRE
    r = float(np.hypot(*offset))
    if r < 1e-9:
        offset, r = np.array([1.0, 0.0]), 1.0
    eye[:2] = _RING_CENTRE + offset * (float(np.clip(r, *_RING_WALK)) / r)


@dataclass
class _Walker:
    eye: np.ndarray
    yaw: float
    pitch: float
    ring: bool = False
    """Walk on the family worlds' camera ring instead of the lawn."""

    def pose(self) -> np.ndarray:
        return _pose(self.eye, self.yaw, self.pitch)

    def moved(
        self, rng: np.random.Generator, dist: float, along: float, dyaw: float, dpitch: float
    ) -> _Walker:
        """Move ``dist`` metres at heading yaw + ``along`` (radians), then turn by ``dyaw``, ``dpitch``."""
        heading = self.yaw + along
        eye = self.eye + dist * np.array([math.cos(heading), math.sin(heading), 0.0])
        (_keep_on_ring if self.ring else _keep_on_lawn)(eye)
        eye[2] = float(np.clip(eye[2] + rng.uniform(-0.05, 0.05), 0.9, 2.4))
        pitch = float(np.clip(self.pitch + dpitch, math.radians(-25), math.radians(10)))
        return _Walker(eye, self.yaw + dyaw, pitch, self.ring)


def _start(rng: np.random.Generator, ring: bool = False) -> _Walker:
    if ring:
        a, r = rng.uniform(-math.pi, math.pi), rng.uniform(*_RING_WALK)
        eye = np.array([_RING_CENTRE[0] + r * math.cos(a), _RING_CENTRE[1] + r * math.sin(a), 0.0])
        eye[2] = rng.uniform(1.1, 2.2)
    else:
        eye = np.array([rng.uniform(*_LAWN_X), rng.uniform(*_LAWN_Y), rng.uniform(1.1, 2.2)])
    return _Walker(eye, rng.uniform(-math.pi, math.pi), math.radians(rng.uniform(-15.0, 4.0)), ring)


def _target(rng: np.random.Generator, kind: str, last: _Walker) -> _Walker:
    deg = math.radians
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "small":
        return last.moved(
            rng,
            rng.uniform(0.05, 0.5),
            rng.uniform(-math.pi, math.pi),
            deg(rng.uniform(-5, 5)),
            deg(rng.uniform(-3, 3)),
        )
    if kind == "turn":
        return last.moved(
            rng,
            rng.uniform(0.0, 0.3),
            rng.uniform(-math.pi, math.pi),
            sign * deg(rng.uniform(15, 60)),
            deg(rng.uniform(-5, 5)),
        )
    if kind == "close":
        return last.moved(
            rng,
            rng.uniform(1.0, 4.0),
            deg(rng.uniform(-10, 10)),
            deg(rng.uniform(-8, 8)),
            deg(rng.uniform(-8, 4)),
        )
    if kind == "back":
        return last.moved(
            rng,
            rng.uniform(0.5, 3.0),
            math.pi + deg(rng.uniform(-20, 20)),
            deg(rng.uniform(-8, 8)),
            deg(rng.uniform(-3, 3)),
        )
    # far and empty: anywhere near, any heading
    return last.moved(rng, rng.uniform(0.0, 3.0), rng.uniform(-math.pi, math.pi),
                      rng.uniform(-math.pi, math.pi), deg(rng.uniform(-5, 5)))  # fmt: skip


def _arrangements(config: DatasetConfig, split: str) -> list[tuple[str, int]]:
    """(scene name, seed) per arrangement of ``split``, in order."""
    count = -(-config.examples[split] // config.per_arrangement)
    rng = np.random.default_rng([config.seed, SPLITS.index(split), 0xA55])
    base = _SPLIT_SEED_BASE[split] + 1000 * config.seed
    out = []
    if split == "test" and config.test_families:
        fams = config.test_families
        return [(fams[i * len(fams) // count], base + i) for i in range(count)]
    for i in range(count):
        if split == "train" and config.train_families and rng.random() < config.family_share:
            out.append((config.train_families[int(rng.integers(len(config.train_families)))], 1 + 10 * i))
        elif split == "train" and rng.random() < config.garden_share:
            out.append(("garden", 100 + i))
        elif split == "test" and rng.random() < config.courtyard_share:
            out.append(("courtyard", i))
        else:
            out.append(("random", base + i))
    return out


def _usable(depth: np.ndarray) -> bool:
    """A start view is usable unless the camera is up against (or inside) something."""
    return float(np.mean(depth < 0.6)) < 0.15


def render_example(
    scene, rng: np.random.Generator, kind: str, config: DatasetConfig, ring: bool = False
) -> tuple[dict, dict]:
    """One example from an open scene source: (arrays without the N axis, metadata); ``ring``: the
    camera walks the family worlds' ring instead of the lawn."""
    import torch

    from runtime.memory import PROVENANCE_OBSERVED, MemoryConfig, SpatialMemory

    k = scene.intrinsics
    for _ in range(20):
        walker = _start(rng, ring)
        rgb, depth = scene.render(walker.pose())
        if _usable(depth):
            break
    memory = SpatialMemory(MemoryConfig(budget_bytes=config.budget_mib << 20, initial_capacity=16384))
    views = 0 if kind == "empty" else int(rng.integers(config.context_views[0], config.context_views[1] + 1))
    for i in range(views):
        if i > 0:
            walker = walker.moved(rng, rng.uniform(0.1, 0.5), math.radians(rng.uniform(-40, 40)),
                                  math.radians(rng.uniform(-10, 10)), math.radians(rng.uniform(-3, 3)))  # fmt: skip
            rgb, depth = scene.render(walker.pose())
        camera = Camera(k, walker.pose())
        memory.ingest(camera, rgb, depth, provenance=PROVENANCE_OBSERVED, frame_index=i,
                      render=memory.render(camera))  # fmt: skip
    target = _target(rng, kind, walker)
    with torch.no_grad():
        view = memory.render(Camera(k, target.pose()))
    truth_rgb, truth_depth = scene.render(target.pose())
    mem_depth = view.depth.numpy()
    arrays = {
        "memory_rgb": np.clip(np.rint(view.rgb.numpy() * 255.0), 0, 255).astype(np.uint8),
        "memory_depth": np.where(np.isfinite(mem_depth), mem_depth, 0.0).astype(np.float32),
        "memory_coverage": np.where(view.coverage.numpy() >= 0.5, 255, 0).astype(np.uint8),
        "truth_rgb": truth_rgb,
        "truth_depth": truth_depth.astype(np.float32),
    }
    meta = {"kind": kind, "context_views": views, "pose": np.round(target.pose(), 6).tolist(),
            "coverage": float(np.mean(arrays["memory_coverage"] > 0))}  # fmt: skip
    return arrays, meta


def _kinds(rng: np.random.Generator, n: int) -> list[str]:
    names = list(KINDS)
    return [
        names[i]
        for i in rng.choice(len(names), size=n, p=np.array(list(KINDS.values())) / sum(KINDS.values()))
    ]


def build_split(config: DatasetConfig, split: str, out_dir: Path, progress: bool = True) -> Path:
    """Render ``split`` into ``out_dir/split`` (arrays as .npy, metadata as JSON); returns that folder."""
    from runtime.scenes.families import FAMILIES
    from runtime.scenes.panda_source import PandaSceneSource, SceneConfig

    folder = out_dir / split
    done = folder / "meta.json"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    n, s = int(config.examples[split]), int(config.size)
    arrays = {
        name: np.lib.format.open_memmap(
            folder / f"{name}.npy.part", mode="w+", dtype=dt, shape=(n, s, s, *tail)
        )
        for name, (dt, tail) in ARRAYS.items()
    }
    metas: list[dict] = []
    bar = _bar(n, f"dataset {split}", progress)
    t0 = time.perf_counter()
    index = 0
    for a, (scene_name, scene_seed) in enumerate(_arrangements(config, split)):
        count = min(config.per_arrangement, n - index)
        scene_config = SceneConfig(
            name=scene_name, seed=scene_seed, width=s, height=s, fov_x_deg=config.fov_x_deg
        )
        with PandaSceneSource(scene_config) as scene:
            rng = np.random.default_rng([config.seed, SPLITS.index(split), a])
            for kind in _kinds(rng, count):
                example, meta = render_example(scene, rng, kind, config, ring=scene_name in FAMILIES)
                for name, value in example.items():
                    arrays[name][index] = value
                metas.append({"scene": scene_name, "scene_seed": scene_seed, **meta})
                index += 1
                bar.update(1)
    bar.close()
    for name, arr in arrays.items():
        arr.flush()
        del arr
        os.replace(folder / f"{name}.npy.part", folder / f"{name}.npy")
    info = {"format": FORMAT_VERSION, "config": asdict(config), "split": split, "examples": metas,
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    done.write_text(json.dumps(info))
    return folder


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ex", disable=not enabled, mininterval=2.0)


def build_dataset(
    config: DatasetConfig,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    splits: tuple[str, ...] = SPLITS,
) -> Path:
    """Build (or reuse) ``splits``; returns the dataset folder ``<cache>/gen-<key>``."""
    import torch

    torch.set_num_threads(1)  # memory work on one thread: deterministic and leaves a core free
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    out = root / f"gen-{config.key()}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**asdict(config), "format": FORMAT_VERSION}, indent=1))
    for split in splits:
        if config.examples.get(split, 0) > 0:
            build_split(config, split, out, progress)
    return out


class Split:
    """A built split, memory-mapped: ``split[name]`` is an array [N, H, W, ...]; ``split.meta`` the list."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        info = json.loads((self.folder / "meta.json").read_text())
        if info.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{self.folder}: dataset format {info.get('format')}, expected {FORMAT_VERSION}; rebuild it"
            )
        self.meta: list[dict] = info["examples"]
        self.arrays = {
            name: np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ARRAYS
        }

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]
