"""Engine-rendered scenes: Panda3D headless (EGL) offscreen renders of colour and metric depth.

A :class:`PandaSceneSource` renders one built-in arrangement of the models that the panda3d wheel ships
(``panda3d/models``) from canonical camera poses (camera-to-world 4x4, OpenCV camera axes; see
``plugin_bridge.conventions``). The canonical world is Panda3D's world: right-handed, metres, Z up.

Panda3D has one graphics engine per process and an EGL context is current in one thread only (another
thread gets ``EGL_BAD_ACCESS`` and, silently, the previous frame). So every Panda3D call made here runs
on one module-level worker thread, created lazily with the engine: :meth:`PandaSceneSource.render` may
be called from any thread and calls are served one at a time. No ShowBase is created; the process-wide
``GraphicsEngine`` is shared with any ShowBase the process may have, and each source owns its own
offscreen output, scene graph, camera, lens and lights, so sources never see each other's scene.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from plugin_bridge.camera import Intrinsics
from plugin_bridge.conventions import Convention, canonical_to_engine_matrix
from runtime.scenes.families import FAMILIES, family_scene
from runtime.scenes.panda_families import build_family

__all__ = [
    "RANDOM",
    "CALIBRATION",
    "CALIBRATION_MARKER",
    "CALIBRATION_MARKER_RADIUS",
    "CALIBRATION_WALL_Y",
    "SCENES",
    "planar_depth",
    "PandaSceneSource",
    "SceneConfig",
]

SCENES: tuple[str, ...] = ("garden", "courtyard")
"""Built-in arrangements to walk through (the environment island with objects near the origin)."""

CALIBRATION = "calibration"
"""A test arrangement (not in SCENES): a flat wall and a small marker sphere on an empty background."""
CALIBRATION_WALL_Y = 0.0
"""The calibration wall is the plane y = CALIBRATION_WALL_Y, 400 m wide and tall, facing -y."""
CALIBRATION_MARKER = (1.5, -20.0, 0.8)
"""World position (metres) of the centre of the calibration scene's pure red marker sphere."""
CALIBRATION_MARKER_RADIUS = 0.3
"""Radius (metres) of the calibration marker sphere."""

RANDOM = "random"
"""Random arrangements (not in SCENES): the island with 8-14 of the wheel's models placed, turned,
scaled and coloured at random on the lawn, under a random sun; ``SceneConfig.seed`` picks one.
Training data comes from these (and garden variants); the courtyard is never trained on."""

_ALL_SCENES = (*SCENES, RANDOM, CALIBRATION, *FAMILIES)
_SKY = (0.62, 0.78, 0.95, 1.0)
_PRC = """
load-display p3headlessgl
window-type none
audio-library-name null
sync-video false
framebuffer-multisample false
multisamples 0
textures-power-2 none
model-cache-dir
notify-level-egldisplay error
"""  # no on-disk model cache; EGL's "no default display" warning is expected (a device is used)

T = TypeVar("T")


@dataclass
class SceneConfig:
    """What to render and how: arrangement, image size, field of view and depth range."""

    name: str = "garden"
    """Which built-in arrangement: one of SCENES, a scene family (`runtime.scenes.families.FAMILIES`:
    ``seed`` draws the world), RANDOM, or CALIBRATION for tests."""
    width: int = 128
    """Image width in pixels."""
    height: int = 128
    """Image height in pixels."""
    fov_x_deg: float = 60.0
    """Horizontal field of view in degrees (square pixels: fy = fx)."""
    near: float = 0.1
    """Near clipping plane in metres."""
    far: float = 200.0
    """Far clipping plane in metres; nothing drawn (sky) reads back as depth inf."""
    seed: int = 0
    """Arrangement jitter (object placements) for random variants; 0 keeps the documented spots. For
    RANDOM it picks the arrangement itself."""
    principal_point: tuple[float, float] | None = None
    """(cx, cy) in pixels, OpenCV convention; None for the centre ((W - 1) / 2, (H - 1) / 2)."""

    def __post_init__(self) -> None:
        if self.name not in _ALL_SCENES:
            raise ValueError(f"unknown scene {self.name!r}; valid: {', '.join(_ALL_SCENES)}")
        if int(self.width) < 1 or int(self.height) < 1:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not 0.0 < float(self.fov_x_deg) < 180.0:
            raise ValueError(f"fov_x_deg must be in (0, 180), got {self.fov_x_deg}")
        if not 0.0 < float(self.near) < float(self.far) < math.inf:
            raise ValueError(f"need 0 < near < far < inf, got near={self.near}, far={self.far}")
        if self.principal_point is not None:
            cx, cy = (float(v) for v in self.principal_point)
            if not (math.isfinite(cx) and math.isfinite(cy)):
                raise ValueError(f"principal_point must be finite, got {self.principal_point}")

    def intrinsics(self) -> Intrinsics:
        """The OpenCV intrinsics this configuration renders with."""
        k = Intrinsics.from_fov(int(self.width), int(self.height), float(self.fov_x_deg))
        if self.principal_point is None:
            return k
        cx, cy = (float(v) for v in self.principal_point)
        return Intrinsics(k.fx, k.fy, cx, cy, k.width, k.height)


# ---------------------------------------------------------------- the process-wide Panda3D engine


class _Engine:
    """The graphics engine, the headless GL pipe and a model cache; lives on the worker thread."""

    def __init__(self) -> None:
        from panda3d import core as p3d

        p3d.loadPrcFileData("mirage-scenes", _PRC)
        self.p3d = p3d
        self.engine = p3d.GraphicsEngine.getGlobalPtr()
        selection = p3d.GraphicsPipeSelection.getGlobalPtr()
        pipe = selection.makeModulePipe("p3headlessgl")
        if pipe is None or not pipe.isValid():
            raise RuntimeError(
                "Panda3D could not open the headless GL pipe (p3headlessgl); install EGL and Mesa "
                "(Debian: libegl1 libegl-mesa0 libgl1-mesa-dri)"
            )
        self.pipe = pipe
        self.loader = p3d.Loader.getGlobalPtr()
        self.models: dict[str, object] = {}
        # One GL context (GSG) for every source, owned by a 1x1 buffer that is never closed: closing
        # the last buffer of a GSG releases it, and a later source's textures then came out blank.
        self.gsg = None
        anchor = self.make_buffer("mirage-scenes-anchor", 1, 1)
        self.engine.openWindows()
        anchor.setActive(False)
        self.gsg = anchor.getGsg()
        if self.gsg is None or not anchor.isValid():
            raise RuntimeError("Panda3D could not open an offscreen buffer on the headless GL pipe")
        self.anchor = anchor

    def make_buffer(self, name: str, width: int, height: int):
        """An offscreen RGB8 + 24-bit depth buffer of ``width`` x ``height`` on the shared GSG."""
        p3d = self.p3d
        fbp = p3d.FrameBufferProperties()
        fbp.setRgbColor(True)
        fbp.setRgbaBits(8, 8, 8, 0)
        fbp.setDepthBits(24)
        fbp.setMultisamples(0)
        flags = p3d.GraphicsPipe.BFRefuseWindow
        size = p3d.WindowProperties.size(width, height)
        output = self.engine.makeOutput(self.pipe, name, -10, fbp, size, flags, self.gsg)
        if output is None:
            raise RuntimeError(f"Panda3D could not make a {width}x{height} offscreen buffer ({name})")
        return output

    def model(self, name: str):
        """A NodePath of the shared (read-only) copy of ``name``; callers copy it into their scene."""
        if name not in self.models:
            path = os.path.join(_model_dir(), name + ".egg.pz")
            node = self.loader.loadSync(self.p3d.Filename.fromOsSpecific(path))
            if node is None:
                raise RuntimeError(f"Panda3D could not load model {path}")
            self.models[name] = self.p3d.NodePath(node)
        return self.models[name]


def _model_dir() -> str:
    """The models that the panda3d wheel ships."""
    import panda3d

    return os.path.join(os.path.dirname(panda3d.__file__), "models")


_LOCK = threading.Lock()
_EXECUTOR: ThreadPoolExecutor | None = None
_WORKER_IDENT: int | None = None
_ENGINE: _Engine | None = None


def _mark_worker() -> None:
    global _WORKER_IDENT
    _WORKER_IDENT = threading.get_ident()


def _on_panda_thread(fn: Callable[..., T], *args) -> T:
    """Run ``fn(engine, *args)`` on the one thread that owns Panda3D and its GL context; wait for it."""
    global _EXECUTOR
    with _LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="mirage-panda3d", initializer=_mark_worker
            )
        executor = _EXECUTOR
    if threading.get_ident() == _WORKER_IDENT:
        return fn(_engine(), *args)
    return executor.submit(lambda: fn(_engine(), *args)).result()


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


# ---------------------------------------------------------------- arrangements


@dataclass(frozen=True)
class _Prop:
    model: str
    xy: tuple[float, float]  # world position (metres) of the centre of the model's footprint
    heading_deg: float = 0.0
    scale: float | tuple[float, float, float] = 1.0
    colour: tuple[float, float, float] | None = None  # flat colour replacing the model's textures
    lift: float = 0.0  # height of the model's lowest point above the ground (metres)
    jitter: bool = True  # moved by SceneConfig.seed


# The environment model is about 1230 x 1230 units; at this scale the island is ~123 m across, its trees
# and rocks up to ~30 m tall. It is shifted so that its ground is z = 0 and the world origin lies on
# open lawn (x in about [-11, 11], y in [-13, 20]) between a rock face (west), tall grass (east) and
# big rocks (south). The camera paths (paths.py) circle (0, 2) at 7.2-8.1 m: objects stand inside
# that ring (centres 5.6 m from (0, 2)) or outside it (9.6 m or more), never on it, long sides along it.
_ENV_SCALE = 0.1
_ENV_OFFSET = (32.0, 4.0, 0.566)


def _polar(angle_deg: float, radius: float) -> tuple[float, float]:
    """A world (x, y) at ``radius`` metres from the ring centre (0, 2), at ``angle_deg`` from +x."""
    a = math.radians(angle_deg)
    return (round(radius * math.cos(a), 3), round(2.0 + radius * math.sin(a), 3))


def _wall(angle_deg: float, radius: float, count: int, seg_m: float = 1.5) -> tuple[_Prop, ...]:
    """A straight wall of ``count`` boxes, tangent to the ring at ``angle_deg``, centred ``radius`` out."""
    cx, cy = _polar(angle_deg, radius)
    t = math.radians(angle_deg + 90.0)
    return tuple(
        _Prop(
            "box",
            (
                round(cx + (i - (count - 1) / 2) * seg_m * math.cos(t), 3),
                round(cy + (i - (count - 1) / 2) * seg_m * math.sin(t), 3),
            ),
            heading_deg=angle_deg + 90.0,
            scale=(seg_m, 0.6, 1.8 + 0.4 * (i % 2)),
            jitter=False,
        )
        for i in range(count)
    )


_INNER, _OUTER = 5.6, 9.6  # ring radii (about (0, 2)) of objects inside and outside the camera ring

_GARDEN = (
    _Prop("teapot", _polar(-110, _INNER), heading_deg=30.0, scale=0.25, colour=(0.85, 0.55, 0.2)),
    _Prop("box", _polar(-70, _OUTER), heading_deg=20.0, scale=1.2),
    _Prop("panda-model", _polar(-40, _INNER), heading_deg=150.0, scale=0.0018),
    _Prop("smiley", _polar(-5, _OUTER), heading_deg=90.0, scale=0.8),
    _Prop("box", _polar(30, _INNER), heading_deg=-15.0, scale=1.0),
    _Prop("box", _polar(30, _INNER), heading_deg=10.0, scale=0.6, lift=1.0, jitter=False),
    _Prop("panda-model", _polar(65, _OUTER), heading_deg=40.0, scale=0.0022),
    _Prop("smiley", _polar(100, _INNER), heading_deg=-80.0, scale=0.5),
    _Prop("box", _polar(135, _OUTER), heading_deg=45.0, scale=(1.6, 1.0, 1.4)),
    _Prop("teapot", _polar(170, _INNER), heading_deg=-100.0, scale=0.2, colour=(0.8, 0.82, 0.9)),
    _Prop("box", _polar(-150, _OUTER), heading_deg=5.0, scale=(0.8, 0.8, 2.2)),
)
_COURTYARD = (
    *_wall(90, 9.8, 5),
    *_wall(-135, 10.0, 3),
    _Prop("jack", _polar(-60, _INNER), heading_deg=15.0, scale=0.6),
    _Prop("frowney", _polar(-20, _OUTER), heading_deg=110.0, scale=0.8),
    _Prop("misc/rgbCube", _polar(20, _INNER), heading_deg=35.0, scale=1.0),
    _Prop("jack", _polar(45, _OUTER), heading_deg=-20.0, scale=0.8),
    _Prop("frowney", _polar(150, _INNER), heading_deg=-30.0, scale=0.6),
    _Prop("misc/rgbCube", _polar(170, _OUTER), heading_deg=10.0, scale=1.4),
    _Prop("misc/rgbCube", _polar(-100, _INNER), heading_deg=-25.0, scale=0.7),
    _Prop("teapot", _polar(-170, _INNER), heading_deg=-60.0, scale=0.2, colour=(0.7, 0.75, 0.8)),
)
_ARRANGEMENTS = {
    # name -> (props, sun direction (where the light travels), sun colour, ambient colour)
    "garden": (_GARDEN, (-0.5, 0.8, -0.9), (0.95, 0.92, 0.85), (0.38, 0.40, 0.45)),
    "courtyard": (_COURTYARD, (0.9, 0.3, -0.6), (1.0, 0.85, 0.7), (0.42, 0.42, 0.48)),
}


# model -> (smallest, largest) uniform scale that gives it a plausible 0.5-3 m size on the lawn
_RANDOM_MODELS = {
    "teapot": (0.15, 0.3),
    "box": (0.5, 1.6),
    "panda-model": (0.0012, 0.0026),
    "smiley": (0.4, 0.9),
    "frowney": (0.4, 0.9),
    "jack": (0.4, 0.9),
    "misc/rgbCube": (0.5, 1.5),
    "misc/sphere": (0.3, 0.8),
}


def random_arrangement(seed: int) -> tuple[tuple[_Prop, ...], tuple, tuple, tuple]:
    """(props, sun direction, sun colour, ambient colour) of random arrangement ``seed``.

    8-14 props anywhere on the open lawn (x in [-10, 10], y in [-12, 19]); a third get a flat random
    colour; one in four arrangements also has a short wall. Deterministic from ``seed``.
    """
    rng = np.random.default_rng([int(seed), 0xA11A])
    names = sorted(_RANDOM_MODELS)
    props = []
    for _ in range(int(rng.integers(8, 15))):
        name = names[int(rng.integers(len(names)))]
        lo, hi = _RANDOM_MODELS[name]
        scale = float(rng.uniform(lo, hi))
        colour = tuple(float(c) for c in rng.uniform(0.15, 0.95, size=3)) if rng.random() < 0.33 else None
        lift = (
            float(rng.uniform(0.3, 1.2))
            if name in ("misc/sphere", "smiley", "frowney") and rng.random() < 0.3
            else 0.0
        )
        xy = (round(float(rng.uniform(-10, 10)), 3), round(float(rng.uniform(-12, 19)), 3))
        props.append(_Prop(name, xy, float(rng.uniform(-180, 180)), scale, colour, lift, jitter=False))
    if rng.random() < 0.25:
        props.extend(
            _wall(float(rng.uniform(-180, 180)), float(rng.uniform(8.5, 11.0)), int(rng.integers(2, 6)))
        )
    azimuth = rng.uniform(0, 2 * math.pi)
    elevation = rng.uniform(0.35, 1.2)
    direction = (
        -math.cos(elevation) * math.cos(azimuth),
        -math.cos(elevation) * math.sin(azimuth),
        -math.sin(elevation),
    )
    warm = float(rng.uniform(0.0, 0.2))
    sun = (0.95, 0.95 - warm * 0.5, 0.9 - warm)
    amb = float(rng.uniform(0.3, 0.48))
    ambient = (amb, amb + 0.02, amb + 0.06)
    return tuple(props), direction, sun, ambient


def _add_prop(eng: _Engine, root, prop: _Prop, rng: np.random.Generator | None) -> None:
    p3d = eng.p3d
    pivot = root.attachNewNode(prop.model)
    model = eng.model(prop.model).copyTo(pivot)
    lo, hi = model.getTightBounds(model)
    model.setPos(-(lo.x + hi.x) / 2.0, -(lo.y + hi.y) / 2.0, -lo.z)  # footprint centre, bottom at z 0
    x, y = prop.xy
    heading = prop.heading_deg
    if rng is not None and prop.jitter:
        dx, dy = rng.uniform(-0.4, 0.4, size=2)
        x, y = x + float(dx), y + float(dy)
        heading += float(rng.uniform(-25.0, 25.0))
    pivot.setPos(x, y, prop.lift)
    pivot.setH(heading)
    if isinstance(prop.scale, tuple):
        pivot.setScale(*prop.scale)
    else:
        pivot.setScale(prop.scale)
    if prop.colour is not None:
        pivot.setTextureOff(1)
        pivot.setColor(p3d.LColor(*prop.colour, 1.0), 1)


def _build_environment(eng: _Engine, root) -> None:
    env = eng.model("environment").copyTo(root)
    env.setScale(_ENV_SCALE)
    env.setPos(*_ENV_OFFSET)


def _build_lights(eng: _Engine, root, direction, sun, ambient) -> None:
    p3d = eng.p3d
    dlight = p3d.DirectionalLight("sun")
    dlight.setColor(p3d.LColor(*sun, 1.0))
    dnp = root.attachNewNode(dlight)
    dnp.lookAt(p3d.LPoint3(*direction))  # a directional light shines along its +y
    alight = p3d.AmbientLight("ambient")
    alight.setColor(p3d.LColor(*ambient, 1.0))
    anp = root.attachNewNode(alight)
    root.setLight(dnp)
    root.setLight(anp)


def _build_calibration(eng: _Engine, root) -> None:
    p3d = eng.p3d
    cm = p3d.CardMaker("wall")
    cm.setFrame(-200.0, 200.0, -200.0, 200.0)  # in the card's x-z plane, facing -y
    wall = root.attachNewNode(cm.generate())
    wall.setY(CALIBRATION_WALL_Y)
    wall.setColor(0.5, 0.5, 0.5, 1.0)
    wall.setTwoSided(True)
    marker = eng.model("misc/sphere").copyTo(root)
    marker.setPos(*CALIBRATION_MARKER)
    # misc/sphere spans +-1 in y and z but +-0.951 in x (a tessellated UV sphere): scale it round
    marker.setScale(
        CALIBRATION_MARKER_RADIUS / 0.9510565, CALIBRATION_MARKER_RADIUS, CALIBRATION_MARKER_RADIUS
    )
    marker.setTextureOff(1)
    marker.setColor(1.0, 0.0, 0.0, 1.0, 1)
    root.setLightOff(1)


def _build_scene(eng: _Engine, root, config: SceneConfig, camera) -> None:
    if config.name in FAMILIES:
        build_family(eng, root, family_scene(config.name, config.seed), camera, _build_lights)
        return
    if config.name == CALIBRATION:
        _build_calibration(eng, root)
        return
    if config.name == RANDOM:
        props, direction, sun, ambient = random_arrangement(config.seed)
    else:
        props, direction, sun, ambient = _ARRANGEMENTS[config.name]
    _build_environment(eng, root)
    rng = np.random.default_rng(config.seed) if config.seed and config.name != RANDOM else None
    for prop in props:
        _add_prop(eng, root, prop, rng)
    _build_lights(eng, root, direction, sun, ambient)


# ---------------------------------------------------------------- the source


class _Output:
    """One source's Panda3D state; created, used and released on the Panda3D thread."""

    def __init__(self, eng: _Engine, config: SceneConfig, k: Intrinsics) -> None:
        p3d = eng.p3d
        w, h = k.width, k.height
        self.output = eng.make_buffer(f"mirage-scene-{config.name}", w, h)
        self.colour = p3d.Texture("colour")
        self.depth = p3d.Texture("depth")
        self.depth.setFormat(p3d.Texture.FDepthComponent32)
        self.output.addRenderTexture(self.colour, p3d.GraphicsOutput.RTMCopyRam, p3d.GraphicsOutput.RTPColor)
        self.output.addRenderTexture(self.depth, p3d.GraphicsOutput.RTMCopyRam, p3d.GraphicsOutput.RTPDepth)
        self.output.setClearColorActive(True)
        self.output.setClearColor(p3d.LColor(*_SKY))
        self.output.setClearDepthActive(True)
        self.output.setClearDepth(1.0)

        self.root = p3d.NodePath(f"scene-{config.name}")
        self.lens = p3d.PerspectiveLens()
        _set_lens(self.lens, k, config.near, config.far)
        cam = p3d.Camera("camera", self.lens)
        cam.setScene(self.root)
        self.camera = self.root.attachNewNode(cam)
        region = self.output.makeDisplayRegion()
        region.setCamera(self.camera)
        self.size = (w, h)
        try:
            if config.name in FAMILIES:
                sky = family_scene(config.name, config.seed).sky
                self.output.setClearColor(p3d.LColor(*(sky.horizon if sky else (0.0, 0.0, 0.0)), 1.0))
            _build_scene(eng, self.root, config, self.camera)
            self.output.setActive(False)
            eng.engine.openWindows()
            if not self.output.isValid():
                raise RuntimeError(f"Panda3D could not open a {w}x{h} offscreen buffer")
        except BaseException:
            self.close(eng)
            raise

    def render(self, eng: _Engine, engine_cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p3d = eng.p3d
        # LMatrix4 multiplies row vectors: its rows are the columns of the column-vector matrix
        self.camera.setMat(p3d.LMatrix4(*engine_cam_to_world.T.ravel().tolist()))
        self.output.setActive(True)
        try:
            eng.engine.renderFrame()
        finally:
            self.output.setActive(False)
        w, h = self.size
        rgb = np.frombuffer(self.colour.getRamImageAs("RGB"), dtype=np.uint8)
        depth = np.frombuffer(self.depth.getRamImage(), dtype=np.float32)
        if rgb.size != w * h * 3 or depth.size != w * h:
            raise RuntimeError(
                f"Panda3D read back {rgb.size} colour bytes and {depth.size} depth values for a {w}x{h} "
                f"render (colour {self.colour.getXSize()}x{self.colour.getYSize()}, "
                f"depth {self.depth.getXSize()}x{self.depth.getYSize()})"
            )
        # rows come bottom-up: flip, and copy out of Panda3D's buffers
        return rgb.reshape(h, w, 3)[::-1].copy(), depth.reshape(h, w)[::-1].copy()

    def close(self, eng: _Engine) -> None:
        eng.engine.removeWindow(self.output)
        self.root.removeNode()


def _set_lens(lens, k: Intrinsics, near: float, far: float) -> None:
    """Make Panda3D's lens project exactly like the OpenCV intrinsics ``k`` (film units: pixels)."""
    aspect = k.fx / k.fy
    lens.setFilmSize(float(k.width), float(k.height) * aspect)
    lens.setFocalLength(float(k.fx))
    # the film's centre is image coordinate (W - 1) / 2; the principal point is where the optical axis
    # meets it. Panda3D's film y is up, image v is down.
    lens.setFilmOffset(-(k.cx - (k.width - 1) / 2.0), (k.cy - (k.height - 1) / 2.0) * aspect)
    lens.setNearFar(float(near), float(far))


def planar_depth(buffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """Depth-buffer values in [0, 1] -> planar metric depth (float32, metres); 1.0 (nothing drawn) -> inf."""
    d = np.asarray(buffer, dtype=np.float64)
    z = near * far / (far - d * (far - near))
    z[d >= 1.0] = np.inf
    return z.astype(np.float32)


class PandaSceneSource:
    """Renders colour and planar metric depth of a built-in Panda3D arrangement from canonical poses.

    Use as a context manager or call :meth:`close`. Safe to use from any thread (calls are serialised
    on the Panda3D thread). Same config and pose give identical pixels.
    """

    def __init__(self, config: SceneConfig | None = None) -> None:
        self.config = SceneConfig() if config is None else config
        self._intrinsics = self.config.intrinsics()
        self._output: _Output | None = _on_panda_thread(_Output, self.config, self._intrinsics)

    @property
    def intrinsics(self) -> Intrinsics:
        """The OpenCV intrinsics of every frame this source renders."""
        return self._intrinsics

    def render(self, cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical camera-to-world [4,4] -> (rgb uint8 [H,W,3], planar depth float32 [H,W], inf = sky)."""
        pose = np.asarray(cam_to_world, dtype=np.float64)
        if pose.shape != (4, 4):
            raise ValueError(f"cam_to_world must have shape (4, 4), got {pose.shape}")
        engine_pose = canonical_to_engine_matrix(Convention.PANDA3D, pose)  # also checks finiteness
        r = pose[:3, :3]
        if not np.allclose(r.T @ r, np.eye(3), atol=1e-5) or np.linalg.det(r) <= 0.0:
            raise ValueError("cam_to_world's rotation block must be a proper rotation (orthonormal, det +1)")
        if not np.allclose(pose[3], (0.0, 0.0, 0.0, 1.0)):
            raise ValueError(f"cam_to_world's last row must be (0, 0, 0, 1), got {pose[3].tolist()}")
        output = self._output
        if output is None:
            raise RuntimeError("PandaSceneSource is closed")
        rgb, buffer = _on_panda_thread(output.render, engine_pose)
        return rgb, planar_depth(buffer, self.config.near, self.config.far)

    def close(self) -> None:
        """Release the offscreen buffer and the scene graph; safe to call more than once."""
        output, self._output = self._output, None
        if output is not None:
            _on_panda_thread(output.close)

    def __enter__(self) -> PandaSceneSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
