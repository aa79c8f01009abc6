"""Editing a memory by provenance: forget everything of one provenance, or relabel everything as one.

Every point, packed point and environment texel carries the provenance of what put it there
(observed: the client's own frames; generated: the generator's completions; imported: a memory
brought in from elsewhere). `forget` removes all of one provenance (a session that imported a map can
drop it again, or drop every generated guess and keep only what it saw); `relabel` marks everything
as one provenance (an imported memory becomes "imported"). Both keep the budget and every index
consistent: the hot points by swap-remove, the packed chunks decoded, filtered and packed again (a
chunk left empty gives its row back), the environment texel by texel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from runtime.memory.config import PROVENANCE_OBSERVED, PROVENANCES
from runtime.memory.quantised import HEADER_BYTES, decode_chunk, encode_chunk


@dataclass(frozen=True)
class ForgetStats:
    """What `Editing.forget` removed."""

    points: int
    """Points removed (full precision and packed)."""
    texels: int
    """Environment texels emptied."""
    keyframes: int
    """Free-space keyframes dropped (forgetting observed content drops the free space it proved)."""


def _check(provenance: int) -> int:
    if isinstance(provenance, bool) or int(provenance) not in PROVENANCES:
        raise ValueError(
            f"provenance={provenance!r}: use one of {PROVENANCES} (observed, generated, imported)"
        )
    return int(provenance)


def _meta_offset(blob: np.ndarray) -> tuple[int, int]:
    """(offset of the confidence/provenance bytes in a packed blob, point count), per its layout."""
    n, _, _, p, index_bytes, _ = (int(v) for v in blob[:24].view("<i4"))
    at = HEADER_BYTES + 4 * p + 6 * n + 2 * n + (2 * n if index_bytes == 2 else 0) + 3 * n + n
    return at, n


class Editing:
    """`SpatialMemory`'s edits by provenance (its state is set up by `SpatialMemory.__init__`)."""

    def forget(self, provenance: int) -> ForgetStats:
        """Remove every point and environment texel of ``provenance`` (1 observed, 2 generated,
        3 imported); forgetting observed content also drops the free-space keyframes. Renders taken
        before are refused afterwards (point indices change)."""
        provenance = _check(provenance)
        hot = self._fields["provenance"][: self._count] == provenance
        removed = int(hot.sum())
        if removed:
            self._remove(hot)
        if self.cold is not None:
            removed += self._forget_packed(provenance)
        texels = self.env.forget(provenance)
        keyframes = 0
        if provenance == PROVENANCE_OBSERVED:
            keyframes = self.freespace.count
            self.freespace.clear()
        self._version += 1
        return ForgetStats(points=removed, texels=texels, keyframes=keyframes)

    def _forget_packed(self, provenance: int) -> int:
        cold, cs = self.cold, self.config.chunk_size_m
        rows = cold.rows()
        if rows.shape[0] == 0:
            return 0
        counts = self.chunks.rows["provenance"][torch.from_numpy(rows), provenance].numpy()
        removed, refill = 0, []
        for row in rows[counts > 0].tolist():
            blob = cold.get(row).copy()
            ref = int(blob[4:8].view("<i4")[0])  # ages stay relative to the chunk's reference frame
            fields = decode_chunk(blob, cs)
            keep = fields["provenance"] != provenance
            removed += int((~keep).sum())
            cold.drop(row)
            if not keep.any():
                self.chunks.drop_row(row)
                continue
            kept = {name: values[keep] for name, values in fields.items()}
            refill.append((row, kept, encode_chunk(kept, ref, cs)))
        cold.compact()  # the refilled blobs are smaller than the ones they replace: they fit
        r = self.chunks.rows
        for row, kept, blob in refill:
            cold.put(row, blob)
            r["lo"][row] = torch.from_numpy(kept["xyz"].min(axis=0))
            r["hi"][row] = torch.from_numpy(kept["xyz"].max(axis=0))
            r["rmax"][row] = float(kept["radius"].max())
            r["last_seen"][row] = int(kept["last_seen"].max())
            r["provenance"][row] = torch.from_numpy(np.bincount(kept["provenance"], minlength=4)[:4])
        cold.resize(cold.live)  # the bytes forgotten go back to the budget (the hot store may grow)
        return removed

    def relabel(self, provenance: int) -> int:
        """Mark every point and filled environment texel as ``provenance``; returns the points relabelled."""
        provenance = _check(provenance)
        self._fields["provenance"][: self._count] = provenance
        used = self.chunks.used_rows()
        if used.numel():
            totals = self.chunks.rows["provenance"][used].sum(dim=1)
            counts = torch.zeros(used.numel(), 4, dtype=torch.int32)
            counts[:, provenance] = totals.to(torch.int32)
            self.chunks.rows["provenance"][used] = counts
        if self.cold is not None:
            arena = self.cold.arena
            for row in self.cold.rows().tolist():
                start = int(self.cold.offset[row])
                at, n = _meta_offset(self.cold.get(row))
                meta = arena[start + at : start + at + n]
                meta[:] = (meta & 0xFC) | provenance
        filled = self.env.last_seen >= 0
        self.env.provenance[filled] = provenance
        self._version += 1
        return self.num_points
