"""Bearer-token authentication, the principal each call runs as, and a rate limit per principal.

`mirage serve --token-file F` reads one ``principal token`` pair a line (separated by a space; blank
lines and lines starting with ``#`` are skipped). Every call must then carry the metadata
``authorization: Bearer <token>``: `TokenAuthInterceptor` refuses a call without it, or with a token
the file does not hold, as UNAUTHENTICATED before any handler runs (the health service stays open,
so that probes work). The handlers ask `TokenTable.principal` who the caller is; a session belongs
to the principal that opened it (`runtime.registry`).

Tokens are compared in constant time. The file is the only place they live: never in the repo, the
command line or a log line; a token file others may read is refused (as ssh refuses a private key).
"""

from __future__ import annotations

import hmac
import os
import stat
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import grpc

MIN_TOKEN_CHARS = 16
"""Shorter tokens are refused when the file is read (guessable)."""
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
"""Methods served without a token: health probes."""
ADMIN_PREFIX = "/mirage.v1.MirageAdmin/"
"""The admin service: its own tokens (`AdminAuthInterceptor`), never a session token."""


class TokenFileError(ValueError):
    """The token file cannot be used (the message says what to fix)."""


def read_private_file(path: Path, what: str, error: type[ValueError]) -> str:
    """The text of a secrets file only its owner may read (``error`` says why not, and what to do)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(f"{what} {path} can be read by others (mode {stat.S_IMODE(mode):o}): chmod 600 {path}")
    return text


def private_lines(path: Path, what: str, error: type[ValueError]):
    """(line number, the line's space-separated fields) of each line of a secrets file that is not blank
    or a ``#`` comment (`read_private_file`'s rules)."""
    for number, raw in enumerate(read_private_file(path, what, error).splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line.split(" ")


class TokenTable:
    """Tokens and their principals."""

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self._tokens: list[tuple[bytes, str]] = []
        seen: set[str] = set()
        for principal, token in pairs:
            if token in seen:
                raise TokenFileError(
                    f"a token is listed twice (second time for {principal!r}): give each its own"
                )
            seen.add(token)
            self._tokens.append((token.encode(), principal))
        if not self._tokens:
            raise TokenFileError("the token file lists no token: add a line 'principal token'")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TokenTable:
        path = Path(path)
        pairs = []
        for number, fields in private_lines(path, "token file", TokenFileError):
            if len(fields) != 2 or not all(fields):
                raise TokenFileError(
                    f"{path} line {number}: expected 'principal token' (two fields, one space between them)"
                )
            principal, token = fields
            if len(token) < MIN_TOKEN_CHARS:
                raise TokenFileError(
                    f"{path} line {number}: the token of {principal!r} has {len(token)} characters; "
                    f"use at least {MIN_TOKEN_CHARS} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
            pairs.append((principal, token))
        return cls(pairs)

    def principal(self, metadata) -> str | None:
        """The principal whose token ``metadata`` (gRPC invocation metadata) carries, else None."""
        value = None
        for key, item in metadata or ():
            if key == "authorization":
                value = item
                break
        if not isinstance(value, str) or not value.startswith("Bearer "):
            return None
        offered = value[len("Bearer ") :].strip().encode()
        found = None
        for token, principal in self._tokens:  # every entry compared: the time says nothing
            if hmac.compare_digest(token, offered):
                found = principal
        return found

    def __len__(self) -> int:
        return len(self._tokens)

    def shares_a_token_with(self, other: TokenTable) -> bool:
        mine = {token for token, _ in self._tokens}
        return any(token in mine for token, _ in other._tokens)


def _refusal(
    handler: grpc.RpcMethodHandler, message: str, code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED
) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind that ends the call with ``code`` and ``message``."""

    async def unary(request, context):
        await context.abort(code, message)

    async def streaming(request, context):
        await context.abort(code, message)
        yield  # pragma: no cover (abort raises)

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(
        streaming if handler.response_streaming else unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for any call (but health probes) without a known bearer token."""

    def __init__(self, table: TokenTable):
        self.table = table

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in OPEN_METHODS or method.startswith(ADMIN_PREFIX):
            return handler
        metadata = handler_call_details.invocation_metadata
        if self.table.principal(metadata) is not None:
            return handler
        offered = any(key == "authorization" for key, _ in metadata or ())
        message = (
            "the authorization token is not valid here: check the token the server's --token-file gives you"
            if offered
            else "this server needs a token: send metadata 'authorization: Bearer <token>' "
            "(MirageClient(target, token=...))"
        )
        return _refusal(handler, message)


class AdminAuthInterceptor(grpc.aio.ServerInterceptor):
    """The admin service only for a token of ``admins`` (--admin-token-file): a session token
    (``tokens``) is PERMISSION_DENIED, no token or an unknown one UNAUTHENTICATED, and every call
    FAILED_PRECONDITION on a server without admin tokens."""

    def __init__(self, admins: TokenTable | None, tokens: TokenTable | None):
        self.admins = admins
        self.tokens = tokens

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(ADMIN_PREFIX):
            return handler
        if self.admins is None:
            return _refusal(
                handler,
                "this server has no admin tokens: start it with --admin-token-file F to list its sessions",
                grpc.StatusCode.FAILED_PRECONDITION,
            )
        metadata = handler_call_details.invocation_metadata
        if self.admins.principal(metadata) is not None:
            return handler
        if self.tokens is not None and self.tokens.principal(metadata) is not None:
            return _refusal(
                handler,
                "a session token does not open the admin service: use a token from the server's --admin-token-file",
                grpc.StatusCode.PERMISSION_DENIED,
            )
        offered = any(key == "authorization" for key, _ in metadata or ())
        return _refusal(
            handler,
            "the admin token is not valid here: check the token the server's --admin-token-file gives you"
            if offered
            else "the admin service needs a token: send metadata 'authorization: Bearer <admin token>'",
        )


class RateLimiter:
    """A token bucket per principal: ``rate`` calls a second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int):
        self.rate = float(rate)
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # principal -> (tokens, when)
        self._lock = threading.Lock()

    def wait_s(self, principal: str, now: float | None = None) -> float:
        """0 when ``principal`` may call now (the call is counted), else seconds until it may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, when = self._buckets.get(principal, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.rate)
            if tokens >= 1.0:
                self._buckets[principal] = (tokens - 1.0, now)
                return 0.0
            self._buckets[principal] = (tokens, now)
            return (1.0 - tokens) / self.rate


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """RESOURCE_EXHAUSTED for a principal's calls beyond its rate (a stream is one call; health
    probes are not counted). Without tokens every caller is one anonymous principal."""

    def __init__(self, limiter: RateLimiter, tokens: TokenTable | None):
        self.limiter = limiter
        self.tokens = tokens

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in OPEN_METHODS:
            return handler
        principal = (
            "" if self.tokens is None else self.tokens.principal(handler_call_details.invocation_metadata)
        )
        wait = self.limiter.wait_s(principal or "")
        if wait <= 0.0:
            return handler
        message = (
            f"rate limit: at most {self.limiter.rate:g} calls a second for one principal (bursts of "
            f"{self.limiter.burst:g}); retry in {1000.0 * wait:.0f} ms, or keep one Stream open instead of many calls"
        )
        return _refusal(handler, message, grpc.StatusCode.RESOURCE_EXHAUSTED)
