"""Command-line flags built from the config dataclasses: one place for each default and its help.

A `Flag` names a field of a config object by its dotted path (``"server.port"``, a dict entry as
``"data.examples.train"``); `add_flags` gives the parser one option per flag, with the field's type,
its current value as the default and the field's docstring as the help; `apply_flags` writes the
parsed values back. A flag may be in other units than its field (``scale``: ``--budget-mib`` for
``memory.budget_bytes``). Tuples are comma-separated lists; booleans get ``--x`` / ``--no-x``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import typing
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Flag:
    path: str
    """Dotted path of the field in the config object; a dict's entry is its key."""
    name: str = ""
    """The option (``--budget-mib``); default: the path's last part, dashed."""
    scale: float = 1
    """The field holds flag value x scale (MiB flags of byte fields)."""
    unit: str = ""
    """The flag's unit, said with its default (``MiB``)."""
    help: str = ""
    """Help where the field has no docstring of its own (a dict entry)."""
    choices: tuple = ()
    """Allowed values, when the field takes a few."""

    @property
    def option(self) -> str:
        return self.name or "--" + self.path.rpartition(".")[2].replace("_", "-")

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal under each field), one line each."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _resolve(config, path: str):
    """(owner, key, value, annotation, doc) of the field at ``path``."""
    *parents, key = path.split(".")
    owner = config
    for part in parents:
        owner = owner[part] if isinstance(owner, dict) else getattr(owner, part)
    if isinstance(owner, dict):
        value = owner[key]
        return owner, key, value, type(value), ""
    if not dataclasses.is_dataclass(owner) or key not in {f.name for f in dataclasses.fields(owner)}:
        raise AttributeError(f"{type(owner).__name__} has no field {key!r} (flag path {path!r})")
    hint = typing.get_type_hints(type(owner)).get(key, type(getattr(owner, key)))
    return owner, key, getattr(owner, key), hint, field_docs(type(owner)).get(key, "")


def _element_type(hint) -> type:
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    return args[0] if args else str


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def add_flags(parser: argparse.ArgumentParser, config, flags: list[Flag]) -> None:
    """One option per flag on ``parser``, its default the field's value in ``config``."""
    for flag in flags:
        _, _, value, hint, doc = _resolve(config, flag.path)
        help_text = (flag.help or doc).replace("%", "%%")  # argparse formats help with %
        kwargs: dict = {"dest": flag.dest}
        origin = typing.get_origin(hint) or hint
        if origin is bool:
            parser.add_argument(
                flag.option, action=argparse.BooleanOptionalAction, default=value, help=help_text, **kwargs
            )
            continue
        if origin is tuple:
            element = _element_type(hint)
            kwargs["type"] = lambda text, t=element: tuple(t(v.strip()) for v in text.split(",") if v.strip())
            shown = _format(value)
        else:
            shown = f"{value / flag.scale:g}" if flag.scale != 1 else value
            kind = type(value) if value is not None else str
            kwargs["type"] = float if flag.scale != 1 else (Path if isinstance(value, Path) else kind)
        if flag.choices:
            kwargs["choices"] = flag.choices
        parser.add_argument(
            flag.option,
            default=shown,
            help=f"{help_text} (default: {' '.join(filter(None, (_format(shown), flag.unit))) or 'none'})",
            **kwargs,
        )


def apply_flags(args: argparse.Namespace, config, flags: list[Flag]):
    """Write the parsed ``args`` into ``config`` (returned, changed in place)."""
    for flag in flags:
        owner, key, _, hint, _ = _resolve(config, flag.path)
        value = getattr(args, flag.dest)
        if flag.scale != 1:
            value = type(getattr(owner, key) if not isinstance(owner, dict) else owner[key])(
                value * flag.scale
            )
        if isinstance(owner, dict):
            owner[key] = value
        else:
            setattr(owner, key, value)
    return config
