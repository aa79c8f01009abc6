"""Evaluation: metric definitions (metrics) and cycle tests through the gRPC path (cycle)."""

from runtime.evaluation.metrics import (
    PSNR_CAP_DB,
    RevisitScores,
    context_loss,
    context_loss_reduction,
    contextual_accuracy,
    gradient_energy,
    memory_persistence,
    psnr,
    revisit_scores,
    ssim,
)

__all__ = [
    "PSNR_CAP_DB",
    "RevisitScores",
    "context_loss",
    "context_loss_reduction",
    "contextual_accuracy",
    "gradient_energy",
    "memory_persistence",
    "psnr",
    "revisit_scores",
    "ssim",
]
