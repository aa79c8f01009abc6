"""Which points to evict when memory is over budget: whole out-of-view chunks first, least relevant first.

Cost follows what is evicted (plus the chunk table), never the total stored: chunks outside the
current view are ranked by `ChunkIndex.relevance` (nearness to the recent camera trajectory, recency,
provenance; weights in `MemoryConfig`) and taken whole; the first chunk only partly needed loses its
least relevant points; only then do in-view points the render did not show go. What the current
render shows is never evicted.
"""

from __future__ import annotations

import torch

from runtime.memory.chunks import ChunkIndex
from runtime.memory.config import PROVENANCE_GENERATED, PROVENANCE_IMPORTED, PROVENANCE_OBSERVED

EVICTION_RANK = {PROVENANCE_GENERATED: 0, PROVENANCE_IMPORTED: 1, PROVENANCE_OBSERVED: 2}
"""Provenance order of eviction: generated content goes before imported, observed goes last."""


def choose_victims(
    chunks: ChunkIndex,
    fields: dict[str, torch.Tensor],  # the live points' arrays
    in_view: torch.Tensor,  # chunk rows in the current camera's frustum
    trajectory: torch.Tensor,  # [T, 3] recent camera positions, newest last
    now: int,  # current frame index
    weights,  # MemoryConfig: the relevance weights
    k: int,
    rows: int,
    protect: torch.Tensor,  # points the current render showed: never evicted
) -> torch.Tensor:
    """Distinct points (int64) to remove: at least ``k`` of them (when there are), emptying ``rows`` chunks."""
    order = chunks.eviction_order(in_view, trajectory, now, weights)
    total = torch.cumsum(chunks.sizes(order), 0)
    whole = max(int((total <= k).sum()), min(rows, order.numel()))
    victims = [chunks.members(order[:whole])]
    short = k - (int(total[whole - 1]) if whole else 0)
    if short > 0 and whole < order.numel():
        inside = chunks.members(order[whole : whole + 1])
        victims.append(inside[lowest_k(eviction_key(fields, inside), short)])
        short -= victims[-1].numel()
    if short > 0:
        near = chunks.members(in_view)
        near = near[~torch.isin(near, protect)]
        victims.append(near[lowest_k(eviction_key(fields, near), short)])
    return torch.cat(victims)


def eviction_key(fields: dict[str, torch.Tensor], points: torch.Tensor) -> torch.Tensor:
    """Relevance (int64, lower goes first) of ``points``: provenance, then last seen, then confidence."""
    rank = torch.zeros(points.numel(), dtype=torch.int64, device=points.device)
    provenance = fields["provenance"][points]
    for prov, r in EVICTION_RANK.items():
        rank[provenance == prov] = r
    seen = fields["last_seen"][points].to(torch.int64).clamp(0, 2**31 - 1)
    conf = (fields["confidence"][points].float().clamp(0, 1) * 65535).round().to(torch.int64)
    return (rank << 50) | (seen << 16) | conf


def lowest_k(key: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask [N] of the k smallest keys, ties to the lower index (a stable sort's first k, in O(N))."""
    chosen = torch.zeros(key.shape[0], dtype=torch.bool, device=key.device)
    if k <= 0:
        return chosen
    if k >= key.shape[0]:
        return ~chosen
    threshold = torch.topk(key, k, largest=False, sorted=False).values.max()  # faster than kthvalue
    chosen = key < threshold
    ties = (key == threshold).nonzero().squeeze(1)[: k - int(chosen.sum())]
    chosen[ties] = True
    return chosen
