"""How much view-dependent selection could add to memory's colour (issue 15's open gap).

For each held-out pose of a family's truth test (seed 0, 128x128, the poses `run_truth` scores), a
fresh SpatialMemory is built from only the K observed frames nearest that pose (camera distance)
and rendered there, beside the memory of all the observed frames; each render is scored against the
engine's over the pixels every render and Open3D's TSDF cover. Prints the mean PSNR per memory.

Usage: python scripts/nearest_views_memory.py FAMILY [K ...]   (default K: 3 8)
"""

from __future__ import annotations

import sys

import numpy as np

from plugin_bridge.camera import Camera
from runtime.evaluation.fidelity import held_out_poses
from runtime.evaluation.peers import Open3DTSDF
from runtime.evaluation.truth import TruthSpec, close_up_poses
from runtime.memory import SpatialMemory
from runtime.memory.config import PROVENANCE_OBSERVED
from runtime.metrics import psnr
from runtime.scenes.panda_source import PandaSceneSource, SceneConfig
from runtime.scenes.paths import out_and_back


def memory_of(frames, intrinsics) -> SpatialMemory:
    memory = SpatialMemory()
    for i, (pose, rgb, depth) in enumerate(frames):
        memory.ingest(Camera(intrinsics, pose), rgb, depth, provenance=PROVENANCE_OBSERVED, frame_index=i)
    return memory


def main(family: str, ks: list[int]) -> None:
    spec = TruthSpec()
    with PandaSceneSource(SceneConfig(name=family, width=spec.size, height=spec.size)) as scene:
        k = scene.intrinsics
        n_out = spec.observations * spec.stride
        path = out_and_back(n_out, seed=0)[:n_out]
        observed = [(path[i], *scene.render(path[i])) for i in range(0, n_out, spec.stride)]
        side = spec.views // 2
        margin = spec.stride // 2
        targets = held_out_poses(path, side, seed=0, margin=margin)
        targets += close_up_poses(path, scene, spec.views - side, seed=0, margin=margin)
        full = memory_of(observed, k)
        peer = Open3DTSDF(k)
        for frame in observed:
            peer.integrate(*frame)
        scores: dict[str, list[float]] = {"all": [], **{f"nearest {n}": [] for n in ks}}
        for pose in targets:
            truth, _ = scene.render(pose)
            renders = {"all": full.render(Camera(k, pose))}
            order = sorted(
                range(len(observed)), key=lambda j: np.linalg.norm(observed[j][0][:3, 3] - pose[:3, 3])
            )
            for n in ks:
                nearest = [observed[j] for j in sorted(order[:n])]
                renders[f"nearest {n}"] = memory_of(nearest, k).render(Camera(k, pose))
            both = peer.render(pose)[2]
            for r in renders.values():
                depth = r.depth.numpy()
                both &= np.isfinite(depth) & (depth > 0)
            for name, r in renders.items():
                rgb = np.clip(np.rint(r.rgb.numpy() * 255.0), 0, 255).astype(np.uint8)
                scores[name].append(psnr(rgb, truth, both))
    print(family, {name: round(float(np.mean(v)), 2) for name, v in scores.items()})


if __name__ == "__main__":
    main(sys.argv[1], [int(a) for a in sys.argv[2:]] or [3, 8])
