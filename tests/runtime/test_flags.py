"""runtime.flags and the `mirage` parser: flags built from the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runtime import cli
from runtime.config import RuntimeConfig
from runtime.flags import Flag, add_flags, apply_flags

MiB = 2**20


@dataclass
class Inner:
    budget_bytes: int = 8 * MiB
    """Bytes memory may hold."""
    on: bool = False
    """Switch it on."""


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = (128, 256)
    """Frame sizes."""
    out: Path = Path("out")
    """Output folder."""
    name: str | None = None
    """A name, or none."""
    counts: dict[str, int] = field(default_factory=lambda: {"train": 10})
    mode: str = "full"
    """Storage mode."""


FLAGS = [
    Flag("inner.budget_bytes", "--budget-mib", scale=MiB, unit="MiB"),
    Flag("inner.on"),
    Flag("sizes"),
    Flag("out"),
    Flag("name"),
    Flag("counts.train", "--train", help="Training examples."),
    Flag("mode", choices=("full", "quantised")),
]


def parse(argv: list[str]) -> Outer:
    parser = argparse.ArgumentParser()
    add_flags(parser, Outer(), FLAGS)
    return apply_flags(parser.parse_args(argv), Outer(), FLAGS)


def test_no_flags_give_the_dataclass_defaults():
    assert parse([]) == Outer()


def test_each_kind_of_flag_reaches_its_field():
    got = parse(
        ["--budget-mib", "2.5", "--on", "--sizes", "64, 96", "--out", "x/y", "--name", "n", "--train", "7",
         "--mode", "quantised"]
    )  # fmt: skip
    assert got.inner == Inner(budget_bytes=int(2.5 * MiB), on=True)
    assert got.sizes == (64, 96) and got.out == Path("x/y") and got.name == "n"
    assert got.counts == {"train": 7} and got.mode == "quantised"
    assert Outer().counts == {"train": 10}  # the default is untouched


def test_help_comes_from_the_field_docstrings_with_defaults_and_units():
    parser = argparse.ArgumentParser()
    add_flags(parser, Outer(), FLAGS)
    text = " ".join(parser.format_help().split())
    assert "Bytes memory may hold. (default: 8 MiB)" in text
    assert "Frame sizes. (default: 128,256)" in text
    assert "A name, or none. (default: none)" in text
    assert "Training examples. (default: 10)" in text


def test_a_bad_value_or_path_is_refused():
    with pytest.raises(SystemExit):
        parse(["--mode", "zip"])
    with pytest.raises(AttributeError, match="Inner has no field 'budget'"):
        add_flags(argparse.ArgumentParser(), Outer(), [Flag("inner.budget")])


@pytest.mark.parametrize(
    ("command", "config", "flags"),
    [
        ("serve", "runtime.config:RuntimeConfig", cli.SERVE_FLAGS),
        ("demo", "runtime.demo:DemoConfig", cli.DEMO_FLAGS),
        ("eval", "runtime.evaluation.suite:EvalConfig", cli.EVAL_FLAGS),
        ("eval", "runtime.evaluation.budget:BudgetConfig", cli.BUDGET_FLAGS),
        ("bench", "runtime.evaluation.bench:BenchConfig", cli.BENCH_FLAGS),
        ("train", "runtime.training.train:TrainConfig", cli.TRAIN_FLAGS),
    ],
)
def test_every_command_defaults_to_its_config_and_documents_each_flag(command, config, flags):
    import importlib

    module, _, name = config.partition(":")
    cls = getattr(importlib.import_module(module), name)
    args = cli.build_parser(command).parse_args([command])
    assert apply_flags(args, cls(), flags) == cls()
    sub = next(a for a in cli.build_parser(command)._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        if action.dest != "help":
            assert action.help and not action.help.startswith("(default"), (
                f"{command} {action.option_strings}"
            )
    assert "--" in sub.choices[command].format_help()  # renders: a '%' in a docstring is escaped


def test_serve_flags_set_the_runtime_config():
    args = cli.build_parser("serve").parse_args(
        ["serve", "--port", "0", "--budget-mib", "64", "--generator", "pushpull_v1"]
    )
    config = apply_flags(args, RuntimeConfig(), cli.SERVE_FLAGS)
    assert (config.server.port, config.memory.budget_bytes, config.generator.name) == (
        0,
        64 * MiB,
        "pushpull_v1",
    )
    assert dataclasses.asdict(config.sessions) == dataclasses.asdict(type(config.sessions)())
