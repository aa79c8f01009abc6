"""Observability: Prometheus metrics, one JSON log line an event, and the RPC status counts.

``mirage serve --metrics-port P`` serves the metrics in Prometheus' text format on
``http://<metrics-host>:P/metrics`` (loopback by default; the figures are aggregates over sessions
and never carry a session id, a principal or a token). `Telemetry` owns a registry of its own, so
that servers in one process (tests, the embedded demo) never mix their counts:

- ``mirage_frames_total{mode}``: frames made (generate: a pose on a stream; observe: an observation
  that asked for a frame or not; inference: ContextualInference), and ``mirage_poses_dropped_total``;
- ``mirage_stage_seconds{stage}``: a histogram per stage of the frame (decode, render, generate,
  compose, ingest, encode, total: the frame's StageTimings);
- ``mirage_rpcs_total{method,code}``: every RPC by its final status; ``mirage_auth_failures_total{code}``
  the calls refused UNAUTHENTICATED or PERMISSION_DENIED;
- ``mirage_sessions_opened_total{how}`` (new, resumed), ``mirage_sessions_closed_total{reason}``
  (client, idle, disconnect), ``mirage_durable_checkpoints_total{result}`` (saved, failed);
- ``mirage_points_pruned_total``, ``mirage_points_carved_total``, ``mirage_chunks_evicted_total``:
  what memory let go, summed over sessions as their frames report it;
- gauges read at scrape time: ``mirage_sessions`` and ``mirage_sessions_streaming``,
  ``mirage_memory_bytes``, ``mirage_memory_budget_bytes``, ``mirage_memory_points``,
  ``mirage_memory_chunks`` (over the open sessions), ``mirage_admitted_budget_bytes``.

``--log-format json`` writes every log record as one JSON object a line: time, level, logger,
message, and the event's fields (``session_id``, ``sequence``, ``method``, ``code`` ... where the
record has them). Frames are logged at DEBUG (``--log-level debug``), sessions, streams, checkpoints
and refusals at INFO and above.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server

if TYPE_CHECKING:
    from runtime.memory import MemoryStats

log = logging.getLogger("mirage.telemetry")

STAGES = ("decode", "render", "generate", "compose", "ingest", "encode", "total")
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds: a stage of a 64x64 frame takes a fraction of a millisecond, a 1080p frame hundreds."""
AUTH_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object a record: ts (UTC, ISO 8601 with milliseconds), level, logger, message, the
    record's own fields (``extra=``) and, for an exception, its type and message (no traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info and record.exc_info[1] is not None:
            out["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return json.dumps(out, separators=(",", ":"))


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """The process's root handler: text lines (time, level, logger, message) or JSON lines."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"--log-format {fmt!r}: use one of {', '.join(LOG_FORMATS)}")
    if level not in LOG_LEVELS:
        raise ValueError(f"--log-level {level!r}: use one of {', '.join(LOG_LEVELS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class _LiveCollector:
    """Gauges of the open sessions, read when Prometheus scrapes (``sessions()``: the registry's)."""

    def __init__(self, sessions: Callable[[], list], admitted: Callable[[], int]):
        self.sessions = sessions
        self.admitted = admitted

    def describe(self):
        return []  # nothing fixed to describe: collect() is read at each scrape

    def collect(self):
        sessions = self.sessions()
        stats = [s.last_stats for s in sessions]
        gauges = (
            ("mirage_sessions", "Open sessions", len(sessions)),
            ("mirage_sessions_streaming", "Open sessions with a Stream", sum(s.streaming for s in sessions)),
            (
                "mirage_memory_bytes",
                "Bytes the open sessions' memories use",
                sum(m.bytes_used for m in stats),
            ),
            (
                "mirage_memory_budget_bytes",
                "The open sessions' memory budgets",
                sum(s.spec.budget_bytes for s in sessions),
            ),
            ("mirage_memory_points", "Points the open sessions' memories hold", sum(m.points for m in stats)),
            (
                "mirage_memory_chunks",
                "Chunks holding points, over open sessions",
                sum(m.chunks for m in stats),
            ),
            (
                "mirage_admitted_budget_bytes",
                "Session budgets and checkpoints the server has admitted",
                self.admitted(),
            ),
        )
        for name, text, value in gauges:
            yield GaugeMetricFamily(name, text, value=value)


class Telemetry:
    """The server's metrics (a registry of their own) and what records them."""

    def __init__(self, sessions: Callable[[], list], admitted: Callable[[], int]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("mirage_frames", "Frames made, by mode", ["mode"], registry=r)
        self.poses_dropped = Counter(
            "mirage_poses_dropped", "Stale poses latest-wins skipped on streams", registry=r
        )
        self.stage = Histogram(
            "mirage_stage_seconds",
            "Time a frame spent in each stage",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.rpcs = Counter(
            "mirage_rpcs", "RPCs finished, by method and status code", ["method", "code"], registry=r
        )
        self.auth_failures = Counter(
            "mirage_auth_failures",
            "Calls refused for their credentials (UNAUTHENTICATED, PERMISSION_DENIED)",
            ["code"],
            registry=r,
        )
        self.sessions_opened = Counter(
            "mirage_sessions_opened", "Sessions opened, new or resumed", ["how"], registry=r
        )
        self.sessions_closed = Counter(
            "mirage_sessions_closed",
            "Sessions closed: by the client, idle, on disconnect",
            ["reason"],
            registry=r,
        )
        self.durable = Counter(
            "mirage_durable_checkpoints", "Durable checkpoints written or failed", ["result"], registry=r
        )
        self.pruned = Counter("mirage_points_pruned", "Points memory pruned to keep its budget", registry=r)
        self.carved = Counter("mirage_points_carved", "Points free-space carving removed", registry=r)
        self.evicted = Counter("mirage_chunks_evicted", "Whole chunks the budget evicted", registry=r)
        r.register(_LiveCollector(sessions, admitted))
        self._seen: dict[str, tuple[int, int, int]] = {}  # session -> (pruned, carved, evicted) counted
        self._lock = threading.Lock()
        self._http = None

    def record_frame(self, session_id: str, mode: str, timings_ms: dict, stats: MemoryStats) -> None:
        """One frame of ``mode``: its count, its stages, and what memory let go since the last."""
        self.frames.labels(mode).inc()
        for stage in STAGES:
            value = timings_ms.get(f"{stage}_ms")
            if value is not None:
                self.stage.labels(stage).observe(float(value) / 1e3)
        now = (stats.points_pruned_total, stats.points_carved_total, stats.chunks_evicted_total)
        with self._lock:
            before = self._seen.get(session_id, (0, 0, 0))
            self._seen[session_id] = now
        for counter, new, old in zip((self.pruned, self.carved, self.evicted), now, before, strict=True):
            if new > old:  # a rollback or an import may set the totals back: nothing is un-counted
                counter.inc(new - old)

    def forget_session(self, session_id: str, reason: str) -> None:
        self.sessions_closed.labels(reason).inc()
        with self._lock:
            self._seen.pop(session_id, None)

    def record_rpc(self, method: str, code: grpc.StatusCode) -> None:
        self.rpcs.labels(method, code.name).inc()
        if code in AUTH_CODES:
            self.auth_failures.labels(code.name).inc()

    # -- the /metrics endpoint ----------------------------------------------------------------------
    def serve_http(self, host: str, port: int) -> int:
        """Serve /metrics on ``host:port`` (0: a free port) in a thread of its own; returns the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return server.server_port

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _code_of(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with: what the handler set (abort included), else OK or UNKNOWN."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # the aio context may hand back the raw code
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status
    if exc is None:
        return grpc.StatusCode.OK
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):  # the client went away
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Counts every call by method and final status (outermost: refusals of the other interceptors
    are counted too) and logs each refusal of credentials, never the credentials."""

    def __init__(self, telemetry: Telemetry):
        self.telemetry = telemetry

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full = handler_call_details.method
        method = full.rpartition("/")[2]
        if full.startswith("/grpc."):
            return handler  # health, reflection: probes, not the service
        telemetry = self.telemetry

        def done(context, exc: BaseException | None) -> None:
            code = _code_of(context, exc)
            telemetry.record_rpc(method, code)
            if code in AUTH_CODES:
                log.warning(
                    "refused %s: %s (%s)",
                    method,
                    code.name,
                    context.details() or "",
                    extra={"method": method, "code": code.name, "peer": context.peer()},
                )

        if handler.response_streaming:
            behaviour = handler.unary_stream or handler.stream_stream

            async def streaming(request, context):
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as exc:
                    done(context, exc)
                    raise
                done(context, None)

            make = (
                grpc.unary_stream_rpc_method_handler
                if not handler.request_streaming
                else grpc.stream_stream_rpc_method_handler
            )
            wrapped = streaming
        else:
            behaviour = handler.unary_unary or handler.stream_unary

            async def unary(request, context):
                try:
                    response = await behaviour(request, context)
                except BaseException as exc:
                    done(context, exc)
                    raise
                done(context, None)
                return response

            make = (
                grpc.unary_unary_rpc_method_handler
                if not handler.request_streaming
                else grpc.stream_unary_rpc_method_handler
            )
            wrapped = unary
        return make(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
