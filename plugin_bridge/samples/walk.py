"""A Panda3D app with Mirage in its frame loop: walk with the keyboard in a window, or along a scripted
path headless.

    python -m plugin_bridge.samples.walk                       # a window: W/S walk, A/D turn, Esc quits
    python -m plugin_bridge.samples.walk --headless --frames 300
    python -m plugin_bridge.samples.walk --headless --bench    # engine FPS with and without the plugin

Without ``--target`` it starts a `mirage serve` of its own on a free loopback port (the runtime must
be installed) and stops it at the end. The scene is the app's own (the models Panda3D's wheel ships);
the plugin is the few lines in `WalkApp.__init__`. ``--log F`` writes what the plugin sent and showed
(JSON), for the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time

import numpy as np

HEADLESS_PRC = """
load-display p3headlessgl
window-type offscreen
audio-library-name null
sync-video false
framebuffer-multisample false
textures-power-2 none
model-cache-dir
notify-level-egldisplay error
"""


def path_pose(i: int, frames: int) -> tuple[tuple[float, float, float], float]:
    """The scripted walk: out along a curve and back (position in metres, heading in degrees)."""
    s = (i % frames) / max(frames - 1, 1)
    u = 1.0 - abs(2.0 * s - 1.0)  # 0 -> 1 -> 0: out and back
    return (6.0 * u, -12.0 + 4.0 * u, 1.6), 40.0 * math.sin(math.pi * u)


class WalkApp:
    def __init__(self, args):
        from panda3d.core import loadPrcFileData

        if args.headless:
            loadPrcFileData("mirage-sample", HEADLESS_PRC)
        loadPrcFileData("mirage-sample-size", f"win-size {args.size} {args.size}\nsync-video false\n")
        from direct.showbase.ShowBase import ShowBase

        self.base = base = ShowBase()
        base.disableMouse()
        if args.fps > 0:
            from panda3d.core import ClockObject

            clock = ClockObject.getGlobalClock()
            clock.setMode(ClockObject.MLimited)
            clock.setFrameRate(args.fps)
        base.win.setClearColor((0.62, 0.78, 0.95, 1))
        base.camLens.setNearFar(0.1, 200.0)
        base.camLens.setFov(60.0)
        scene = base.loader.loadModel("models/environment")
        scene.reparentTo(base.render)
        scene.setScale(0.25)
        scene.setPos(-8, 42, 0)
        teapot = base.loader.loadModel("teapot")
        teapot.reparentTo(base.render)
        teapot.setPos(2.0, -2.0, 0.0)
        self.teapot = teapot
        self.args = args
        self.i = 0
        self.keys = set()
        self.plugin = None
        if not args.no_plugin:
            from plugin_bridge.panda3d_plugin import MiragePlugin, PluginConfig

            self.digests: dict[int, str] = {}  # sequence -> sha256 of the frame shown (--log)
            self.plugin = MiragePlugin(
                base,
                on_show=self._digest if args.log else None,
                config=PluginConfig(
                    target=args.target,
                    mode=args.mode,
                    seed=args.seed,
                    network_delay_s=args.network_delay_ms / 1e3,
                ),
            )
            self.plugin.tag_object(teapot, 1)
        if args.headless:
            base.taskMgr.add(self.scripted, "walk", sort=10)
        else:
            for key in ("w", "s", "a", "d"):
                base.accept(key, self.keys.add, [key])
                base.accept(f"{key}-up", self.keys.discard, [key])
            base.accept("escape", sys.exit)
            base.taskMgr.add(self.keyboard, "walk", sort=10)
            self.place(*path_pose(0, 2))

    def _digest(self, sequence: int, rgb: np.ndarray) -> None:
        import hashlib

        self.digests[sequence] = hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()

    def place(self, position, heading) -> None:
        self.base.camera.setPos(*position)
        self.base.camera.setHpr(heading, 0, 0)

    def scripted(self, task):
        self.place(*path_pose(self.i, self.args.frames))
        self.i += 1
        return task.cont

    def keyboard(self, task):
        dt = globalClock.getDt()  # noqa: F821 - ShowBase's builtin
        camera = self.base.camera
        if "a" in self.keys or "d" in self.keys:
            camera.setH(camera.getH() + (60.0 if "a" in self.keys else -60.0) * dt)
        if "w" in self.keys or "s" in self.keys:
            camera.setY(camera, (3.0 if "w" in self.keys else -3.0) * dt)
        return task.cont

    def run_frames(self, frames: int) -> float:
        """Step the engine ``frames`` frames; returns the seconds it took."""
        start = time.perf_counter()
        for _ in range(frames):
            self.base.taskMgr.step()
        return time.perf_counter() - start

    def wait_for_frames(self, count: int, timeout_s: float = 120.0) -> None:
        """Keep the engine running until the plugin has shown ``count`` frames (the first frames of a
        server pay its warm-up)."""
        deadline = time.monotonic() + timeout_s
        while len(self.plugin.shown) < count and time.monotonic() < deadline:
            self.base.taskMgr.step()


def start_server() -> tuple[subprocess.Popen, str]:
    """A `mirage serve` process on a free loopback port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    for line in proc.stdout:
        found = re.search(r"serving mirage\.v1 on (\S+:\d+)", line)
        if found:
            return proc, found.group(1)
    raise RuntimeError("mirage serve exited before serving (is the runtime installed? pip install -e .)")


def _summary(app: WalkApp, seconds: float, frames: int) -> dict:
    out = {"engine_frames": frames, "engine_fps": frames / seconds}
    plugin = app.plugin
    if plugin is not None:
        out.update(
            plugin_update_ms_p50=float(np.median(plugin.update_ms)),
            plugin_update_ms_p99=float(np.percentile(plugin.update_ms, 99)),
            mirage_frames_shown=len(plugin.shown),
            status=plugin.status_line(),
            states=list(plugin.link.status.history),
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="", help="a running server (default: start one)")
    p.add_argument("--mode", default="generate", choices=("generate", "composite", "observe"))
    p.add_argument("--size", type=int, default=128, help="window and frame size (square)")
    p.add_argument("--frames", type=int, default=300, help="engine frames of the scripted path (headless)")
    p.add_argument("--headless", action="store_true", help="offscreen, along the scripted path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=60.0, help="the engine's frame rate cap (0: none)")
    p.add_argument("--network-delay-ms", type=float, default=0.0, help="a pause before each request")
    p.add_argument("--bench", action="store_true", help="engine FPS with and without the plugin")
    p.add_argument("--no-plugin", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log", default="", help="write what the plugin sent and showed to this JSON file")
    args = p.parse_args(argv)
    server = None
    if not args.target and not args.no_plugin:
        server, args.target = start_server()
    try:
        if args.bench:
            return _bench(args)
        app = WalkApp(args)
        if not args.headless:
            app.base.run()
            return 0
        if app.plugin is not None:
            app.wait_for_frames(1)  # the server's first frame (its warm-up) before the path starts
        seconds = app.run_frames(args.frames)
        summary = _summary(app, seconds, args.frames)
        print(json.dumps(summary))
        if args.log:
            _write_log(app, summary, args.log)
        if app.plugin is not None:
            app.plugin.close()
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)


def _write_log(app: WalkApp, summary: dict, path: str) -> None:
    import dataclasses

    plugin = app.plugin
    shot = app.base.win.getScreenshot()
    screen = np.frombuffer(shot.getRamImageAs("RGB"), np.uint8).reshape(shot.getYSize(), shot.getXSize(), 3)[
        ::-1
    ]
    last_rgb = plugin.last_shown_rgb
    log = {
        **summary,
        "intrinsics": dataclasses.asdict(plugin.intrinsics),
        "session_id": plugin.link.status.session_id,
        "sent": [
            [seq, list(pose.position), list(pose.rotation_wxyz)]
            for seq, pose in plugin.link.sent
            if pose is not None
        ],
        "shown": [[at, seq, requested, app.digests[seq]] for at, seq, requested in plugin.shown],
        # the window against the last frame the plugin showed (the status line covers a corner)
        "screen_equal_fraction": float((screen == last_rgb).all(axis=2).mean())
        if last_rgb is not None
        else 0.0,
        "update_ms": list(plugin.update_ms),
    }
    if plugin.capture is not None:  # composite and observe: what the engine itself drew, last frame
        captured = plugin.capture.read()
        if captured is not None:
            rgb, depth, ids = captured
            log["capture_drawn_fraction"] = float(np.isfinite(depth).mean())
            if ids is not None:
                log["capture_id_pixels"] = {
                    str(k): int(v) for k, v in zip(*np.unique(ids, return_counts=True), strict=True)
                }
    with open(path, "w") as f:
        json.dump(log, f)


def _bench(args) -> int:
    """The scripted path with and without the plugin, alternating, each in a process of its own,
    uncapped and at a 60 FPS cap (the server, when started here, shares the machine with the engine)."""
    for fps in (0, 60):
        runs = {"without": [], "with": []}
        for _ in range(2):
            for label, extra in (("without", ["--no-plugin"]), ("with", ["--target", args.target])):
                cmd = [sys.executable, "-m", "plugin_bridge.samples.walk", "--headless", "--size", str(args.size),
                       "--frames", str(args.frames), "--mode", args.mode, "--fps", str(fps), *extra]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                runs[label].append(json.loads(out.strip().splitlines()[-1]))
        cap = "uncapped" if fps == 0 else f"capped at {fps} FPS"
        for label, results in runs.items():
            line = (
                f"engine {label} the plugin, {cap}, {args.size}x{args.size}, {args.frames} frames: "
                f"{[round(r['engine_fps'], 1) for r in results]} FPS"
            )
            if label == "with":
                line += (
                    f"; Mirage frames shown {[r['mirage_frames_shown'] for r in results]}, plugin update p50 / p99 "
                    f"{[(round(r['plugin_update_ms_p50'], 2), round(r['plugin_update_ms_p99'], 2)) for r in results]} ms"
                )
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
