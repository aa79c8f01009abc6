"""The generator contact sheet of `mirage eval`: held-out examples through each generator beside the
engine's truth (the scores themselves are `runtime.training.scoring`'s)."""

from __future__ import annotations

import numpy as np

from plugin_bridge.camera import Intrinsics
from runtime.generator.host import ray_directions
from runtime.training.scoring import example_feeds, host_runner, load_generator


def contact_sheet(names: list[str], split, fov_x_deg: float, path, *, count: int = 8, seed: int = 0,
                  models_dir: str | None = None) -> list[int]:  # fmt: skip
    """PNG grid of held-out examples, one row each: memory render (holes magenta), each generator's
    composed frame, the engine's truth. Examples are spread over the split (every kind, both the held-out
    scene and arrangements). Returns the example indices shown."""
    from PIL import Image, ImageDraw

    h, w = split["memory_depth"].shape[1:3]
    rays = ray_directions(Intrinsics.from_fov(w, h, fov_x_deg))
    by_kind: dict[tuple[str, bool], list[int]] = {}  # (kind, held-out scene?) -> examples
    for i, m in enumerate(split.meta):
        if 0.05 < m["coverage"] < 0.97 or m["kind"] == "empty":
            by_kind.setdefault((m["kind"], m["scene"] == "courtyard"), []).append(i)
    chosen: list[int] = []
    while len(chosen) < count and any(by_kind.values()):
        for kind in sorted(by_kind):
            if by_kind[kind] and len(chosen) < count:
                chosen.append(by_kind[kind].pop(len(by_kind[kind]) // 2))
    chosen.sort()
    idx = np.array(chosen, dtype=np.int64)
    feeds = example_feeds(split, idx, rays, np.random.default_rng([seed, 0xC0A7]))
    columns = []
    holes = split["memory_coverage"][idx] < 128
    mem = np.asarray(split["memory_rgb"][idx]).copy()
    mem[holes] = (255, 0, 255)
    columns.append(("memory render", mem))
    for name in names:
        host, detail = load_generator(name, models_dir)
        out = host_runner(host, detail)(feeds)
        gen = np.clip(np.rint(out.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)
        columns.append((name, np.where(holes[..., None], gen, split["memory_rgb"][idx])))
    columns.append(("truth (Panda3D)", np.asarray(split["truth_rgb"][idx])))
    scale, pad, head = max(1, 128 // w), 4, 18
    tile_w, tile_h = w * scale, h * scale
    sheet = Image.new(
        "RGB", (len(columns) * (tile_w + pad) + pad, head + len(idx) * (tile_h + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for c, (label, images) in enumerate(columns):
        x = pad + c * (tile_w + pad)
        draw.text((x, 3), label, fill="black")
        for r, img in enumerate(images):
            tile = Image.fromarray(img).resize((tile_w, tile_h), Image.NEAREST)
            sheet.paste(tile, (x, head + pad + r * (tile_h + pad)))
    for r, i in enumerate(idx):
        m = split.meta[int(i)]
        draw.text((pad + 2, head + pad + r * (tile_h + pad) + 2), f"{m['scene']} {m['kind']}", fill="white")
    sheet.save(path)
    return [int(i) for i in idx]
