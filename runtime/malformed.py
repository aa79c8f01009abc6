"""Messages that do not parse: INVALID_ARGUMENT with what was wrong, and a log that cannot be flooded.

Left to grpc, a request whose bytes are not a valid protobuf message of the method's type ends the
call UNKNOWN and logs a full traceback, every time (6,100 such messages wrote 5.4 MB of log).
`MalformedMessageInterceptor` takes the parsing of every mirage.v1 request into its own hands: a
unary request that fails to parse is refused INVALID_ARGUMENT before the handler runs; on the
stream, the failing message raises `wire.WireError` from the request iterator, which the servicer
turns into the same status (after the frames already made). Either way one WARNING line, without
a traceback, through `RateLimitedLog`: at most ``per_interval`` lines every ``interval_s`` seconds,
the next line saying how many were left out.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc

from runtime import wire

log = logging.getLogger("mirage.server")
PREFIX = "/mirage.v1."


class RateLimitedLog:
    """WARNING lines, at most ``per_interval`` every ``interval_s`` seconds (thread-safe)."""

    def __init__(self, logger: logging.Logger, per_interval: int = 5, interval_s: float = 10.0):
        self.logger = logger
        self.per_interval = per_interval
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._window = -1.0
        self._written = 0
        self.suppressed = 0

    def warning(self, message: str, *args) -> bool:
        """Log the line unless this interval is full; returns whether it was written."""
        now = time.monotonic()
        with self._lock:
            if now - self._window >= self.interval_s:
                if self.suppressed:
                    self.logger.warning(
                        "%d similar line(s) left out in the last %.0f s", self.suppressed, self.interval_s
                    )
                self._window, self._written, self.suppressed = now, 0, 0
            if self._written >= self.per_interval:
                self.suppressed += 1
                return False
            self._written += 1
        self.logger.warning(message, *args)
        return True


REJECTIONS = RateLimitedLog(log)
"""The log of rejected messages of this process."""


def _parse_error(method: str, parse, raw: bytes, exc: Exception) -> wire.WireError:
    kind = getattr(parse, "__self__", None)
    name = getattr(kind, "DESCRIPTOR", None)
    what = name.full_name if name is not None else "request"
    REJECTIONS.warning("rejected a %s on %s: %d bytes that do not parse (%s)", what, method, len(raw), exc)
    return wire.WireError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the message is not a valid {what} ({len(raw)} bytes: {exc}); send the message generated from "
        "proto/mirage/v1/mirage.proto for this RPC",
    )


class MalformedMessageInterceptor(grpc.aio.ServerInterceptor):
    """Parses mirage.v1 requests itself, so that bad bytes get INVALID_ARGUMENT and one log line."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(PREFIX) or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer
        if not handler.request_streaming:
            behaviour = handler.unary_unary or handler.unary_stream

            async def parsed_unary(raw: bytes, context):
                try:
                    request = parse(raw)
                except Exception as exc:  # protobuf's DecodeError, or anything a parser raises on bytes
                    error = _parse_error(method, parse, raw, exc)
                    await context.abort(error.code, error.message)
                return await behaviour(request, context)

            async def parsed_unary_stream(raw: bytes, context):
                try:
                    request = parse(raw)
                except Exception as exc:
                    error = _parse_error(method, parse, raw, exc)
                    await context.abort(error.code, error.message)
                async for response in behaviour(request, context):
                    yield response

            make, wrapped = (
                (grpc.unary_stream_rpc_method_handler, parsed_unary_stream)
                if handler.response_streaming
                else (grpc.unary_unary_rpc_method_handler, parsed_unary)
            )
        else:
            behaviour = handler.stream_stream or handler.stream_unary

            async def messages(raw_iterator):
                async for raw in raw_iterator:
                    try:
                        message = parse(raw)
                    except Exception as exc:
                        raise _parse_error(method, parse, raw, exc) from None
                    yield message

            async def parsed_stream_stream(raw_iterator, context):
                async for response in behaviour(messages(raw_iterator), context):
                    yield response

            async def parsed_stream_unary(raw_iterator, context):
                return await behaviour(messages(raw_iterator), context)

            make, wrapped = (
                (grpc.stream_stream_rpc_method_handler, parsed_stream_stream)
                if handler.response_streaming
                else (grpc.stream_unary_rpc_method_handler, parsed_stream_unary)
            )
        return make(wrapped, request_deserializer=None, response_serializer=handler.response_serializer)
