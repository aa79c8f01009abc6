"""Transport and identity: TLS and mutual TLS with certificates made here, bearer tokens, ownership.

Real servers on port 0 and the real client; the certificates come from a CA this module makes with
`cryptography` (a server certificate for 127.0.0.1 and localhost, a client certificate, and a
second, untrusted CA with a client certificate of its own).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
import time

import grpc
import pytest
from conftest import make_config, start_server_thread, synthetic_rgbd
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from plugin_bridge.camera import Intrinsics
from plugin_bridge.client import (
    MirageClient,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    tls_credentials,
)
from plugin_bridge.types import Control, Observation, Pose
from runtime.auth import RateLimiter, TokenFileError, TokenTable

K32 = Intrinsics.from_fov(32, 32, 60.0)
IDENTITY = Pose((0, 0, 0), (1, 0, 0, 0))
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject, key, issuer, issuer_key, *, ca: bool, sans=None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path, cert, key=None):
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return str(path.with_suffix(".crt")), str(path.with_suffix(".key")) if key is not None else None


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Paths: ca, server (cert, key), client (cert, key), rogue_ca, rogue_client (cert, key)."""
    d = tmp_path_factory.mktemp("pki")
    out = {}
    for prefix in ("", "rogue_"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate(f"{prefix}test CA", ca_key, f"{prefix}test CA", ca_key, ca=True)
        out[f"{prefix}ca"] = _write(d / f"{prefix}ca", ca)[0]
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _certificate(f"{prefix}client", client_key, f"{prefix}test CA", ca_key, ca=False)
        out[f"{prefix}client"] = _write(d / f"{prefix}client", client, client_key)
        if not prefix:
            server_key = ec.generate_private_key(ec.SECP256R1())
            sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            server = _certificate("mirage test server", server_key, "test CA", ca_key, ca=False, sans=sans)
            out["server"] = _write(d / "server", server, server_key)
    return out


def _serve(**server):
    running, stop = start_server_thread(make_config(**server))
    return running, stop


def _works(target: str, **client) -> bool:
    with MirageClient(target, **client) as c:
        info = c.open_session(K32)
        stream = c.stream(info.session_id)
        frame = stream.step(IDENTITY)
        stream.close()
        c.close_session(info.session_id)
        return frame.rgb.shape == (32, 32, 3)


def test_tls_serves_trusting_clients_and_refuses_plaintext_and_other_cas(pki):
    cert, key = pki["server"]
    running, stop = _serve(tls_cert=cert, tls_key=key)
    try:
        assert _works(running.target, credentials=tls_credentials(pki["ca"]))
        with pytest.raises(UnavailableError):  # plaintext to a TLS port: the handshake fails
            _works(running.target)
        with pytest.raises(UnavailableError):  # a CA that did not sign the server's certificate
            _works(running.target, credentials=tls_credentials(pki["rogue_ca"]))
    finally:
        stop()


def test_mutual_tls_needs_a_client_certificate_from_the_named_ca(pki):
    cert, key = pki["server"]
    running, stop = _serve(tls_cert=cert, tls_key=key, tls_client_ca=pki["ca"])
    try:
        assert _works(running.target, credentials=tls_credentials(pki["ca"], *pki["client"]))
        with pytest.raises(UnavailableError):  # no client certificate
            _works(running.target, credentials=tls_credentials(pki["ca"]))
        with pytest.raises(UnavailableError):  # a certificate from another CA
            _works(running.target, credentials=tls_credentials(pki["ca"], *pki["rogue_client"]))
    finally:
        stop()


@pytest.mark.parametrize(
    "server, needle",
    [
        ({"host": "0.0.0.0"}, "plaintext on 0.0.0.0"),
        ({"tls_cert": "x.crt"}, "both --tls-cert and --tls-key"),
        ({"tls_client_ca": "ca.crt"}, "mutual TLS is TLS first"),
        ({"tls_cert": "/nonexistent.crt", "tls_key": "/nonexistent.key"}, "cannot read the TLS"),
    ],
)
def test_unsafe_or_incomplete_transport_settings_refuse_to_start(server, needle):
    with pytest.raises(ValueError, match=needle):
        _serve(**server)


def test_plaintext_off_loopback_only_when_said_out_loud():
    running, stop = _serve(host="0.0.0.0", insecure=True)
    try:
        assert _works(f"127.0.0.1:{running.port}")
    finally:
        stop()


def test_serve_command_refuses_plaintext_on_all_interfaces():
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "plaintext on 0.0.0.0" in proc.stderr and "--insecure" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def token_server(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# principal token\nalice {ALICE}\n\nbob {BOB}\n")
    os.chmod(path, 0o600)
    running, stop = _serve(token_file=str(path))
    yield running
    stop()


def test_calls_without_a_valid_token_are_unauthenticated(token_server):
    target = token_server.target
    with MirageClient(target) as c, pytest.raises(UnauthenticatedError, match="needs a token"):
        c.open_session(K32)
    with MirageClient(target, token="not-a-token-of-this-server") as c:
        with pytest.raises(UnauthenticatedError, match="not valid"):
            c.open_session(K32)
        with pytest.raises(UnauthenticatedError):
            c.stats("any-session")
    with MirageClient(target, metadata=(("authorization", f"Basic {ALICE}"),)) as c:
        with pytest.raises(UnauthenticatedError):  # the scheme must be Bearer
            c.open_session(K32)
    with grpc.insecure_channel(target) as channel:  # health probes need no token
        resp = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    assert len(token_server.registry) == 0  # nothing was opened


def test_a_session_belongs_to_the_principal_that_opened_it(token_server):
    target = token_server.target
    rgb, depth = synthetic_rgbd(32, 32)
    with MirageClient(target, token=ALICE) as alice, MirageClient(target, token=BOB) as bob:
        info = alice.open_session(K32)
        stream = alice.stream(info.session_id)
        stream.send_observation(Observation(IDENTITY, rgb, depth, return_frame=True, sequence=1))
        stream.next_frame()
        stream.close()
        before = alice.stats(info.session_id)
        attempts = {
            "render": lambda: bob.render(info.session_id, IDENTITY),
            "stats": lambda: bob.stats(info.session_id),
            "what-if": lambda: bob.contextual_inference(info.session_id, IDENTITY),
            "close": lambda: bob.close_session(info.session_id),
            "reset": lambda: _reset(bob, info.session_id),
            "stream": lambda: bob.stream(info.session_id).step(IDENTITY),
        }
        for name, attempt in attempts.items():
            with pytest.raises(PermissionDeniedError) as err:
                attempt()
            assert "another principal" in err.value.details, name
            assert "alice" not in err.value.details, name  # it reveals nothing of the owner
        assert alice.stats(info.session_id) == before  # alice's session is as she left it
        stream = alice.stream(info.session_id)
        assert stream.step(IDENTITY).rgb.shape == (32, 32, 3)
        stream.close()
        own = bob.open_session(K32)  # bob has sessions of his own
        bob.close_session(own.session_id)
        alice.close_session(info.session_id)


def _reset(client, session_id):
    stream = client.stream(session_id)
    stream.send_control(Control.RESET_MEMORY)
    return stream.recv()


@pytest.mark.parametrize(
    "text, mode, needle",
    [
        (f"alice {ALICE}\n", 0o644, "can be read by others"),
        ("alice short\n", 0o600, "at least 16"),
        (f"alice {ALICE} extra\n", 0o600, "two fields"),
        (f"alice {ALICE}\nbob {ALICE}\n", 0o600, "listed twice"),
        ("# nothing\n", 0o600, "no token"),
    ],
)
def test_bad_token_files_are_refused_with_what_to_fix(tmp_path, text, mode, needle):
    path = tmp_path / "tokens"
    path.write_text(text)
    os.chmod(path, mode)
    with pytest.raises(TokenFileError, match=needle):
        TokenTable.from_file(path)
    with pytest.raises(ValueError, match=needle):  # and the server does not start on it
        _serve(token_file=str(path))


def test_token_comparison_finds_each_principal_and_nothing_else():
    table = TokenTable([("alice", ALICE), ("bob", BOB)])
    assert table.principal((("authorization", f"Bearer {ALICE}"),)) == "alice"
    assert table.principal((("authorization", f"Bearer {BOB}"),)) == "bob"
    assert table.principal((("authorization", f"Bearer {ALICE[:-1]}"),)) is None
    assert table.principal((("authorization", ALICE),)) is None
    assert table.principal(()) is None


def test_rate_limiter_refills_at_its_rate():
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.wait_s("a", now=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_s("a", now=10.0) == pytest.approx(0.5)  # empty: one call every 0.5 s
    assert limiter.wait_s("b", now=10.0) == 0.0  # another principal has its own bucket
    assert limiter.wait_s("a", now=10.5) == 0.0
    assert limiter.wait_s("a", now=10.5) > 0.0


def test_a_principal_past_its_rate_is_resource_exhausted_and_others_are_not(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"alice {ALICE}\nbob {BOB}\n")
    os.chmod(path, 0o600)
    running, stop = _serve(token_file=str(path), rate_limit_per_s=1.0, rate_limit_burst=4)
    try:
        with (
            MirageClient(running.target, token=ALICE) as alice,
            MirageClient(running.target, token=BOB) as bob,
        ):
            info = alice.open_session(K32)
            for _ in range(3):
                alice.stats(info.session_id)
            with pytest.raises(ResourceExhaustedError, match="rate limit: at most 1 calls a second"):
                alice.stats(info.session_id)
            bob.close_session(bob.open_session(K32).session_id)  # bob's bucket is his own
            with grpc.insecure_channel(running.target) as channel:  # probes are never limited
                for _ in range(10):
                    health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=10
                    )
            time.sleep(1.1)  # a call's worth refilled
            assert alice.stats(info.session_id).frames_ingested == 0  # and the session was never touched
    finally:
        stop()


def test_reflection_needs_a_token_when_tokens_are_on(token_server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(token_server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ServerReflectionInfo(iter([request]), timeout=10))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(
            stub.ServerReflectionInfo(
                iter([request]), metadata=(("authorization", f"Bearer {ALICE}"),), timeout=10
            )
        )
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"mirage.v1.Mirage", "grpc.health.v1.Health"} <= names


def test_sealed_memory_travels_over_mutual_tls_with_tokens(pki, tmp_path):
    """Export and import over mutual TLS with bearer tokens: the memory round-trips, and the export
    opened by another principal is refused."""
    from runtime.sealing import write_key_file

    keys = tmp_path / "memory.keys"
    write_key_file(keys)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {ALICE}\nbob {BOB}\n")
    os.chmod(tokens, 0o600)
    cert, key = pki["server"]
    running, stop = _serve(
        tls_cert=cert, tls_key=key, tls_client_ca=pki["ca"], token_file=str(tokens), memory_key_file=str(keys)
    )
    credentials = tls_credentials(pki["ca"], *pki["client"])
    rgb, depth = synthetic_rgbd(32, 32)
    try:
        with MirageClient(running.target, credentials=credentials, token=ALICE) as alice:
            source = alice.open_session(K32).session_id
            stream = alice.stream(source)
            stream.send_observation(Observation(IDENTITY, rgb, depth, return_frame=True, sequence=1))
            stream.next_frame()
            stream.close()
            export = alice.export_memory(source)
            target = alice.open_session(K32).session_id
            alice.import_memory(target, export, keep_provenance=True)
            a, b = alice.render(source, IDENTITY), alice.render(target, IDENTITY)
            assert a.coverage_fraction > 0.9 and (a.rgb == b.rgb).all()
        with MirageClient(running.target, credentials=credentials, token=BOB) as bob:
            own = bob.open_session(K32).session_id
            with pytest.raises(PermissionDeniedError, match="taken by another principal"):
                bob.import_memory(own, export)
    finally:
        stop()
