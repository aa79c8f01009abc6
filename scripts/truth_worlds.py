"""The truth section of `mirage eval` in other worlds of the scene families (other seeds).

For each seed, each family's world with that seed is scored exactly as `mirage eval --seed N` scores
it (`run_truth` over a real server on port 0 and the real client; Open3D beside Mirage where it
imports), and one markdown row per family and seed is printed: PSNR on the pixels both cover,
Mirage / Open3D (gap), coverage and see-through Mirage / Open3D.

Usage: python scripts/truth_worlds.py SEED [SEED ...] [--families F,F]
"""

from __future__ import annotations

import argparse
import asyncio

from plugin_bridge.client import AsyncMirageClient
from runtime.config import RuntimeConfig
from runtime.evaluation.truth import TruthSpec, run_truth
from runtime.scenes.families import FAMILIES
from runtime.scenes.panda_source import PandaSceneSource, SceneConfig
from runtime.server import run_server, stop_server


async def main(seeds: list[int], families: tuple[str, ...]) -> None:
    spec = TruthSpec(families=families)
    config = RuntimeConfig()
    config.server.port = 0
    server, port = await run_server(config)
    print("| family | seed | PSNR both Mirage / Open3D (gap) | coverage % | see-through % |")
    print("|:--|--:|--:|--:|--:|")
    try:
        async with AsyncMirageClient(f"127.0.0.1:{port}") as client:
            for seed in seeds:
                for family in families:
                    scene_config = SceneConfig(name=family, width=spec.size, height=spec.size, seed=seed)
                    with PandaSceneSource(scene_config) as scene:
                        rows = {
                            r["method"]: r for r in await run_truth(client, scene, family, spec, seed=seed)
                        }
                    m, o = rows["mirage"], rows.get("open3d_tsdf")
                    if o is None:
                        print(f"| {family} | {seed} | {m['psnr_both']:.2f} / - | {100 * m['coverage']:.2f} | "
                              f"{100 * m['see_through']:.2f} |")  # fmt: skip
                        continue
                    gap = m["psnr_both"] - o["psnr_both"]
                    print(
                        f"| {family} | {seed} | {m['psnr_both']:.2f} / {o['psnr_both']:.2f} ({gap:+.2f}) | "
                        f"{100 * m['coverage']:.2f} / {100 * o['coverage']:.2f} | "
                        f"{100 * m['see_through']:.2f} / {100 * o['see_through']:.2f} |",
                        flush=True,
                    )
    finally:
        await stop_server(server, 1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    asyncio.run(main(args.seeds, tuple(f for f in args.families.split(",") if f)))
