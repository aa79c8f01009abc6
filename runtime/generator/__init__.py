"""Generators: exported ONNX models that complete a memory render (colour and depth).

`GeneratorHost` loads a model by name after checking its sha256 against its card and runs it on
onnxruntime. torch is needed only to build and export models (`runtime.training`, `mirage export NAME`), not to run.
"""

from runtime.generator.card import ModelCard, ModelCardError, TensorSpec
from runtime.generator.host import (
    CONTRACT_INPUTS,
    CONTRACT_OUTPUTS,
    GeneratorConfig,
    GeneratorHost,
    ModelContractError,
    ModelIntegrityError,
    ModelNotFoundError,
    available_models,
    default_models_dir,
)

__all__ = [
    "CONTRACT_INPUTS",
    "CONTRACT_OUTPUTS",
    "GeneratorConfig",
    "GeneratorHost",
    "ModelCard",
    "ModelCardError",
    "ModelContractError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "TensorSpec",
    "available_models",
    "default_models_dir",
]
