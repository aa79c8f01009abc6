"""Model cards: the JSON file ``NAME.card.json`` that sits next to ``NAME.onnx``.

A card states what the runtime needs to trust and feed a model (file, sha256, input and output
tensors, size rule) and what a reader needs to judge it (kind, honest description, training data and
seed, export command and parity figure, evaluation, licence). ``native_resolution`` is
``[height, width]``. Tensor shapes use ints for fixed axes and strings ("H", "W") for free ones;
``range`` is ``[low, high]`` with ``null`` for an unbounded side.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CARD_SUFFIX = ".card.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelCardError(ValueError):
    """A card is missing, unreadable or malformed; the message names the file and the fix."""


@dataclass
class TensorSpec:
    name: str
    shape: list[int | str]
    dtype: str
    range: list[float | None]
    description: str


@dataclass
class ModelCard:
    name: str
    file: str
    sha256: str
    kind: str
    description: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    native_resolution: list[int]
    size_rule: str
    size_multiple: int
    opset: int
    training: dict[str, Any]
    export: dict[str, Any]
    evaluation: dict[str, Any]
    license: str
    created: str
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept so that a rewrite loses nothing."""

    # -- names ---------------------------------------------------------------------------------------
    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    # -- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        extra = out.pop("extra")
        return {**out, **extra}

    @classmethod
    def from_dict(cls, data: Any, source: str = "<card>") -> ModelCard:
        if not isinstance(data, dict):
            raise ModelCardError(f"{source}: a model card must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        data.setdefault("size_multiple", 8)

        def need(key: str, types: type | tuple[type, ...], what: str) -> Any:
            if key not in data:
                raise ModelCardError(
                    f"{source}: required key {key!r} ({what}) is missing; re-export the model to rewrite its card"
                )
            value = data[key]
            if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
                raise ModelCardError(
                    f"{source}: key {key!r} must be {what}, got {type(value).__name__} {value!r:.80}"
                )
            return value

        name = need("name", str, "a string")
        file = need("file", str, "a file name string")
        if not file or Path(file).name != file:
            raise ModelCardError(f"{source}: 'file' must be a bare file name next to the card, got {file!r}")
        sha256 = need("sha256", str, "a 64-digit lower-case hex string")
        if not _SHA256.match(sha256):
            raise ModelCardError(f"{source}: 'sha256' must be 64 lower-case hex digits, got {sha256!r:.80}")
        kind = need("kind", str, "a string")
        description = need("description", str, "a string")
        inputs = [_tensor(t, f"{source}: inputs[{i}]") for i, t in enumerate(need("inputs", list, "a list"))]
        outputs = [
            _tensor(t, f"{source}: outputs[{i}]") for i, t in enumerate(need("outputs", list, "a list"))
        ]
        if not outputs:
            raise ModelCardError(f"{source}: 'outputs' must list at least one tensor")
        for label, specs in (("inputs", inputs), ("outputs", outputs)):
            names = [t.name for t in specs]
            if len(set(names)) != len(names):
                raise ModelCardError(f"{source}: duplicate tensor names in {label!r}: {names}")
        native = need("native_resolution", list, "[height, width] in pixels")
        if len(native) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in native
        ):
            raise ModelCardError(
                f"{source}: 'native_resolution' must be [height, width] (positive ints), got {native}"
            )
        size_rule = need("size_rule", str, "a string such as 'H and W multiples of 8'")
        size_multiple = need("size_multiple", int, "a positive int")
        if size_multiple < 1:
            raise ModelCardError(f"{source}: 'size_multiple' must be >= 1, got {size_multiple}")
        opset = need("opset", int, "the ONNX opset (int)")
        training = need("training", dict, "an object with data, seed and command")
        export = need("export", dict, "an object with the export command and versions")
        evaluation = need("evaluation", dict, "an object")
        license_ = need("license", str, "an SPDX licence string")
        created = need("created", str, "an ISO-8601 timestamp string")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(
            name=name,
            file=file,
            sha256=sha256,
            kind=kind,
            description=description,
            inputs=inputs,
            outputs=outputs,
            native_resolution=list(native),
            size_rule=size_rule,
            size_multiple=size_multiple,
            opset=opset,
            training=training,
            export=export,
            evaluation=evaluation,
            license=license_,
            created=created,
            extra=extra,
        )

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelCardError(f"{path}: card file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelCardError(f"{path}: cannot read the card ({exc})") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelCardError(
                f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); fix the file or "
                "re-export the model to rewrite it"
            ) from exc
        return cls.from_dict(data, source=str(path))

    def write(self, path: str | Path) -> Path:
        """Write the card as indented JSON (validated first, so a bad card is never written)."""
        path = Path(path)
        data = self.to_dict()
        ModelCard.from_dict(data, source=str(path))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(_dumps(data) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def _dumps(value: Any, indent: str = "") -> str:
    """Indented JSON with lists of scalars kept on one line (shapes, ranges, sizes)."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value)


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _tensor(data: Any, source: str) -> TensorSpec:
    if not isinstance(data, dict):
        raise ModelCardError(f"{source}: a tensor spec must be an object, got {type(data).__name__}")
    for key in ("name", "shape", "dtype", "range", "description"):
        if key not in data:
            raise ModelCardError(
                f"{source}: tensor spec lacks {key!r} (needs name, shape, dtype, range, description)"
            )
    name, shape, dtype, rng, desc = (data[k] for k in ("name", "shape", "dtype", "range", "description"))
    if not isinstance(name, str) or not name:
        raise ModelCardError(f"{source}: 'name' must be a non-empty string, got {name!r}")
    if not isinstance(shape, list) or not all(
        (isinstance(d, int) and not isinstance(d, bool) and d > 0) or (isinstance(d, str) and d)
        for d in shape
    ):
        raise ModelCardError(
            f"{source} ({name}): 'shape' must list positive ints or axis names, got {shape!r}"
        )
    if not isinstance(dtype, str):
        raise ModelCardError(f"{source} ({name}): 'dtype' must be a string such as 'float32', got {dtype!r}")
    if (
        not isinstance(rng, list)
        or len(rng) != 2
        or not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in rng)
    ):
        raise ModelCardError(f"{source} ({name}): 'range' must be [low, high] numbers or null, got {rng!r}")
    if not isinstance(desc, str):
        raise ModelCardError(f"{source} ({name}): 'description' must be a string")
    return TensorSpec(name=name, shape=list(shape), dtype=dtype, range=list(rng), description=desc)
