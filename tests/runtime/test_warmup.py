"""Warm before SERVING (`runtime.warmup`): the throwaway sessions run at each warm size on the real
server's start, and leave nothing behind: no session, no admitted budget, the default generator
loaded."""

from __future__ import annotations

import logging

from conftest import make_config, start_server_thread

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import MirageClient
from plugin_bridge.types import IDENTITY
from runtime.warmup import warm_up


def test_the_server_warms_up_before_serving_and_keeps_nothing(caplog):
    config = make_config(warm_sizes=(32, 48))
    with caplog.at_level(logging.INFO, logger="mirage.server"):
        running, stop = start_server_thread(config)
    try:
        assert any(
            "warmed up: 32x32 in" in r.getMessage() and "48x48 in" in r.getMessage() for r in caplog.records
        )
        assert len(running.registry) == 0 and running.registry.admitted_bytes() == 0
        with MirageClient(running.target) as client:  # and then serves as ever
            sid = client.open_session(Intrinsics.from_fov(32, 32, 60.0)).session_id
            assert client.stream(sid).step(IDENTITY).rgb.shape == (32, 32, 3)
            client.close_session(sid)
    finally:
        stop()


def test_warm_up_runs_a_session_at_each_size(mirage_server):
    before = len(mirage_server.registry)  # a shared server: other tests' sessions may be open
    taken = warm_up(mirage_server.registry, (16, 24))
    assert sorted(taken) == [16, 24] and all(ms > 0 for ms in taken.values())
    assert len(mirage_server.registry) == before  # the throwaway sessions are never registered
