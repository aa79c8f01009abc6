"""The sessions a server holds and the generators they share, apart from the gRPC servicer.

`SessionRegistry` opens sessions within the server's limit (closing idle ones first when full),
finds them by id, closes them, and reaps those idle past the timeout; it loads each generator once
and shares it. It knows nothing of gRPC: it raises the errors below, which the servicer turns into
statuses, so that every RPC is a few lines; `get` is where ownership is checked: a session belongs to
the principal that opened it (`runtime.auth`), and another principal's call on it is refused.

Thread-safe: `open` runs in the server's worker threads (it loads models and allocates memory) while
the event loop looks sessions up.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time

from runtime.config import RuntimeConfig
from runtime.generator.host import GeneratorConfig, GeneratorHost, models_with_detail
from runtime.session import Session
from runtime.types import SessionSpec

log = logging.getLogger("mirage.registry")


def physical_memory_bytes() -> int:
    """This machine's physical memory (bytes)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class RegistryError(Exception):
    """A request the registry refuses; the message says what to do instead."""


class NoSessionId(RegistryError):
    """A call that needs a session came without its id (FAILED_PRECONDITION)."""


class UnknownSession(RegistryError):
    """No open session has that id (NOT_FOUND)."""


class SessionLimitReached(RegistryError):
    """The server holds as many sessions as it may (RESOURCE_EXHAUSTED)."""


class SessionAlreadyOpen(RegistryError):
    """A resume of a session that is open (FAILED_PRECONDITION)."""


class NotYourSession(RegistryError):
    """The session belongs to another principal (PERMISSION_DENIED; the message names no one)."""


class SessionRegistry:
    def __init__(self, config: RuntimeConfig):
        self.config = config
        self._sessions: dict[str, Session] = {}
        self._opening: list[
            tuple[str, int]
        ] = []  # (owner, budget) of sessions being built: they count already
        self.total_budget_bytes = config.sessions.total_budget_bytes or physical_memory_bytes() // 2
        self._generators: dict[str, GeneratorHost] = {}
        self.on_idle_close = None  # called with each session closed for being idle (the metrics count it)
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def generator(self, name: str) -> GeneratorHost:
        """The loaded generator ``name`` (its sha256 checked against its card on first load)."""
        with self._load_lock:
            host = self._generators.get(name)
            if host is None:
                host = GeneratorHost.load(GeneratorConfig(**{**self.config.generator.__dict__, "name": name}))
                self._generators[name] = host
            return host

    def open(self, spec: SessionSpec, owner: str = "", session_id: str | None = None) -> Session:
        """A new session for ``spec``, belonging to ``owner`` (the caller's principal; "" on a server
        without tokens): raises SessionLimitReached when the server is full even after
        closing idle sessions, ValueError when the spec cannot be served (a budget too small for the
        memory's tables, a detail strength for a generator without detail control)."""
        claim = (owner, spec.budget_bytes)
        with self._lock:
            if self._refusal(claim) is not None:
                self._close_idle_locked()
            refusal = self._refusal(claim)
            if refusal is not None:
                raise SessionLimitReached(refusal)
            if session_id is not None and session_id in self._sessions:
                raise SessionAlreadyOpen(f"session {session_id!r} is open already: use it, or close it first")
            self._opening.append(claim)
        try:
            generator = self.generator(spec.generator)
            if spec.detail is not None and not generator.detail_control:
                with_detail = models_with_detail(self.config.generator.models_dir)
                raise ValueError(
                    f"generator {generator.name!r} has no detail control: leave generator_detail unset, or "
                    f"choose a generator that has it ({', '.join(with_detail) or 'none installed here'})"
                )
            session = Session(spec, generator, self.config.memory, owner=owner, session_id=session_id)
        except BaseException:
            with self._lock:
                self._opening.remove(claim)
            raise
        with self._lock:  # one step: no other open sees the slot free in between
            self._opening.remove(claim)
            if session.id in self._sessions:  # two resumes of one session at once: the first wins
                raise SessionAlreadyOpen(f"session {session.id!r} is open already: use it, or close it first")
            self._sessions[session.id] = session
        log.info(
            "session %s opened (%s, %dx%d)",
            session.id, spec.convention.value, spec.intrinsics.width, spec.intrinsics.height,
            extra={"session_id": session.id, "resumed": session_id is not None},
        )  # fmt: skip
        return session

    def _refusal(self, claim: tuple[str, int]) -> str | None:
        """Why a new session ``claim`` (owner, budget) cannot be admitted now, or None. Lock held."""
        owner, budget = claim
        claims = [(s.owner, s.spec.budget_bytes + s.checkpoint_bytes) for s in self._sessions.values()]
        claims += self._opening
        limits = self.config.sessions
        if len(claims) >= limits.max_sessions:
            return f"this server already holds {len(claims)} sessions (its limit): close one first"
        mine = sum(1 for who, _ in claims if who == owner)
        if owner and mine >= limits.max_sessions_per_principal:
            return (
                f"your principal already holds {mine} sessions (the limit for one principal): close one first"
            )
        committed = sum(b for _, b in claims)
        if committed + budget > self.total_budget_bytes:
            free = max(self.total_budget_bytes - committed, 0)
            return (
                f"memory budget of {budget} bytes does not fit: this server admits {self.total_budget_bytes} bytes "
                f"of session budgets and {free} are free; ask for less or close a session"
            )
        return None

    def _committed_locked(self) -> int:
        committed = sum(s.spec.budget_bytes + s.checkpoint_bytes for s in self._sessions.values())
        return committed + sum(b for _, b in self._opening)

    def admitted_bytes(self) -> int:
        """The session budgets and checkpoints admitted now (what total_budget_bytes bounds)."""
        with self._lock:
            return self._committed_locked()

    def admit_checkpoint(self, nbytes: int, keep) -> None:
        """Call ``keep()`` (which adds a checkpoint of ``nbytes`` to its session) if it fits what the
        server admits beside the sessions' budgets and checkpoints, else raise SessionLimitReached:
        the check and the addition are one step under the registry's lock."""
        with self._lock:
            committed = self._committed_locked()
            if committed + nbytes > self.total_budget_bytes:
                free = max(self.total_budget_bytes - committed, 0)
                raise SessionLimitReached(
                    f"a checkpoint of {nbytes} bytes does not fit: this server admits {self.total_budget_bytes} "
                    f"bytes of session budgets and checkpoints and {free} are free; delete a checkpoint first"
                )
            keep()

    def get(self, session_id: str, principal: str = "") -> Session:
        """The open session ``session_id`` of ``principal``; NoSessionId / UnknownSession /
        NotYourSession otherwise."""
        if not session_id:
            raise NoSessionId("no session_id: call OpenSession first and send its session_id with this call")
        session = self._sessions.get(session_id)
        if session is None or session.closed:
            raise UnknownSession(f"unknown or closed session {session_id!r}: open a new one with OpenSession")
        if not hmac.compare_digest(session.owner.encode(), principal.encode()):
            raise NotYourSession(
                f"session {session_id!r} was opened by another principal: use a session your token opened"
            )
        return session

    def sessions(self) -> list[Session]:
        """The open sessions, now."""
        with self._lock:
            return [s for s in self._sessions.values() if not s.closed]

    def forget(self, session: Session) -> None:
        """Stop holding ``session`` (the caller closes it, off the event loop)."""
        with self._lock:
            if self._sessions.get(session.id) is session:
                del self._sessions[session.id]

    def close_idle(self) -> int:
        """Close the sessions nobody touched for the idle timeout (none streaming); returns how many."""
        with self._lock:
            return self._close_idle_locked()

    def _close_idle_locked(self) -> int:
        limit = self.config.sessions.idle_timeout_s
        now = time.monotonic()
        stale = [s for s in self._sessions.values() if not s.streaming and now - s.last_used > limit]
        for s in stale:
            s.close()
            del self._sessions[s.id]
            log.info(
                "session %s closed: idle for %.0f s", s.id, now - s.last_used, extra={"session_id": s.id}
            )
            if self.on_idle_close is not None:
                self.on_idle_close(s)
        return len(stale)
