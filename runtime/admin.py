"""The admin service (`mirage.v1.MirageAdmin`): what a server holds, for its operator.

Reached only with a token from ``--admin-token-file`` (`runtime.auth.AdminAuthInterceptor`); it
reads the registry and never changes a session. `mirage sessions` prints it.
"""

from __future__ import annotations

import time

from mirage.v1 import mirage_pb2 as pb
from mirage.v1 import mirage_pb2_grpc as pb_grpc

from runtime import wire
from runtime.registry import SessionRegistry


class MirageAdminServicer(pb_grpc.MirageAdminServicer):
    def __init__(self, registry: SessionRegistry, stopping):
        self.registry = registry
        self.stopping = stopping  # () -> bool: a graceful stop has begun

    async def ListSessions(self, request: pb.ListSessionsRequest, context) -> pb.ListSessionsResponse:
        now = time.monotonic()
        sessions = sorted(self.registry.sessions(), key=lambda s: s.opened_at)
        return pb.ListSessionsResponse(
            sessions=[
                pb.SessionSummary(
                    session_id=s.id,
                    owner=s.owner,
                    width=s.spec.intrinsics.width,
                    height=s.spec.intrinsics.height,
                    generator=s.generator.name,
                    frames=s.frame_index,
                    streaming=s.streaming,
                    idle_s=max(0.0, now - s.last_used),
                    age_s=max(0.0, now - s.opened_at),
                    memory=wire.memory_stats_to_proto(s.last_stats),
                    checkpoints=len(s.checkpoints),
                    durable_frame=s.durable_frame,
                )
                for s in sessions
            ],
            max_sessions=self.registry.config.sessions.max_sessions,
            admitted_budget_bytes=self.registry.admitted_bytes(),
            total_budget_bytes=self.registry.total_budget_bytes,
            stopping=self.stopping(),
        )
