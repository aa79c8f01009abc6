"""Helpers shared by the learned-generator tests: contract inputs as tensors, a randomised model."""

from __future__ import annotations

import torch

from runtime.training.export import random_inputs
from runtime.training.learned import INPUTS, LearnedConfig, LearnedFiller

SMALL = LearnedConfig(widths=(8, 8, 16), dilations=(1, 2))


def inputs(h: int, w: int, seed: int) -> list[torch.Tensor]:
    """The five contract inputs [1,C,H,W] (random holes, see ``export.random_inputs``), in order."""
    feeds = random_inputs(INPUTS, h, w, seed)
    return [torch.from_numpy(feeds[n]) for n in INPUTS]


def randomised(config: LearnedConfig = SMALL, seed: int = 1) -> LearnedFiller:
    """A model with every parameter drawn from N(0, 0.1): its head is not zero, so it does something."""
    torch.manual_seed(seed)
    model = LearnedFiller(config)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model.eval()
