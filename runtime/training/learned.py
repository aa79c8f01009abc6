"""The learned generator: a small multi-scale encoder-decoder that completes a memory render.

Inputs (the host contract): memory colour, depth and coverage, per-pixel camera rays and a noise
channel. The model first fills every hole with the push-pull pyramid (``pushpull.push_pull``): a
smooth multi-scale estimate, plus a second one that weights far surfaces up (disocclusions uncover
background). The network then sees the memory, both fills, edges, the rays and the noise, and
predicts a residual on top of the plain fill for colour and for inverse depth:

    x [N,21,H,W] -> space-to-depth -> enc1 (H/2) -> enc2 (H/4) -> enc3 (H/8, dilated context)
                 -> dec2 (H/4, + enc2) -> dec1 (H/2, + enc1) -> depth-to-space -> [N,4,H,W]

Low-level edges (the input's edge channel and the H/2 skip) are fused with coarse context (the
dilated H/8 block sees the whole frame at 128x128) at every scale on the way up. Depth is handled as inverse depth
1 / (1 + z) in (0, 1]: 0 is infinitely far (sky); the model returns at most FAR_DEPTH (2000 m, beyond
memory's far plane), so generated sky goes to the environment map.
Pixels memory covers (coverage >= COVERED) come out exactly as given, so revisits stay exact.

With ``detail`` (learned_v2) the noise leaves the network's input (20 channels) and a detail head on
the H/2 decoder features predicts an amplitude per pixel and colour instead:

    rgb = mean + softplus(detail_head(dec1)) * noise

The head is trained by its own loss only (local gradient energy against the truth's,
``training.train.detail_loss``), on features it does not shape, so the mean is the same model that the
reconstruction losses train, and noise scaled to 0 returns it exactly.

With ``anchored`` (learned_v3) the model cannot paint a colour the scene does not have. Its colour is
a per-pixel convex combination (softmax weights) of candidates taken from the memory render itself:
the push-pull fill, the far-surface fill, the row fill, the column fill (a floor continued down to
the bottom border), the frame's mean colour and the fill shifted by 4 and 12 pixels in each of the
four directions (texture carried across a hole's border). The
network predicts the weights, not colours, and sees the frame's colours normalised by their own
mean and spread over the covered pixels, so a per-channel gain or offset of the world changes nothing
it sees; training recolours ground and sky independently (``TrainConfig.palette``) so no fixed
palette can be learned either. The head starts with the push-pull fill's weight near 1. Depth is a
residual on the fill's inverse depth as before; the noise input is unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from runtime.training.pushpull import COVERED, EMPTY_RGB, push_pull

INPUTS: tuple[str, ...] = ("memory_rgb", "memory_depth", "memory_coverage", "ray_dirs", "noise")
FAR_DEPTH = 2000.0
"""Largest depth the model returns (metres): beyond memory's far plane (1000 m), so the runtime stores
such pixels (sky) in the environment map as content at infinity."""
FAR_INV = 1.0 / (1.0 + FAR_DEPTH)
DETAIL_BIAS = -4.0
"""Initial pre-softplus detail amplitude: softplus(-4) = 0.018, little."""
BASE_CHANNELS = 3 + 1 + 1 + 3 + 1 + 3 + 4 + 1 + 3
"""Input channels before the noise: memory rgb, inverse depth, coverage, fill rgb, fill inverse depth,
far fill rgb, row fill (rgb + inverse depth), edges, rays."""
NOISE_CHANNEL = BASE_CHANNELS
"""Index of the noise among the input channels of a model without detail (the last one)."""
SHIFTS: tuple[int, ...] = (4, 12)
"""Pixel offsets (each of the four directions) of the shifted-fill candidates of an anchored model."""
CANDIDATES = 5 + 4 * len(SHIFTS)
"""Colour candidates of an anchored model: fill, far fill, row fill, column fill, frame mean, the
shifted fills."""
ANCHORED_CHANNELS = BASE_CHANNELS + 4
"""Input channels of an anchored model: a model's without noise, and the column fill (rgb + inverse
depth)."""
FILL_BIAS = 6.0
"""Initial logit of the push-pull fill among an anchored model's candidates (weight 0.97 at the start)."""


@dataclass
class LearnedConfig:
    """Widths of the encoder-decoder; the defaults are the shipped model's."""

    widths: tuple[int, int, int] = (24, 48, 128)
    """Channels at 1/2, 1/4 and 1/8 resolution."""
    dilations: tuple[int, ...] = (1, 2, 4)
    """Dilations of the 1/8-resolution context block (one residual 3x3 conv each)."""
    detail: bool = False
    """Noise-modulated detail: the network predicts a per-pixel, per-colour amplitude and adds
    ``amplitude * noise`` to its colour, so texture the memory cannot say (grass, gravel) comes out
    with the strength the scene has there instead of as mush. The noise then enters only this way,
    so a host that scales the noise input scales the detail (0 gives the mean prediction alone)."""
    anchored: bool = False
    """Colour as a convex combination of candidates from the memory render (fills, mean, shifted
    fills), weights from a network that sees palette-normalised colour: no colour the scene lacks
    (learned_v3). Excludes ``detail``."""


def inverse_depth(depth: torch.Tensor) -> torch.Tensor:
    """Planar depth (metres, 0 unknown, inf far) -> 1 / (1 + z); unknown and inf both give 0."""
    ok = torch.isfinite(depth) & (depth > 0)
    return torch.where(
        ok, 1.0 / (1.0 + torch.where(ok, depth, torch.zeros_like(depth))), torch.zeros_like(depth)
    )


def depth_from_inverse(inv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`inverse_depth` for predictions, continuous: at most FAR_DEPTH metres."""
    return (1.0 / inv.clamp(FAR_INV, 1.0) - 1.0).clamp_min(0.0)


def _frame_stats(rgb: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [N,3,1,1], spread [N,3,1,1]) of the colour over the covered pixels (coverage-weighted):
    mid-grey and 0 where nothing is covered."""
    total = cov.sum(dim=(2, 3), keepdim=True)
    has = total > EPS_COVER
    denom = total.clamp_min(EPS_COVER)
    mean = (rgb * cov).sum(dim=(2, 3), keepdim=True) / denom
    mean = torch.where(has, mean, torch.full_like(mean, EMPTY_RGB))
    var = (((rgb - mean) ** 2) * cov).sum(dim=(2, 3), keepdim=True) / denom
    return mean, torch.where(has, var, torch.zeros_like(var)).clamp_min(0.0).sqrt()


EPS_COVER = 1e-3
SPREAD_FLOOR = 0.05
"""Added to a frame's colour spread before dividing by it (a flat-colour frame is not blown up)."""
NORM_CLIP = 4.0
"""Bound of a palette-normalised colour (spreads from the frame's mean): without it a near-flat frame
gives inputs up to 1 / SPREAD_FLOOR = 20, and the unnormalised trunk's activations grew with them in
training until the candidate softmax saturated to one-hot and learning stopped (run of 2026-12-04:
validation unchanged from step 1000 to 8000)."""


def _channel_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 of [N,K,H,W], written out: onnxruntime's Softmax on a non-last axis of a
    256x256 image transposes it there and back (15 of 48 ms a frame); this runs as elementwise ops."""
    e = torch.exp(x - x.amax(dim=1, keepdim=True))
    return e / e.sum(dim=1, keepdim=True)


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved so that pixel (y, x) shows (y - dy, x - dx); the border is repeated (any H, W)."""
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    h, w = x.shape[-2], x.shape[-1]
    return padded[:, :, p - dy : p - dy + h, p - dx : p - dx + w]


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1, k: int = 3) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation), nn.LeakyReLU(0.1)
    )


def _gray_edges(rgb: torch.Tensor) -> torch.Tensor:
    """|d/dx| + |d/dy| of luminance, [N,1,H,W] (replicate border)."""
    gray = 0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]
    pad = F.pad(gray, (0, 1, 0, 1), mode="replicate")
    return (pad[:, :, :-1, 1:] - gray).abs() + (pad[:, :, 1:, :-1] - gray).abs()


class LearnedFiller(nn.Module):
    """``forward(memory_rgb, memory_depth, memory_coverage, ray_dirs, noise) -> (rgb, depth)``, NCHW.

    Full-resolution detail enters by space-to-depth (each 2x2 block of the 21 input channels becomes
    84 channels at H/2) and leaves by depth-to-space (16 channels at H/2 become 4 at H), so no
    convolution runs at full resolution: that keeps it within 15 ms at 128x128 on 2 cores.
    """

    def __init__(self, config: LearnedConfig | None = None):
        super().__init__()
        self.config = config or LearnedConfig()
        c1, c2, c3 = self.config.widths
        if self.config.anchored and self.config.detail:
            raise ValueError("an anchored model has no detail head (it paints only the scene's colours)")
        # + the noise, without detail; an anchored model takes neither
        cin = ANCHORED_CHANNELS if self.config.anchored else BASE_CHANNELS + (0 if self.config.detail else 1)
        self.enc1 = nn.Sequential(_conv(4 * cin, c1), _conv(c1, c1))
        self.enc2 = nn.Sequential(_conv(c1, c2, stride=2), _conv(c2, c2))
        self.enc3 = _conv(c2, c3, stride=2)
        self.context = nn.ModuleList(_conv(c3, c3, dilation=d) for d in self.config.dilations)
        self.glob = nn.Sequential(nn.Linear(c3, c3), nn.LeakyReLU(0.1))  # whole-frame context
        self.dec2 = nn.Sequential(_conv(c3 + c2, c2, k=1), _conv(c2, c2))
        self.dec1 = nn.Sequential(_conv(c2 + c1, c1, k=1), _conv(c1, c1))
        outputs = CANDIDATES + 1 if self.config.anchored else 4  # weights + inverse depth, or rgb + it
        self.head = nn.Conv2d(c1, outputs * 4, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # starts as the push-pull fill
        nn.init.zeros_(self.head.bias)
        if self.config.anchored:  # pixel_shuffle: output channel c comes from head channels 4c..4c+3
            nn.init.constant_(self.head.bias[0:4], FILL_BIAS)
        self.detail_head: nn.Module | None = None
        if self.config.detail:
            last = nn.Conv2d(c1, 3 * 4, 3, padding=1)
            nn.init.zeros_(last.weight)
            nn.init.constant_(last.bias, DETAIL_BIAS)  # starts with almost no detail
            self.detail_head = nn.Sequential(_conv(c1, c1), last)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def complete(
        self,
        memory_rgb: torch.Tensor,  # [N,3,H,W] 0..1
        memory_depth: torch.Tensor,  # [N,1,H,W] metres, 0 unknown / infinity
        memory_coverage: torch.Tensor,  # [N,1,H,W] 0..1
        ray_dirs: torch.Tensor,  # [N,3,H,W] unit camera rays
        noise: torch.Tensor,  # [N,1,H,W] standard normal
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(rgb [N,3,H,W], inverse depth [N,1,H,W], detail amplitude [N,3,H,W] or None) for every
        pixel, before covered ones are restored; rgb is the mean prediction, without detail."""
        cov = memory_coverage.clamp(0.0, 1.0)
        inv = inverse_depth(memory_depth)
        # inverse depth is known wherever memory covers (0 = environment at infinity)
        fill_rgb = push_pull(memory_rgb, cov, EMPTY_RGB)
        fill_inv = push_pull(inv, cov, 0.0)
        # a second fill that favours far surfaces: what a disocclusion uncovers is behind its border
        far = cov * (1.0 - inv) ** 8
        back_rgb = push_pull(memory_rgb, far, EMPTY_RGB)
        # and one along rows only: a band the camera turned into continues the horizon sideways
        rows = push_pull(torch.cat([memory_rgb, inv], dim=1), cov, EMPTY_RGB, along="rows")
        if self.config.anchored:
            return self._anchored(memory_rgb, cov, inv, fill_rgb, fill_inv, back_rgb, rows, ray_dirs)
        x = torch.cat(
            [
                memory_rgb * cov,
                inv * cov,
                cov,
                fill_rgb,
                fill_inv,
                back_rgb,
                rows,
                _gray_edges(fill_rgb),
                ray_dirs,
                *(() if self.config.detail else (noise,)),
            ],
            dim=1,
        )
        h = self._trunk(x)
        out = F.pixel_shuffle(self.head(h), 2)
        amp = None
        if self.detail_head is not None:
            # trained by its own loss only: the trunk is shaped by the reconstruction losses alone
            amp = F.softplus(F.pixel_shuffle(self.detail_head(h.detach()), 2))
        return (fill_rgb + out[:, 0:3]).clamp(0.0, 1.0), (fill_inv + out[:, 3:4]).clamp(0.0, 1.0), amp

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(F.pixel_unshuffle(x, 2))
        e2 = self.enc2(e1)
        h = self.enc3(e2)
        for block in self.context:
            h = h + block(h)
        h = h + self.glob(h.mean(dim=(2, 3)))[:, :, None, None]
        h = self.dec2(torch.cat([self._up(h, e2), e2], dim=1))
        return self.dec1(torch.cat([self._up(h, e1), e1], dim=1))

    def _anchored(self, memory_rgb, cov, inv, fill_rgb, fill_inv, back_rgb, rows, ray_dirs):
        """Colour as softmax-weighted candidates from the memory render; the network sees colour
        normalised by the frame's own mean and spread."""
        mean, spread = _frame_stats(memory_rgb, cov)
        scale = 1.0 / (spread + SPREAD_FLOOR)

        def norm(c: torch.Tensor) -> torch.Tensor:
            return ((c - mean) * scale).clamp(-NORM_CLIP, NORM_CLIP)

        row_rgb = rows[:, 0:3]
        cols = push_pull(torch.cat([memory_rgb, inv], dim=1), cov, EMPTY_RGB, along="cols")
        col_rgb = cols[:, 0:3]
        x = torch.cat(
            [
                norm(memory_rgb) * cov,
                inv * cov,
                cov,
                norm(fill_rgb),
                fill_inv,
                norm(back_rgb),
                norm(row_rgb),
                rows[:, 3:4],
                norm(col_rgb),
                cols[:, 3:4],
                _gray_edges(norm(fill_rgb)),
                ray_dirs,
            ],
            dim=1,
        )
        out = F.pixel_shuffle(self.head(self._trunk(x)), 2)
        weights = _channel_softmax(out[:, :CANDIDATES])  # [N,K,H,W]
        candidates = [fill_rgb, back_rgb, row_rgb, col_rgb, mean.expand_as(fill_rgb)]
        for d in SHIFTS:
            candidates += [_shifted(fill_rgb, d, 0), _shifted(fill_rgb, -d, 0),
                           _shifted(fill_rgb, 0, d), _shifted(fill_rgb, 0, -d)]  # fmt: skip
        rgb = sum(weights[:, k : k + 1] * c for k, c in enumerate(candidates))
        return rgb.clamp(0.0, 1.0), (fill_inv + out[:, CANDIDATES : CANDIDATES + 1]).clamp(0.0, 1.0), None

    def forward(
        self,
        memory_rgb: torch.Tensor,
        memory_depth: torch.Tensor,
        memory_coverage: torch.Tensor,
        ray_dirs: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every pixel completed, covered ones as given; ``noise`` is needed unless ``anchored``."""
        if noise is None:
            if not self.config.anchored:
                raise ValueError("this model takes a noise input; only an anchored model runs without one")
            noise = torch.zeros_like(memory_depth)
        rgb, inv, amp = self.complete(memory_rgb, memory_depth, memory_coverage, ray_dirs, noise)
        if amp is not None:
            rgb = (rgb + amp * noise).clamp(0.0, 1.0)
        keep = memory_coverage >= COVERED
        return torch.where(keep, memory_rgb, rgb), torch.where(keep, memory_depth, depth_from_inverse(inv))
