"""generator_detail over the wire: a real server on port 0 with a generator that has detail control."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_config, start_server_thread

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import InvalidArgumentError, MirageClient
from plugin_bridge.types import Pose
from runtime.training.export import DETAIL_DEFAULT

K = Intrinsics.from_fov(48, 40, 60.0)
POSE = Pose((0, 0, 1.5), (1, 0, 0, 0))


@pytest.fixture(scope="module")
def detail_server(tiny_detail_models):
    models, _ = tiny_detail_models
    config = make_config()
    config.generator.models_dir = str(models)
    config.generator.name = "learned_v2"
    running, stop = start_server_thread(config)
    yield running
    stop()


@pytest.fixture
def client(detail_server):
    with MirageClient(detail_server.target) as c:
        yield c


def _first_frame(client, **options) -> np.ndarray:
    info = client.open_session(K, **options)
    stream = client.stream(info.session_id)
    stream.send_pose(POSE, sequence=1)
    frame = stream.next_frame()
    stream.close()
    client.close_session(info.session_id)
    assert frame.coverage == 0.0  # empty memory: every pixel is the generator's
    return frame.rgb


def test_handshake_reports_the_detail_in_use(client):
    default = client.open_session(K)
    assert default.generator.name == "learned_v2" and default.generator.detail_control
    assert default.generator.detail == pytest.approx(DETAIL_DEFAULT)
    chosen = client.open_session(K, generator_detail=0.25)
    assert chosen.generator.detail == pytest.approx(0.25)
    plain = client.open_session(K, generator="learned_v1")
    assert not plain.generator.detail_control and plain.generator.detail == 0.0
    for info in (default, chosen, plain):
        client.close_session(info.session_id)


def test_detail_zero_frames_do_not_depend_on_the_seed(client):
    a = _first_frame(client, seed=1, generator_detail=0.0)
    b = _first_frame(client, seed=2, generator_detail=0.0)
    c = _first_frame(client, seed=1)
    d = _first_frame(client, seed=2)
    assert np.array_equal(a, b)  # the mean prediction: the noise is scaled away
    assert not np.array_equal(c, d)  # with detail the seed's noise shows
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("value", [-0.1, 4.5, math.nan, math.inf])
def test_detail_out_of_range_is_invalid_and_the_server_carries_on(client, value):
    with pytest.raises(InvalidArgumentError, match="generator_detail must be within 0..4"):
        client.open_session(K, generator_detail=value)
    info = client.open_session(K, generator_detail=4.0)  # the bound itself is fine
    client.close_session(info.session_id)


def test_detail_on_a_generator_without_control_is_invalid(client):
    with pytest.raises(InvalidArgumentError) as err:
        client.open_session(K, generator="learned_v1", generator_detail=0.5)
    assert "no detail control" in err.value.details and "learned_v2" in err.value.details
    with pytest.raises(InvalidArgumentError, match="no detail control"):
        client.open_session(K, generator="pushpull_v1", generator_detail=0.0)
