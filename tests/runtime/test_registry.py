"""SessionRegistry: the session limit, idle reaping, look-ups; and the limit over gRPC."""

from __future__ import annotations

import time

import pytest
from conftest import start_server_thread

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import MirageClient, ResourceExhaustedError
from plugin_bridge.codec import DepthEncoding, FrameEncoding
from plugin_bridge.conventions import Convention
from runtime.config import RuntimeConfig
from runtime.registry import NoSessionId, SessionLimitReached, SessionRegistry, UnknownSession
from runtime.types import SessionSpec

K32 = Intrinsics.from_fov(32, 32, 60.0)
MiB = 2**20


def small_config(max_sessions: int = 2) -> RuntimeConfig:
    config = RuntimeConfig()
    config.server.port = 0
    config.sessions.max_sessions = max_sessions
    config.memory.budget_bytes = 8 * MiB
    return config


def spec(config: RuntimeConfig, **changes) -> SessionSpec:
    values = dict(
        convention=Convention.OPENCV, units_per_meter=1.0, intrinsics=K32,
        frame_encoding=FrameEncoding.RAW_RGB8, depth_encoding=DepthEncoding.FLOAT16_METERS,
        jpeg_quality=90, generator=config.generator.name, budget_bytes=8 * MiB, window_frames=0, seed=0,
        release_on_disconnect=False,
    )  # fmt: skip
    return SessionSpec(**{**values, **changes})


@pytest.fixture(scope="module")
def registry() -> SessionRegistry:
    return SessionRegistry(small_config())


def test_open_get_forget(registry):
    session = registry.open(spec(registry.config))
    assert session.id in registry and registry.get(session.id) is session
    registry.forget(session)
    session.close()
    assert session.id not in registry
    with pytest.raises(UnknownSession, match="open a new one with OpenSession"):
        registry.get(session.id)
    with pytest.raises(NoSessionId, match="call OpenSession first"):
        registry.get("")


def test_the_limit_holds_and_idle_sessions_make_room(registry):
    held = [registry.open(spec(registry.config)) for _ in range(2)]
    with pytest.raises(SessionLimitReached, match="already holds 2 sessions"):
        registry.open(spec(registry.config))
    assert len(registry) == 2
    registry.config.sessions.idle_timeout_s = 0.0
    held[0].last_used = time.monotonic() - 1.0
    held[1].streaming = True  # a streaming session is never idle
    try:
        third = registry.open(spec(registry.config))  # the idle one is closed to make room
    finally:
        registry.config.sessions.idle_timeout_s = RuntimeConfig().sessions.idle_timeout_s
    assert held[0].closed and held[0].id not in registry
    assert not held[1].closed and third.id in registry
    for s in (held[1], third):
        s.streaming = False
        registry.forget(s)
        s.close()
    assert len(registry) == 0


def test_a_spec_it_cannot_serve_leaves_no_slot_taken(registry):
    with pytest.raises(ValueError, match="memory needs at least"):
        registry.open(spec(registry.config, budget_bytes=4096))
    with pytest.raises(ValueError, match="no detail control"):
        registry.open(spec(registry.config, generator="pushpull_v1", detail=0.5))
    sessions = [registry.open(spec(registry.config)) for _ in range(2)]  # both slots still free
    for s in sessions:
        registry.forget(s)
        s.close()


def test_generators_load_once_and_are_shared(registry):
    assert registry.generator("pushpull_v1") is registry.generator("pushpull_v1")


def test_the_limit_over_grpc_is_resource_exhausted():
    running, stop = start_server_thread(small_config(max_sessions=1))
    try:
        with MirageClient(running.target) as client:
            first = client.open_session(K32)
            with pytest.raises(ResourceExhaustedError, match="close one first"):
                client.open_session(K32)
            assert client.stats(first.session_id).frames_ingested == 0  # the held session is unharmed
            client.close_session(first.session_id)
            client.close_session(client.open_session(K32).session_id)  # the slot is free again
    finally:
        stop()


def test_budgets_are_admitted_against_what_the_server_was_given():
    """The sum of the sessions' budgets stays within total_budget_bytes: a handshake that would pass
    it is refused with the free figure, holds no slot, and fits again once a session closes."""
    config = small_config(max_sessions=8)
    config.sessions.total_budget_bytes = 20 * MiB
    registry = SessionRegistry(config)
    first = registry.open(spec(config, budget_bytes=12 * MiB))
    with pytest.raises(
        SessionLimitReached, match="admits 20971520 bytes of session budgets and 8388608 are free"
    ):
        registry.open(spec(config, budget_bytes=9 * MiB))
    second = registry.open(spec(config, budget_bytes=8 * MiB))  # exactly what is left
    assert len(registry) == 2
    for s in (first, second):
        registry.forget(s)
        s.close()
    assert registry.open(spec(config, budget_bytes=20 * MiB)).id in registry


def test_one_principal_cannot_take_every_slot():
    config = small_config(max_sessions=8)
    config.sessions.max_sessions_per_principal = 2
    registry = SessionRegistry(config)
    mine = [registry.open(spec(config), owner="alice") for _ in range(2)]
    with pytest.raises(SessionLimitReached, match="your principal already holds 2 sessions") as err:
        registry.open(spec(config), owner="alice")
    assert "alice" not in str(err.value)
    theirs = registry.open(spec(config), owner="bob")  # others still get in
    anonymous = [registry.open(spec(config)) for _ in range(3)]  # no tokens: max_sessions alone
    assert len(registry) == 6
    for s in (*mine, theirs, *anonymous):
        registry.forget(s)
        s.close()


def test_an_oversized_budget_over_grpc_is_resource_exhausted_and_harms_no_one():
    config = small_config(max_sessions=4)
    config.sessions.total_budget_bytes = 24 * MiB
    running, stop = start_server_thread(config)
    try:
        with MirageClient(running.target) as client:
            first = client.open_session(K32, budget_bytes=16 * MiB)
            with pytest.raises(ResourceExhaustedError, match="does not fit"):
                client.open_session(K32, budget_bytes=16 * MiB)
            assert client.stats(first.session_id).budget_bytes == 16 * MiB
            client.close_session(client.open_session(K32, budget_bytes=8 * MiB).session_id)
            client.close_session(first.session_id)
    finally:
        stop()
