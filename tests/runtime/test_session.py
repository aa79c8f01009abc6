"""The session's frame loop: the generator runs only when memory leaves a pixel uncovered."""

from __future__ import annotations

import numpy as np

from plugin_bridge.camera import Intrinsics
from plugin_bridge.conventions import Convention, look_at
from runtime.generator.host import GeneratorConfig, GeneratorHost
from runtime.memory import MemoryConfig
from runtime.session import Session
from runtime.types import DepthEncoding, FrameEncoding, ObservationInput, PoseInput, SessionSpec


def _session() -> Session:
    host = GeneratorHost.load(GeneratorConfig(name="pushpull_v1"))
    k = Intrinsics.from_fov(32, 24, 60.0)
    spec = SessionSpec(Convention.OPENCV, 1.0, k, FrameEncoding.RAW_RGB8, DepthEncoding.FLOAT16_METERS, 0,
                       "pushpull_v1", 8 * 2**20, 0, 3, False)  # fmt: skip
    return Session(spec, host, MemoryConfig(budget_bytes=8 * 2**20))


def test_a_fully_covered_frame_skips_the_generator_and_is_the_memory_render(monkeypatch):
    session = _session()
    calls = []
    generate = session.generator.generate
    monkeypatch.setattr(session.generator, "generate", lambda *a, **kw: calls.append(1) or generate(*a, **kw))
    pose = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 5.0), up=(0.0, -1.0, 0.0))
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
    depth = np.full((24, 32), 4.0, dtype=np.float32)
    session.step_observation(
        ObservationInput(1, 0, pose, rgb, depth, None, return_frame=False, depth_masked=0)
    )
    view = session.render_view(pose, None)
    assert view.coverage.min() >= 0.5  # what memory shows covers every pixel from here
    frame = session.step_pose(PoseInput(2, 0, pose))
    assert calls == [] and frame.coverage == 1.0
    assert np.array_equal(frame.rgb, view.rgb)
    # a turn that leaves part of the frame uncovered runs the generator again
    session.step_pose(PoseInput(3, 0, look_at((0.0, 0.0, 0.0), (5.0, 0.0, 0.5), up=(0.0, -1.0, 0.0))))
    assert calls == [1]
