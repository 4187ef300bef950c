"""The import contract (docs/architecture.md): which concept may import which, read from every module's source.

    commands  ->  bridge, engine, export       (the command-line front-ends: anything)
    export    ->  engine                       (training and evaluation; the only place torch is imported)
    bridge    ->  engine's tokens, errors and files, and the client side of engine/server
    engine    ->  nothing outside engine; inside it: tokens <- inference <- sessions <- server, render -> tokens

and the code's shape: no module over 400 lines, no function over 60.

Lazy imports inside functions count like the others: a contract broken at run time is broken.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"engine": "musebridge.engine", "bridge": "musebridge.bridge", "export": "musebridge.export",
           "musebridge": "musebridge"}

# The engine's concepts, each with the concepts it may import (besides itself and the engine's top-level modules).
ENGINE_LAYERS = {
    "tokens": set(),
    "render": {"tokens"},
    "inference": {"tokens"},
    "sessions": {"tokens", "inference"},
    "server": {"tokens", "inference", "sessions"},
}
# What the bridge may use of the engine: its vocabulary of notes and files, and the client side of the server.
BRIDGE_MAY_USE = ("musebridge.engine.tokens", "musebridge.engine.errors", "musebridge.engine.files",
                  "musebridge.engine.server.client", "musebridge.engine.server.remote_session",
                  "musebridge.engine.server.protocol", "musebridge.engine.server.wire",
                  "musebridge.engine.server.connection", "musebridge.engine.server.local",
                  "musebridge.engine.server.priority")


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            inside = path.relative_to(ROOT / folder).parts[0]
            if folder == "musebridge" and inside in ("engine", "bridge", "export"):
                continue  # a checkout may link the packages inside musebridge/
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports, absolute (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return out


ALL = modules()
GRAPH = {name: {m for m in imports(name, path) if m.startswith("musebridge") or m.split(".")[0] == "torch"}
         for name, path in ALL.items()}


def concept(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def engine_concept(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[1] == "engine" else None


def violations(rule) -> list[str]:
    return [f"{name} imports {target}" for name, targets in sorted(GRAPH.items()) for target in sorted(targets)
            if (target in ALL and ALL[target].name != "__init__.py" or target.split(".")[0] == "torch")
            and rule(name, target)]


def test_the_contract_sees_every_package():
    assert {concept(m) for m in ALL} >= {"engine", "bridge", "export", "commands"}
    assert {engine_concept(m) for m in ALL} >= set(ENGINE_LAYERS)


def test_torch_only_in_export():
    assert violations(lambda name, target: target.split(".")[0] == "torch" and concept(name) != "export") == []


@pytest.mark.parametrize("package, forbidden", [
    ("engine", {"bridge", "export", "commands", "cli"}),
    ("bridge", {"export", "commands", "cli"}),
    ("export", {"bridge", "commands", "cli"}),
])
def test_packages_import_only_downwards(package, forbidden):
    assert violations(lambda name, target: concept(name) == package and concept(target) in forbidden) == []


def test_bridge_reaches_the_engine_only_through_the_client_and_the_protocols_types():
    def bad(name, target):
        return concept(name) == "bridge" and concept(target) == "engine" and target != "musebridge.engine" \
            and not target.startswith(BRIDGE_MAY_USE)
    assert violations(bad) == []


def test_engine_concepts_import_only_their_layers_below():
    def bad(name, target):
        mine, theirs = engine_concept(name), engine_concept(target)
        return mine is not None and theirs is not None and theirs != mine and theirs not in ENGINE_LAYERS[mine]
    assert violations(bad) == []


def test_no_function_over_60_lines():
    long = [f"{ALL[name].relative_to(ROOT)}: {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for name in ALL for node in ast.walk(ast.parse(ALL[name].read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 60]
    assert long == []


def test_no_module_over_400_lines():
    lines = {p.relative_to(ROOT): len(p.read_text().splitlines()) for p in ALL.values()}
    assert [f"{path}: {n}" for path, n in lines.items() if n > 400] == []
