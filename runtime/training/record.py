"""The card's ``training`` block: the command line and the record of a `mirage train` run, read
from the metadata the run wrote into its safetensors (no pickle)."""

from __future__ import annotations

import os
from pathlib import Path


class ExportError(RuntimeError):
    """Export or its parity check failed; nothing was written."""


def _home(path: str) -> str:
    home = str(Path.home())
    return "~" + path[len(home) :] if path.startswith(home + os.sep) else path


def train_command(config: dict) -> str:
    """The ``mirage train`` command line that runs a training ``config`` (as saved by the run)."""
    from dataclasses import asdict

    from runtime.training.train import TrainConfig

    d = asdict(TrainConfig())
    parts = ["mirage train"]
    if config["run_dir"] != d["run_dir"]:
        parts.append(f"--run {_home(config['run_dir'])}")
    if config.get("init"):
        parts.append(f"--init {_home(config['init'])}")
    if config["model"].get("detail"):
        parts.append("--detail")
    if config["model"].get("anchored"):
        parts.append("--anchored")
    if config.get("palette"):
        parts.append("--palette")
    if config["data"].get("train_families"):
        parts.append(f"--train-families {','.join(config['data']['train_families'])}")
        parts.append(f"--family-share {config['data']['family_share']:g}")
    parts.append(f"--steps {config['steps']}")
    for key, flag in (("lr", "--lr"), ("warmup", "--warmup"), ("seed", "--seed")):
        if config[key] != d[key]:
            parts.append(f"{flag} {config[key]:g}")
    if config["loss"].get("logmse"):
        parts.append(f"--logmse {config['loss']['logmse']:g}")
    fixed = {k: config[k] for k in ("batch", "crop", "weight_decay", "threads") if config[k] != d[k]}
    fixed.update(
        {f"loss.{k}": v for k, v in config["loss"].items() if k != "logmse" and v != d["loss"].get(k)}
    )
    fixed.update(
        {
            f"model.{k}": v
            for k, v in config["model"].items()
            if k not in ("detail", "anchored") and list(v) != list(d["model"][k])
        }
    )
    if fixed:
        parts.append(f"(TrainConfig fields not on the command line: {fixed})")
    return " ".join(parts)


def _family_words(data: dict) -> str:
    families = data.get("train_families") or []
    if not families:
        return ""
    return f" and worlds of the scene families {', '.join(families)} ({100 * data['family_share']:g}% of arrangements)"


def training_record(weights: str | Path) -> dict:
    """The card's ``training`` block, from the metadata ``mirage train`` writes into model.safetensors.
    A run started from an earlier one's weights (``--init``) lists both under ``stages``; its command,
    steps and wall time are the whole chain's."""
    import json

    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as fh:
        meta = fh.metadata() or {}
    if "config" not in meta:
        raise ExportError(f"{weights}: no training metadata; export weights written by `mirage train`")
    config, history = json.loads(meta["config"]), json.loads(meta.get("history", "{}"))
    data = config["data"]
    val = history.get("val", [])
    record = {
        "command": train_command(config),
        "data": (
            f"{sum(data['examples'].values())} examples rendered by Panda3D through Mirage's own memory at "
            f"{data['size']}x{data['size']} (train {data['examples']['train']}: random arrangements of the wheel's "
            f"models plus jittered garden variants{_family_words(data)}; val {data['examples']['val']}: held-out random arrangements; "
            f"test {data['examples']['test']}: the courtyard scene, never trained on, and held-out arrangements); "
            f"K = {data['context_views'][0]}-{data['context_views'][1]} context views; target kinds small, turn, "
            "close, back, far, empty (runtime/training/dataset.py)"
        ),
        "dataset_config": data,
        "seed": config["seed"],
        "steps": int(meta.get("step", 0)),
        "batch": config["batch"],
        "crop": config["crop"],
        "lr": config["lr"],
        "losses": config["loss"],
        "wall_minutes": round(float(history.get("seconds", 0.0)) / 60.0, 1),
        "hardware": f"this machine: {os.cpu_count()} CPU cores, no GPU (torch threads = {config['threads']})",
        "validation_first": val[0] if val else None,
        "validation_last": val[-1] if val else None,
        "checkpoint_format": "safetensors",
    }
    init = config.get("init")
    if not init:
        return record
    if not Path(init).is_file():
        raise ExportError(
            f"{weights} was trained from {init}, which is gone: the card must record that first stage too"
        )
    first = training_record(init)
    if first["dataset_config"] != data:
        raise ExportError(f"{weights} and the run it started from ({init}) used different datasets")
    keys = ("command", "steps", "lr", "losses", "wall_minutes", "validation_first", "validation_last")
    stages = first.get("stages") or [{k: first[k] for k in keys}]
    stages = [*stages, {k: record[k] for k in keys}]
    return {
        **record,
        "command": " && ".join(st["command"] for st in stages),
        "steps": sum(st["steps"] for st in stages),
        "wall_minutes": round(sum(st["wall_minutes"] for st in stages), 1),
        "validation_first": stages[0]["validation_first"],
        "stages": stages,
    }
