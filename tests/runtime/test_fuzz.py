"""Every RPC fuzzed against the real server on port 0: messages built at random from the .proto's own
descriptors (hypothesis), and valid messages with their bytes mutated.

What must hold, call after call: the server answers each within its deadline (no hang), never with
UNKNOWN or INTERNAL (Mirage's own code never lets an error escape unmapped), keeps serving (health
SERVING, a fresh session works afterwards), and a call it refuses leaves the target session's memory
byte for byte as it was (its snapshot digest, frame count and checkpoints).

The default run sends a bounded, derandomized number of examples an RPC (reproducible in CI); the
``slow`` target (``pytest -m slow tests/runtime/test_fuzz.py``) sends 2,000 an RPC with fresh seeds.
"""

from __future__ import annotations

import hashlib
import os

import grpc
import pytest
from conftest import make_config, start_server_thread, synthetic_rgbd
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor as FD
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mirage.v1 import mirage_pb2 as pb
from mirage.v1 import mirage_pb2_grpc as pb_grpc

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import MirageClient
from plugin_bridge.types import Observation, Pose
from runtime.memory.snapshot import snapshot_bytes
from runtime.sealing import write_key_file

SIZE = 32
K = Intrinsics.from_fov(SIZE, SIZE, 60.0)
DEFAULT_EXAMPLES = int(os.environ.get("MIRAGE_FUZZ_EXAMPLES", "30"))
SLOW_EXAMPLES = 2000
ADMIN_TOKEN = "fuzz-admin-token-0123456789"
DEADLINE_S = 30.0
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
METHODS = [
    (service.name, method)
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


class Target:
    """The fuzzed server and the session most fuzzed calls aim at (its memory reseeded when emptied)."""

    def __init__(self, tmp):
        keys = tmp / "memory.keys"
        write_key_file(keys)
        admins = tmp / "admin.tokens"
        admins.write_text(f"ops {ADMIN_TOKEN}\n")
        admins.chmod(0o600)
        config = make_config(memory_key_file=str(keys), admin_token_file=str(admins))
        self.running, self.stop = start_server_thread(config)
        self.channel = grpc.insecure_channel(self.running.target)
        self.stubs = {
            "Mirage": pb_grpc.MirageStub(self.channel),
            "MirageAdmin": pb_grpc.MirageAdminStub(self.channel),
        }
        self.client = MirageClient(self.running.target)
        self.session_id = ""
        self.reseed()
        export = self.stubs["Mirage"].ExportMemory(
            pb.ExportMemoryRequest(session_id=self.session_id, chunk_bytes=4096), timeout=DEADLINE_S
        )
        self.sealed = list(export)  # a real export: ImportMemory is fuzzed from it too

    def reseed(self) -> None:
        """The target session open (a fuzzed CloseSession may have closed it) and holding points."""
        if self.session_id not in self.running.registry:
            self.session_id = self.client.open_session(K).session_id
        if self.session().memory.stats().points > 0:
            return
        stream = self.client.stream(self.session_id)
        rgb, depth = synthetic_rgbd(SIZE, SIZE, seed=1)
        stream.send_observation(Observation(Pose((0, 0, 0), (1, 0, 0, 0)), rgb, depth, return_frame=True))
        stream.next_frame()
        stream.close()

    def session(self):
        return self.running.registry.get(self.session_id)

    def digest(self) -> tuple:
        s = self.session()
        with s.lock:
            memory = hashlib.sha256(snapshot_bytes(s.memory, created_unix=0.0)).hexdigest()
            return memory, s.frame_index, tuple(s.checkpoints)

    def close(self) -> None:
        self.client.close()
        self.channel.close()
        self.stop()


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    t = Target(tmp_path_factory.mktemp("fuzz"))
    yield t
    t.close()


# -- messages from the descriptors ------------------------------------------------------------------
_INTS = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}


def _mostly(usual: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """``usual`` four times in five, else ``rare``."""
    return st.integers(0, 4).flatmap(lambda i: rare if i == 4 else usual)


def _unit_quaternion(values: list[float]) -> pb.Quaternion:
    norm = sum(v * v for v in values) ** 0.5
    w, x, y, z = (v / norm for v in values) if norm > 1e-3 else (1.0, 0.0, 0.0, 0.0)
    return pb.Quaternion(w=w, x=x, y=y, z=z)


VALID = {
    "Quaternion": st.lists(st.floats(-1, 1), min_size=4, max_size=4).map(_unit_quaternion),
    "Intrinsics": st.just(pb.Intrinsics(width=SIZE, height=SIZE, fx=K.fx, fy=K.fy, cx=K.cx, cy=K.cy)),
    "Version": st.just(pb.Version(major=1)),
}
"""Messages a validator checks hard, built valid most of the time so that calls get past it."""


def _scalar(field, session_id: str) -> st.SearchStrategy:
    """Values of ``field``'s type, weighted towards the ones that reach deep: the target session's
    id, the session's frame size, byte lengths of whole images."""
    name = field.name
    if field.type == FD.TYPE_STRING:
        if name.endswith("session_id"):
            other = st.sampled_from(["", "0" * 32, "../../etc/passwd"]) | st.text(max_size=40)
            return _mostly(st.just(session_id), other)
        return st.text(max_size=40)
    if field.type == FD.TYPE_BYTES:
        sizes = [0, SIZE * SIZE, SIZE * SIZE * 2, SIZE * SIZE * 3, SIZE * SIZE * 4, 7]
        return st.sampled_from(sizes).flatmap(lambda n: st.binary(min_size=n, max_size=n)) | st.binary(
            max_size=256
        )
    if field.type == FD.TYPE_BOOL:
        return st.booleans()
    if field.type == FD.TYPE_ENUM:
        values = [v.number for v in field.enum_type.values]
        return st.sampled_from(values) | st.integers(-3, max(values) + 3)
    if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        width = 32 if field.type == FD.TYPE_FLOAT else 64
        return _mostly(st.floats(-4.0, 4.0, width=width), st.floats(width=width))
    lo, hi = _INTS[field.type]
    if name in ("width", "height"):
        return st.sampled_from([0, 1, SIZE, SIZE + 1, 4096, hi]) | st.integers(lo, hi)
    return st.integers(max(lo, -3), min(hi, 3 * SIZE)) | st.integers(lo, hi)


@st.composite
def messages(draw, descriptor, session_id: str, depth: int = 0):
    """A message of ``descriptor`` with a random subset of its fields set (a session id always, one
    member of each oneof, or none), nested messages to a depth of 4."""
    if descriptor.name in VALID and draw(st.integers(0, 4)) < 4:
        return draw(VALID[descriptor.name])
    msg = message_factory.GetMessageClass(descriptor)()
    chosen = {o.name: draw(_mostly(st.sampled_from(list(o.fields)), st.none())) for o in descriptor.oneofs}
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and chosen[oneof.name] is not field:
            continue
        if oneof is None and field.name != "session_id" and not draw(st.booleans()):
            continue
        repeated = field.is_repeated
        count = draw(st.integers(0, 3)) if repeated else 1
        for _ in range(count):
            if field.type == FD.TYPE_MESSAGE:
                if depth >= 4:
                    break
                value = draw(messages(field.message_type, session_id, depth + 1))
                (getattr(msg, field.name).add() if repeated else getattr(msg, field.name)).CopyFrom(value)
            elif repeated:
                getattr(msg, field.name).append(draw(_scalar(field, session_id)))
            else:
                setattr(msg, field.name, draw(_scalar(field, session_id)))
    return msg


def _mutate(data: bytes, draw) -> bytes:
    """``data`` with bytes flipped, cut, duplicated or inserted (1-4 edits)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "duplicate"]))
        at = draw(st.integers(0, len(out))) if out else 0
        if kind == "flip" and out:
            at = min(at, len(out) - 1)
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del out[at : at + draw(st.integers(1, 16))]
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            out[at:at] = out[at : at + draw(st.integers(1, 32))]
    return bytes(out)


# -- calling ------------------------------------------------------------------------------------------
def _code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _invoke(target: Target, service: str, method, requests: list) -> grpc.StatusCode:
    """Call ``method`` with ``requests`` (one, or the stream of them) through the generated stub."""
    rpc = getattr(target.stubs[service], method.name)
    call = dict(timeout=DEADLINE_S, metadata=_metadata(service))
    if method.client_streaming and method.server_streaming:
        return _code(lambda: list(rpc(iter(requests), **call)))
    if method.client_streaming:
        return _code(lambda: rpc(iter(requests), **call))
    if method.server_streaming:
        return _code(lambda: list(rpc(requests[0], **call)))
    return _code(lambda: rpc(requests[0], **call))


def _metadata(service: str) -> tuple:
    return (("authorization", f"Bearer {ADMIN_TOKEN}"),) if service == "MirageAdmin" else ()


def _invoke_raw(target: Target, service: str, method, raw: list[bytes]) -> grpc.StatusCode:
    path = f"/mirage.v1.{service}/{method.name}"
    ch = target.channel
    if method.client_streaming:
        kind = ch.stream_stream if method.server_streaming else ch.stream_unary
    else:
        kind = ch.unary_stream if method.server_streaming else ch.unary_unary
    rpc = kind(path, request_serializer=bytes, response_deserializer=bytes)
    request = iter(raw) if method.client_streaming else raw[0]
    call = dict(timeout=DEADLINE_S, metadata=_metadata(service))
    if method.server_streaming:
        return _code(lambda: list(rpc(request, **call)))
    return _code(lambda: rpc(request, **call))


def _check(target: Target, method, code: grpc.StatusCode, before: tuple, sessions_before: set) -> None:
    assert code not in NEVER, f"{method.name} ended {code.name}"
    opened = {s.id for s in target.running.registry.sessions()} - sessions_before
    for session_id in opened:  # a fuzzed OpenSession that succeeded: not kept
        target.client.close_session(session_id)
    if target.session_id not in target.running.registry:  # a fuzzed CloseSession that succeeded
        assert code == grpc.StatusCode.OK, f"the session vanished in a refused {method.name} ({code.name})"
        target.reseed()
        return
    if code != grpc.StatusCode.OK and method.name != "Stream":  # a stream's frames before its refusal count
        assert target.digest() == before, (
            f"a refused {method.name} ({code.name}) changed the session's memory"
        )
    target.reseed()


def _edited_import(target: Target, data) -> list:
    """The chunks of a real export with one edit: chunks dropped, repeated or swapped, or a field of
    one chunk changed (none at all one time in six: then the import is accepted)."""
    chunks = [pb.SealedChunk.FromString(c.SerializeToString()) for c in target.sealed]
    edit = data.draw(st.sampled_from(["none", "drop", "repeat", "swap", "field", "field"]))
    at = data.draw(st.integers(0, len(chunks) - 1))
    if edit == "drop":
        del chunks[at]
    elif edit == "repeat":
        chunks.insert(at, chunks[at])
    elif edit == "swap" and len(chunks) > 1:
        chunks[at], chunks[-1 - at] = chunks[-1 - at], chunks[at]
    elif edit == "field":
        field = data.draw(st.sampled_from(list(pb.SealedChunk.DESCRIPTOR.fields)))
        if field.type == FD.TYPE_BYTES:
            setattr(chunks[at], field.name, _mutate(getattr(chunks[at], field.name), data.draw))
        else:
            setattr(chunks[at], field.name, data.draw(_scalar(field, target.session_id)))
    keep = data.draw(st.booleans())
    return [
        pb.ImportMemoryRequest(session_id=target.session_id if i == 0 else "", keep_provenance=keep, chunk=c)
        for i, c in enumerate(chunks)
    ]


def _fuzz_one(target: Target, service: str, method, data, mutated: bool) -> None:
    """One fuzzed call: drawn messages, sent as they are or (``mutated``) with their bytes edited."""
    sid = target.session_id
    if method.name == "ImportMemory" and data.draw(st.booleans()):
        requests = _edited_import(target, data)
    elif method.client_streaming:
        first = data.draw(messages(method.input_type, sid))
        if method.name == "Stream" and data.draw(st.booleans()):
            first = pb.ClientMessage(
                session_id=sid, pose=pb.PoseRequest(pose=pb.Pose(rotation=pb.Quaternion(w=1)))
            )
        requests = [first] + data.draw(st.lists(messages(method.input_type, sid), max_size=4))
    else:
        requests = [data.draw(messages(method.input_type, sid))]
    before, sessions = target.digest(), {s.id for s in target.running.registry.sessions()}
    if mutated:
        raw = [_mutate(r.SerializeToString(), data.draw) for r in requests]
        code = _invoke_raw(target, service, method, raw)
    else:
        code = _invoke(target, service, method, requests)
    _check(target, method, code, before, sessions)


def _server_still_serves(target: Target) -> None:
    health = health_pb2_grpc.HealthStub(target.channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service="mirage.v1.Mirage"), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    sid = target.client.open_session(K).session_id
    frame = target.client.stream(sid).step(Pose((0, 0, 0), (1, 0, 0, 0)))
    assert frame.rgb.shape == (SIZE, SIZE, 3)
    target.client.close_session(sid)


_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)
CASES = [(service, method, mutated) for service, method in METHODS for mutated in (False, True)]
IDS = [f"{m.name}-{'mutated' if mutated else 'messages'}" for _, m, mutated in CASES]


@pytest.mark.parametrize("service, method, mutated", CASES, ids=IDS)
def test_fuzzed_calls_get_a_status_in_time_and_spare_the_memory(target, service, method, mutated):
    @settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, **_SETTINGS)
    @given(st.data())
    def run(data):
        _fuzz_one(target, service, method, data, mutated)

    run()
    _server_still_serves(target)


@pytest.mark.slow
@pytest.mark.parametrize("service, method, mutated", CASES, ids=IDS)
def test_fuzzed_calls_at_length(target, service, method, mutated):
    @settings(max_examples=SLOW_EXAMPLES, **_SETTINGS)
    @given(st.data())
    def run(data):
        _fuzz_one(target, service, method, data, mutated)

    run()
    _server_still_serves(target)


def test_the_fuzzer_reaches_past_validation(target):
    """The generated messages are not all refused at the door: some calls on the target session
    succeed (a fuzzer that only ever hits INVALID_ARGUMENT tests the validator alone)."""
    codes = []

    @settings(max_examples=60, derandomize=True, **_SETTINGS)
    @given(st.data())
    def run(data):
        method = pb.DESCRIPTOR.services_by_name["Mirage"].methods_by_name["SpatialMemoryQuery"]
        request = data.draw(messages(method.input_type, target.session_id))
        codes.append(_invoke(target, "Mirage", method, [request]))

    run()
    assert grpc.StatusCode.OK in codes and set(codes) - {grpc.StatusCode.OK}


@pytest.fixture(scope="module")
def token_target(tmp_path_factory):
    tokens = tmp_path_factory.mktemp("fuzz-tokens") / "tokens"
    tokens.write_text("alice alice-token-0123456789abcdef\n")
    tokens.chmod(0o600)
    running, stop = start_server_thread(make_config(token_file=str(tokens)))
    yield running
    stop()


_HEADER = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64)


def test_fuzzed_credentials_are_unauthenticated_and_nothing_else(token_target):
    """Random authorization headers (and none) on every RPC of a server with tokens: each call is
    UNAUTHENTICATED (or, for the admin service of a server without admin tokens, FAILED_PRECONDITION),
    none reaches a handler, no session is opened."""
    channel = grpc.insecure_channel(token_target.target)
    stubs = {"Mirage": pb_grpc.MirageStub(channel), "MirageAdmin": pb_grpc.MirageAdminStub(channel)}

    @settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, **_SETTINGS)
    @given(st.sampled_from(METHODS), st.sampled_from(["Bearer ", "bearer ", "", "Basic "]), _HEADER)
    def run(entry, scheme, value):
        service, method = entry
        request = message_factory.GetMessageClass(method.input_type)()
        rpc = getattr(stubs[service], method.name)
        call = dict(timeout=DEADLINE_S, metadata=(("authorization", scheme + value),))
        if method.client_streaming:
            code = _code(
                lambda: (
                    list(rpc(iter([request]), **call))
                    if method.server_streaming
                    else rpc(iter([request]), **call)
                )
            )
        else:
            code = _code(
                lambda: list(rpc(request, **call)) if method.server_streaming else rpc(request, **call)
            )
        expected = (
            grpc.StatusCode.FAILED_PRECONDITION
            if service == "MirageAdmin"
            else grpc.StatusCode.UNAUTHENTICATED
        )
        assert code == expected, f"{method.name} with authorization {scheme + value!r}: {code.name}"

    try:
        run()
    finally:
        channel.close()
    assert len(token_target.registry) == 0
