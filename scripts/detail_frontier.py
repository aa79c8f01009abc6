"""Fidelity against sharpness across a generator's detail strengths, on the held-out test split.

    python scripts/detail_frontier.py [--model learned_v2] [--details 0,0.25,0.5,1,1.5,2,3] [--json PATH]

Scores the model at each strength (``NAME@DETAIL``) and push-pull side by side, exactly as
``mirage export --evaluate`` does (runtime.training.scoring.score_examples): PSNR over the
filled pixels, whole-frame SSIM, gradient-energy ratio of the filled pixels to the truth's. Prints a
markdown table; ``--json`` also writes the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="learned_v2", help="a model with detail control")
    parser.add_argument("--details", default="0,0.25,0.5,1,1.5,2,3", help="comma-separated strengths")
    parser.add_argument("--baseline", default="pushpull_v1")
    parser.add_argument("--json", default="", help="also write the rows here")
    args = parser.parse_args(argv)

    from runtime.training.dataset import DatasetConfig, Split, build_dataset
    from runtime.training.scoring import compare_generators

    data = DatasetConfig()
    split = Split(build_dataset(data, splits=("test",)) / "test")
    labels = [f"{args.model}@{float(d):g}" for d in args.details.split(",") if d.strip()]
    rows = compare_generators([*labels, args.baseline], split, data.fov_x_deg, timing=False)
    base = rows[-1]
    print(f"held-out test split: {len(split)} examples, dataset {data.key()}")
    print("| generator | PSNR filled | vs baseline | SSIM all | vs baseline | gradient ratio |")
    print("|:--|--:|--:|--:|--:|--:|")
    for r in rows:
        print(
            f"| {r['generator']} | {r['psnr_filled']:.2f} | {r['psnr_filled'] - base['psnr_filled']:+.2f} | "
            f"{r['ssim_all']:.4f} | {r['ssim_all'] - base['ssim_all']:+.4f} | {r['gradient_ratio']:.3f} |"
        )
    if args.json:
        out = {"dataset": data.key(), "examples": len(split), "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
