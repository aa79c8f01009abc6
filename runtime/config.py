"""Runtime configuration: typed dataclasses whose defaults make `mirage serve` work with no flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.generator.host import GeneratorConfig
from runtime.memory.config import MemoryConfig

PROTOCOL_VERSION = (1, 1, 0)
"""The mirage.v1 wire protocol this runtime speaks (semver: major changes break clients)."""

MiB = 2**20


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    """Interface to bind; loopback by default, 0.0.0.0 to serve other machines."""
    port: int = 50051
    """TCP port; 0 picks a free one (tests, embedded demo)."""
    tls_cert: str = ""
    """PEM certificate chain of the server: with tls_key, the port speaks TLS only."""
    tls_key: str = ""
    """PEM private key of tls_cert."""
    tls_client_ca: str = ""
    """PEM CA certificates clients must present a certificate from (mutual TLS); needs tls_cert."""
    insecure: bool = False
    """Serve plaintext on an address other than loopback (refused unless said)."""
    rate_limit_per_s: float = 200.0
    """Calls a second one principal may make on average (a Stream is one call; health is free);
    beyond it RESOURCE_EXHAUSTED. 0: no limit."""
    rate_limit_burst: int = 400
    """Calls one principal may make at once before the rate applies."""
    token_file: str = ""
    """File of 'principal token' lines: every call needs 'authorization: Bearer <token>' and a
    session belongs to the principal that opened it. Unset: no authentication."""
    memory_key_file: str = ""
    """File of 'key_id hex' lines (32-byte AES-256 keys; `mirage snapshot keygen F` writes one): the
    first seals memory exports, every one opens imports. Unset: ExportMemory and ImportMemory are
    refused (memory never leaves the server unsealed)."""
    checkpoint_dir: str = ""
    """Directory for durable session checkpoints (sealed with the memory key: needs memory_key_file);
    a restarted server resumes a session from it (OpenSession.resume_session_id). Unset: none."""
    checkpoint_every: int = 100
    """Frames between a session's durable checkpoints (what a crash may lose at most)."""
    checkpoint_keep_s: float = 86_400.0
    """Seconds a durable checkpoint of a session no longer open here (closed idle, or never resumed
    after a restart) is kept for a resume before it is deleted; 0: kept until its session closes."""
    admin_token_file: str = ""
    """File of 'principal token' lines for the admin service (`mirage sessions`); its tokens open
    nothing else, and session tokens do not open it. Unset: the admin service refuses every call."""
    metrics_port: int = 0
    """Serve Prometheus metrics on http://metrics_host:PORT/metrics. 0: no metrics endpoint."""
    metrics_host: str = "127.0.0.1"
    """Interface of the metrics endpoint (plain HTTP; aggregates only, no session ids or principals)."""
    log_format: str = "text"
    """text: one readable line a record; json: one JSON object a line, with each event's fields."""
    log_level: str = "info"
    """debug logs every frame (session id, sequence, timings); info sessions, streams, checkpoints."""
    max_message_bytes: int = 16 * MiB
    """Largest message either side may send (frames at 1080p RGB raw are ~6 MiB)."""
    keepalive_min_ping_interval_ms: int = 20_000
    """Clients may ping this often without being sent GOAWAY (gRPC's default is 5 minutes)."""
    grace_s: float = 5.0
    """Seconds in-flight calls get to finish on shutdown."""
    warm_sizes: tuple[int, ...] = (128, 256)
    """Square frame sizes a throwaway session runs at before health says SERVING (`runtime.warmup`),
    so that the first frame of the first session is as fast as any other (without: 0.6-0.9 s; with:
    21 / 23 / 83 ms at 64 / 128 / 256, for a second more before SERVING); empty: none."""
    workers: int = 2
    """Threads for memory and model work (kept off the event loop)."""
    torch_threads: int = 1
    """Intra-op threads for torch (memory render and ingest). One: on 2 cores the compiled render
    already runs on two threads and onnxruntime keeps its own pool, and torch's second thread only
    competed with them (`mirage bench` memory render + ingest at 256x256: 3.94 / 4.13 ms with one
    against 5.01 / 5.45 ms with two, runs alternating; the frame loop's frames/s the same within
    noise)."""


@dataclass
class SessionDefaults:
    max_pending_poses: int = 2
    """Poses queued per stream before the oldest is dropped (latest wins)."""
    max_pending_messages: int = 8
    """Observations/controls queued per stream before the reader waits (back-pressure)."""
    idle_timeout_s: float = 900.0
    """A session nobody touched for this long is closed and its memory released."""
    max_sessions: int = 16
    """Open sessions at once; further handshakes get RESOURCE_EXHAUSTED."""
    max_budget_bytes: int = 8 * 1024 * MiB
    """Largest memory budget a client may ask for."""
    total_budget_bytes: int = 0
    """The sum of the open sessions' memory budgets this server admits (a handshake past it gets
    RESOURCE_EXHAUSTED); 0: half of this machine's physical memory."""
    max_sessions_per_principal: int = 4
    """Open sessions one principal may hold, on a server with --token-file (without tokens every
    caller is the same anonymous principal, held by max_sessions alone)."""
    max_checkpoints: int = 4
    """Checkpoints one session may hold (each a copy of its memory, counted against total_budget_bytes)."""
    max_pixels: int = 1920 * 1080
    """Largest frame (width * height) a session may declare."""


@dataclass
class RuntimeConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    sessions: SessionDefaults = field(default_factory=SessionDefaults)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
