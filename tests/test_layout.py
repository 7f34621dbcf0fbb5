"""The package's shape: generation stands on its own (it imports nothing from the world, the
judge, training or the study), and no two modules import each other, even lazily."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import magicvideo

ROOT = Path(magicvideo.__file__).parent
LAB = ("magicvideo.world", "magicvideo.judge", "magicvideo.training", "magicvideo.study")
GENERATION = ("magicvideo.pipeline", "magicvideo.presets", "magicvideo.stages", "magicvideo.diffusion",
              "magicvideo.models", "magicvideo.text", "magicvideo.media", "magicvideo.device", "magicvideo.errors",
              "magicvideo.latent", "magicvideo.runlock", "magicvideo.formats", "magicvideo.settings",
              "magicvideo.travel")


def module_names() -> list[str]:
    return ["magicvideo"] + [m.name for m in pkgutil.walk_packages([str(ROOT)], "magicvideo.")]


def source(name: str) -> Path:
    path = ROOT.joinpath(*name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports(name: str, known: set[str]) -> set[str]:
    """The magicvideo modules `name` imports anywhere in its file (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(source(name).read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                       for a in node.names]
        found.update(t for t in targets if t in known and t != name)
    return found


def is_generation(name: str) -> bool:
    return any(name == g or name.startswith(g + ".") for g in GENERATION)


def test_generation_imports_nothing_from_the_lab():
    known = set(module_names())
    offenders = {m: sorted(i for i in imports(m, known) if i.startswith(LAB)) for m in known if is_generation(m)}
    assert not {m: i for m, i in offenders.items() if i}


def test_importing_every_generation_module_loads_no_lab_module():
    names = [m for m in module_names() if is_generation(m)]
    code = ("import importlib, json, sys\n"
            f"for m in {names!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('magicvideo'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    assert set(names) <= set(loaded)
    assert not [m for m in loaded if m.startswith(LAB)]


def test_no_import_cycles():
    known = set(module_names())
    graph = {m: imports(m, known) for m in known}
    # a package importing its own submodules is how packages are built; the reverse edge is what counts
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for m in sorted(known):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles[:3]
