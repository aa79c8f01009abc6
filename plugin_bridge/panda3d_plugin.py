"""Mirage in a Panda3D app: a component for a ShowBase frame loop.

    from plugin_bridge.panda3d_plugin import MiragePlugin, PluginConfig
    base = ShowBase()
    ...                                              # the app's own scene and camera control
    mirage = MiragePlugin(base, PluginConfig(target="127.0.0.1:50051", mode="generate"))
    base.run()

Each frame (a task that runs after the app's own tasks and before the frame is drawn) the plugin
takes the camera's pose and lens, hands them to its network thread and returns: the engine's frame
never waits on the network. The network thread keeps one session open and streams in lock-step with
the newest request: a request that arrives while one is in flight replaces the one waiting (newest
wins), and the newest frame that came back waits for the main loop in a one-slot queue the same way.
Poses go out in Panda3D's own convention (``Convention.PANDA3D``: the runtime converts them at the
edge); the lens becomes OpenCV intrinsics (`intrinsics_from_lens`).

Modes:
- ``generate``: show Mirage's frame for the camera, full screen on a card;
- ``composite``: the engine draws what it has; where it drew nothing (depth at the clear value) or
  drew farther than Mirage's surface, Mirage's frame fills in;
- ``observe``: the engine's own colour, planar depth and instance ids (nodes tagged with
  `MiragePlugin.tag_object`) go to Mirage as observations, building memory the AR way; the app shows
  its own render.

When the server goes away (UNAVAILABLE, a stream cut, a server stopping), the network thread
reconnects with exponential backoff and jitter; it then does a new handshake and keeps the same
session when the server still has it (or resumes it from the server's durable checkpoint), else opens
a new one. Meanwhile the app runs on, showing the last frame and a status line.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import MirageClient, MirageError, UnavailableError
from plugin_bridge.codec import DepthEncoding
from plugin_bridge.conventions import Convention, matrix_to_quat
from plugin_bridge.types import Frame, Observation, Pose

MODES = ("generate", "composite", "observe")
ID_TAG = "mirage_id"
"""The tag `MiragePlugin.tag_object` sets: the instance id pass draws each tagged node in its id."""


@dataclass
class PluginConfig:
    target: str = "127.0.0.1:50051"
    mode: str = "generate"
    size: tuple[int, int] | None = None
    """Frame size (width, height); None: the window's."""
    token: str | None = None
    credentials: object | None = None
    """grpc channel credentials (`plugin_bridge.client.tls_credentials`) for a TLS server."""
    seed: int = 0
    generator: str = ""
    budget_bytes: int = 0
    backoff_s: tuple[float, float] = (0.25, 8.0)
    """First and longest wait between reconnection attempts (doubling, with jitter)."""
    show_status: bool = True
    """A status line in the corner: connection, frames, round trip."""
    network_delay_s: float = 0.0
    """A pause before each request on the network thread (to try a slow network; 0 in use)."""


def intrinsics_from_lens(lens, width: int, height: int) -> Intrinsics:
    """OpenCV intrinsics of a Panda3D perspective lens rendering ``width`` x ``height`` pixels."""
    fw, fh = lens.getFilmSize()
    ox, oy = lens.getFilmOffset()
    f = lens.getFocalLength()
    sx, sy = width / fw, height / fh  # pixels per film unit
    return Intrinsics(
        fx=f * sx,
        fy=f * sy,
        cx=(width - 1) / 2.0 - ox * sx,
        cy=(height - 1) / 2.0 + oy * sy,
        width=int(width),
        height=int(height),
    )


def node_pose(nodepath, relative_to) -> tuple[Pose, np.ndarray]:
    """The camera-to-world pose of ``nodepath`` in ``relative_to``'s frame, in Panda3D's convention,
    and its 4x4 column-vector matrix."""
    mat = nodepath.getMat(relative_to)
    m = np.array([list(mat.getRow(i)) for i in range(4)], dtype=np.float64).T  # rows: row vectors
    return Pose(tuple(m[:3, 3]), tuple(matrix_to_quat(m[:3, :3]))), m


class Newest:
    """A one-slot hand-over between threads: `put` replaces what waits there (newest wins)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self.replaced = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.replaced += 1
            self._item = item
            self._cond.notify_all()

    def take(self, timeout: float):
        """The item, waiting up to ``timeout`` seconds for one (None if none came)."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None, timeout)
            item, self._item = self._item, None
            return item

    def poll(self):
        with self._cond:
            item, self._item = self._item, None
            return item


@dataclass
class Request:
    engine_frame: int
    pose: Pose
    observation: Observation | None = None


@dataclass
class Reply:
    request: Request
    frame: Frame
    round_trip_ms: float


@dataclass
class LinkStatus:
    state: str = "connecting"  # connecting, connected, reconnecting, failed, stopped
    detail: str = ""
    session_id: str = ""
    sessions_opened: int = 0
    reconnects: int = 0
    frames: int = 0
    history: list[str] = field(default_factory=list)  # every state it went through, in order


class Link(threading.Thread):
    """The network side of the plugin: one session, lock-step with the newest request, reconnecting.

    Anything but a refusal the client must fix (a bad token, a protocol or argument error: the state
    goes to ``failed`` with the server's message) is retried after the backoff.
    """

    def __init__(self, config: PluginConfig, intrinsics: Intrinsics, keep_log: int = 10_000):
        super().__init__(name="mirage-link", daemon=True)
        self.config = config
        self.intrinsics = intrinsics
        self.requests = Newest()
        self.replies = Newest()
        self.status = LinkStatus()
        # (sequence, pose) of the last keep_log requests that got a frame (pose None: an observation)
        self.sent: deque[tuple[int, Pose | None]] = deque(maxlen=keep_log)
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)

    def _state(self, state: str, detail: str = "") -> None:
        with self._lock:
            self.status.state, self.status.detail = state, detail
            if not self.status.history or self.status.history[-1] != state:
                self.status.history.append(state)

    def _handshake(self, client: MirageClient) -> str:
        """The session to stream on: the one we had if the server still has it (or can resume it),
        else a new one."""
        old = self.status.session_id
        if old:
            try:
                client.stats(old)
                return old
            except MirageError:
                pass
            try:
                return client.open_session(
                    self.intrinsics, resume_session_id=old, **self._options()
                ).session_id
            except MirageError:
                pass
        info = client.open_session(self.intrinsics, **self._options())
        with self._lock:
            self.status.sessions_opened += 1
        return info.session_id

    def _options(self) -> dict:
        c = self.config
        return dict(
            convention=Convention.PANDA3D,
            depth_encoding=DepthEncoding.FLOAT16_METERS,
            seed=c.seed,
            generator=c.generator,
            budget_bytes=c.budget_bytes,
        )

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a defect, not the network: say it on the status line, never hide it
            self._state("failed", f"{type(exc).__name__}: {exc}")
            raise

    def _run(self) -> None:
        attempt = 0
        while not self._stop_event.is_set():
            try:
                with MirageClient(
                    self.config.target, token=self.config.token, credentials=self.config.credentials
                ) as client:
                    session_id = self._handshake(client)
                    with self._lock:
                        if self.status.history and self.status.session_id:
                            self.status.reconnects += 1
                        self.status.session_id = session_id
                    self._state("connected", session_id)
                    attempt = 0
                    self._stream(client, session_id)
                    break  # stopped
            except UnavailableError as exc:
                reason = exc.details
            except MirageError as exc:
                if exc.code is not None and exc.code.name in (
                    "UNAUTHENTICATED",
                    "PERMISSION_DENIED",
                    "INVALID_ARGUMENT",
                ):
                    self._state("failed", f"{exc.code.name}: {exc.details}")
                    return
                reason = f"{exc.code.name if exc.code else 'error'}: {exc.details}"
            first, longest = self.config.backoff_s
            wait = min(longest, first * 2**attempt) * (0.5 + random.random() / 2)
            attempt += 1
            self._state("reconnecting", f"{reason} (retry {attempt} in {wait:.1f} s)")
            self._stop_event.wait(wait)
        self._state("stopped")

    def _stream(self, client: MirageClient, session_id: str) -> None:
        stream = client.stream(session_id)
        try:
            while not self._stop_event.is_set():
                request = self.requests.take(0.05)
                if request is None:
                    continue
                if self.config.network_delay_s:
                    time.sleep(self.config.network_delay_s)
                t0 = time.perf_counter()
                if request.observation is not None:
                    sequence = stream.send_observation(request.observation)
                    frame = stream.next_frame()
                else:
                    frame = stream.step(request.pose)
                    sequence = frame.sequence
                with self._lock:
                    self.sent.append((sequence, request.pose if request.observation is None else None))
                    self.status.frames += 1
                self.replies.put(Reply(request, frame, (time.perf_counter() - t0) * 1e3))
        finally:
            if self._stop_event.is_set():
                try:
                    stream.close()
                except MirageError:
                    pass
            else:
                stream.cancel()


class _Capture:
    """An offscreen copy of what the app's camera sees: colour and planar depth (and instance ids),
    read back to RAM each frame; it follows the camera (its own camera is parented to it)."""

    def __init__(self, base, camera, lens, width: int, height: int, ids: bool):
        from panda3d import core as p3d

        self.p3d, self.size, self.lens = p3d, (width, height), lens
        self.colour, self.depth = p3d.Texture("mirage-colour"), p3d.Texture("mirage-depth")
        self.depth.setFormat(p3d.Texture.FDepthComponent32)
        self.buffer = self._buffer(base, "mirage-capture", width, height)
        self.buffer.addRenderTexture(self.colour, p3d.GraphicsOutput.RTMCopyRam, p3d.GraphicsOutput.RTPColor)
        self.buffer.addRenderTexture(self.depth, p3d.GraphicsOutput.RTMCopyRam, p3d.GraphicsOutput.RTPDepth)
        self.buffer.setClearColor(base.win.getClearColor())
        self.camera = base.makeCamera(self.buffer, lens=lens, camName="mirage-capture")
        self.camera.reparentTo(camera)
        self.ids = None
        if ids:
            self.ids = p3d.Texture("mirage-ids")
            self.id_buffer = self._buffer(base, "mirage-ids", width, height)
            self.id_buffer.addRenderTexture(
                self.ids, p3d.GraphicsOutput.RTMCopyRam, p3d.GraphicsOutput.RTPColor
            )
            self.id_buffer.setClearColor(p3d.LColor(0, 0, 0, 1))
            self.id_camera = base.makeCamera(self.id_buffer, lens=lens, camName="mirage-ids")
            self.id_camera.reparentTo(camera)
            node = self.id_camera.node()
            node.setTagStateKey(ID_TAG)
            node.setInitialState(self._flat((0, 0, 0)))

    def _flat(self, rgb):
        p3d = self.p3d
        return p3d.RenderState.make(
            p3d.ColorAttrib.makeFlat(p3d.LColor(rgb[0] / 255, rgb[1] / 255, rgb[2] / 255, 1)),
            p3d.LightAttrib.makeAllOff(),
            p3d.TextureAttrib.makeAllOff(),
            p3d.ColorScaleAttrib.makeIdentity(),
            p3d.FogAttrib.makeOff(),
            1000,
        )

    def tag(self, nodepath, object_id: int) -> None:
        nodepath.setTag(ID_TAG, str(object_id))
        if self.ids is not None:
            rgb = (object_id & 0xFF, (object_id >> 8) & 0xFF, (object_id >> 16) & 0xFF)
            self.id_camera.node().setTagState(str(object_id), self._flat(rgb))

    @staticmethod
    def _buffer(base, name: str, width: int, height: int):
        from panda3d import core as p3d

        fbp = p3d.FrameBufferProperties()
        fbp.setRgbColor(True)
        fbp.setRgbaBits(8, 8, 8, 0)
        fbp.setDepthBits(24)
        buffer = base.graphicsEngine.makeOutput(
            base.pipe, name, -2, fbp, p3d.WindowProperties.size(width, height),
            p3d.GraphicsPipe.BFRefuseWindow, base.win.getGsg(), base.win,
        )  # fmt: skip
        if buffer is None:
            raise RuntimeError(f"Panda3D could not make the {width}x{height} offscreen buffer {name}")
        return buffer

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """The last frame drawn: rgb uint8 [H,W,3], planar depth float32 [H,W] (inf where nothing was
        drawn), instance ids int32 [H,W] (or None); None before the first frame."""
        w, h = self.size
        colour, depth = self.colour.getRamImageAs("RGB"), self.depth.getRamImage()
        if len(colour) != w * h * 3 or len(depth) != w * h * 4:
            return None
        rgb = np.frombuffer(colour, np.uint8).reshape(h, w, 3)[::-1].copy()
        d = np.frombuffer(depth, np.float32).reshape(h, w)[::-1].astype(np.float64)
        near, far = self.lens.getNear(), self.lens.getFar()
        z = near * far / (far - d * (far - near))
        z[d >= 1.0] = np.inf
        ids = None
        if self.ids is not None:
            raw = self.ids.getRamImageAs("RGB")
            if len(raw) == w * h * 3:
                c = np.frombuffer(raw, np.uint8).reshape(h, w, 3)[::-1].astype(np.int32)
                ids = c[..., 0] | (c[..., 1] << 8) | (c[..., 2] << 16)
        return rgb, z.astype(np.float32), ids


class MiragePlugin:
    """Adds Mirage to ``base``'s frame loop (see the module's docstring). ``camera``: the NodePath
    whose transform is the camera (default ``base.camera``), ``lens`` its lens (``base.camLens``)."""

    def __init__(
        self,
        base,
        config: PluginConfig | None = None,
        camera=None,
        lens=None,
        keep_log: int = 10_000,
        on_show=None,
    ):
        from panda3d import core as p3d

        self.config = config = config or PluginConfig()
        if config.mode not in MODES:
            raise ValueError(f"mode {config.mode!r}: use one of {', '.join(MODES)}")
        self.base, self.p3d = base, p3d
        self.camera = camera if camera is not None else base.camera
        self.lens = lens if lens is not None else base.camLens
        width, height = config.size or (base.win.getXSize(), base.win.getYSize())
        self.intrinsics = intrinsics_from_lens(self.lens, width, height)
        self.capture = None
        if config.mode in ("composite", "observe"):
            self.capture = _Capture(base, self.camera, self.lens, width, height, ids=config.mode == "observe")
        self.texture = self.card = None
        if config.mode in ("generate", "composite"):
            self.texture = p3d.Texture("mirage-frame")
            self.texture.setup2dTexture(width, height, p3d.Texture.TUnsignedByte, p3d.Texture.FRgb)
            self.texture.setMagfilter(p3d.SamplerState.FTNearest)
            self.texture.setMinfilter(p3d.SamplerState.FTNearest)
            maker = p3d.CardMaker("mirage-card")
            maker.setFrameFullscreenQuad()
            self.card = base.render2d.attachNewNode(maker.generate())
            self.card.setTexture(self.texture)
            self.card.setBin("background", 0)
            self.card.setDepthWrite(False)
            self.card.hide()  # until the first frame
        self.status_text = None
        if config.show_status:
            from direct.gui.OnscreenText import OnscreenText

            self.status_text = OnscreenText(
                text="Mirage: connecting",
                pos=(-1.3, 0.9),
                scale=0.05,
                align=p3d.TextNode.ALeft,
                mayChange=True,
            )
        self.engine_frame = 0
        self.shown: deque = deque(maxlen=keep_log)  # (engine frame shown at, sequence, requested at)
        self.last_shown_rgb: np.ndarray | None = None
        self.on_show = on_show  # called with (sequence, rgb shown) on the main thread, for each frame shown
        self.update_ms: deque = deque(maxlen=keep_log)
        self._last_pose: Pose | None = None
        self.link = Link(config, self.intrinsics, keep_log)
        self.link.start()
        self.task = base.taskMgr.add(self._update, "mirage-plugin", sort=49)  # igLoop draws at 50

    def tag_object(self, nodepath, object_id: int) -> None:
        """Mark ``nodepath`` (and what is under it) as object ``object_id`` (1 .. 2**24 - 1) in the
        instance ids that observe mode sends."""
        if not 0 < int(object_id) < 2**24:
            raise ValueError(f"object_id {object_id}: use 1 .. {2**24 - 1}")
        if self.capture is not None:
            self.capture.tag(nodepath, int(object_id))
        else:
            nodepath.setTag(ID_TAG, str(int(object_id)))

    def _update(self, task):
        t0 = time.perf_counter()
        self.engine_frame += 1
        pose, _ = node_pose(self.camera, self.base.render)
        if self.config.mode == "observe":
            captured = self.capture.read()
            if captured is not None and self._last_pose is not None:
                rgb, depth, ids = captured
                obs = Observation(self._last_pose, rgb, depth, instance_ids=ids, return_frame=True)
                self.link.requests.put(Request(self.engine_frame - 1, self._last_pose, obs))
        else:
            self.link.requests.put(Request(self.engine_frame, pose))
        self._last_pose = pose
        reply = self.link.replies.poll()
        if reply is not None:
            self._show(reply)
        if self.status_text is not None and self.engine_frame % 10 == 1:
            self.status_text.setText(self.status_line())
        self.update_ms.append((time.perf_counter() - t0) * 1e3)
        return task.cont

    def _show(self, reply: Reply) -> None:
        frame = reply.frame
        rgb = frame.rgb
        if self.config.mode == "composite":
            rgb = self.composite(frame)
        if self.texture is not None:
            self.texture.setRamImageAs(np.ascontiguousarray(rgb[::-1]).tobytes(), "RGB")
            self.card.show()
        self.shown.append((self.engine_frame, frame.sequence, reply.request.engine_frame))
        self.last_shown_rgb = rgb
        self.last_round_trip_ms = reply.round_trip_ms
        if self.on_show is not None:
            self.on_show(frame.sequence, rgb)

    def composite(self, frame: Frame) -> np.ndarray:
        """The engine's own render where it drew something nearer than Mirage's surface (or Mirage has
        none), Mirage's frame elsewhere."""
        captured = self.capture.read()
        if captured is None or frame.depth is None:
            return frame.rgb
        rgb, depth, _ = captured
        mirage_depth = np.where(frame.depth > 0, frame.depth, np.inf)
        engine = np.isfinite(depth) & (depth <= mirage_depth * 1.02)
        return np.where(engine[..., None], rgb, frame.rgb)

    def status_line(self) -> str:
        s = self.link.status
        text = f"Mirage {s.state}"
        if s.state == "connected":
            text += f": {s.frames} frames"
            if hasattr(self, "last_round_trip_ms"):
                text += f", {self.last_round_trip_ms:.0f} ms round trip"
        elif s.detail:
            text += f": {s.detail}"
        return text

    def close(self) -> None:
        self.base.taskMgr.remove(self.task)
        self.link.stop()
        if self.card is not None:
            self.card.removeNode()
        if self.status_text is not None:
            self.status_text.destroy()
