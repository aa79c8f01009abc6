"""The dependency rules that keep the house easy to change, checked on the source (every import,
at module level or inside a function, followed transitively through the project's own modules).

- `plugin_bridge` never imports `runtime` (a client installs light);
- memory and the generator host never import grpc or protobuf (plain arrays and dataclasses only);
- memory never imports the generator (the session joins them);
- serving (server, session, registry, wire, config, types, memory, generator host) never imports
  training, evaluation or the demo;
- Panda3D only in the scene source (`runtime.scenes`) and the engine plugin (`plugin_bridge.panda3d_plugin`),
  by direct import (the demo and training reach it through the scene source);
- no import cycles between the project's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "plugin_bridge")
WIRE = ("grpc", "grpc_health", "grpc_reflection", "google.protobuf", "mirage")
PANDA = ("panda3d", "direct")
SERVING = (
    "runtime.server",
    "runtime.session",
    "runtime.registry",
    "runtime.wire",
    "runtime.config",
    "runtime.types",
    "runtime.allocator",
    "runtime.memory",
    "runtime.generator",
)
MODEL_BUILDING = ("runtime.training", "runtime.evaluation", "runtime.demo")
PANDA_ALLOWED = ("runtime.scenes", "plugin_bridge.panda3d_plugin", "plugin_bridge.samples")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """Module name -> names it imports (project modules resolved to the module, not its package,
    where ``from package import module`` names one; other names as written)."""
    files = {_module_name(root, p): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in files else base)
        graph[name] = targets
    return graph


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every name ``start`` imports directly or through project modules, with one chain to it."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        here = todo.pop()
        for target in sorted(graph.get(here, ())):
            if target not in chains:
                chains[target] = [*chains[here], target]
                if target in graph:
                    todo.append(target)
    return chains


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Each broken rule, with the import chain that breaks it."""
    found = []

    def forbid(sources, banned, rule, allowed=(), direct=False):
        for module in sorted(graph):
            if not _within(module, sources) or _within(module, allowed):
                continue
            chains = {t: [module, t] for t in graph[module]} if direct else reachable(graph, module)
            for target, chain in chains.items():
                if target != module and _within(target, banned):
                    found.append(f"{rule}: {' -> '.join(chain)}")

    forbid(("plugin_bridge",), ("runtime",), "plugin_bridge imports runtime")
    forbid(("runtime.memory", "runtime.generator"), WIRE, "memory/generator imports grpc or protobuf")
    forbid(("runtime.memory",), ("runtime.generator",), "memory imports the generator")
    forbid(SERVING, MODEL_BUILDING, "serving imports training, evaluation or the demo")
    forbid(PACKAGES, PANDA, "Panda3D outside the scene source and the engine plugin", PANDA_ALLOWED, True)
    found += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of project modules (Tarjan), as a closed chain."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for group in groups:
        members = set(group)
        sub = {v: {w for w in graph[v] if w in members} for v in group}
        chain = reachable(sub, group[0])
        back = next(v for v in sorted(chain) if group[0] in sub[v])
        out.append([*chain[back], group[0]])
    return out


def test_the_project_keeps_every_rule():
    graph = import_graph(ROOT)
    assert "runtime.memory.spatial" in graph and "plugin_bridge.client" in graph  # the walk saw the tree
    assert violations(graph) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"plugin_bridge/client.py": "def f():\n    import runtime.server\n"},
            "plugin_bridge imports runtime",
        ),
        (
            {"runtime/memory/__init__.py": "", "runtime/memory/spatial.py": "import grpc\n"},
            "grpc or protobuf",
        ),
        (
            {
                "runtime/memory/__init__.py": "",
                "runtime/memory/a.py": "from runtime.memory import b\n",
                "runtime/memory/b.py": "from google.protobuf import message\n",
            },
            "runtime.memory.a -> runtime.memory.b -> google.protobuf",
        ),
        (
            {
                "runtime/memory/__init__.py": "",
                "runtime/memory/x.py": "from runtime.generator.host import H\n",
            },
            "memory imports the generator",
        ),
        (
            {
                "runtime/session.py": "from runtime.util import u\n",
                "runtime/util.py": "from runtime.training.train import train\n",
            },
            "serving imports training",
        ),
        ({"runtime/server.py": "import runtime.demo\n"}, "serving imports training, evaluation or the demo"),
        (
            {"runtime/evaluation/__init__.py": "", "runtime/evaluation/x.py": "import panda3d.core\n"},
            "Panda3D",
        ),
        (
            {"runtime/a.py": "from runtime import b\n", "runtime/b.py": "from . import a\n"},
            "import cycle: runtime.a -> runtime.b -> runtime.a",
        ),
    ],
)
def test_each_rule_catches_its_breach(tmp_path, files, expected):
    found = violations(import_graph(_tree(tmp_path, files)))
    assert any(expected in line for line in found), found


def test_allowed_imports_pass(tmp_path):
    files = {
        "runtime/scenes/__init__.py": "",
        "runtime/scenes/source.py": "from panda3d import core\n",
        "plugin_bridge/panda3d_plugin.py": "from direct.showbase.ShowBase import ShowBase\n",
        "runtime/training/__init__.py": "",
        "runtime/training/train.py": "from runtime.session import Session\n",
        "runtime/session.py": "from plugin_bridge.camera import Camera\n",
        "plugin_bridge/camera.py": "import numpy\n",
    }
    assert violations(import_graph(_tree(tmp_path, files))) == []
