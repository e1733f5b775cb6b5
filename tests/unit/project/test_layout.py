"""The house rules of the source tree (docs/explanation/pipeline.md): torch stays behind the data, evaluation and
core phases; no module imports one that imports it back, at import time or inside a function; stage scripts stay
thin (the README's length: test_readme)."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src"
TORCH_FREE = ("micropatch.core", "micropatch.data", "micropatch.evaluation")


def test_the_torch_free_phases_import_without_torch():
    """Every module of core, data and evaluation, and the package itself (its public API is lazy, PEP 562), in a
    fresh interpreter: torch is not loaded."""
    code = ("import importlib, json, pkgutil, sys\n"
            "import micropatch\n"
            "loaded = []\n"
            f"for name in {TORCH_FREE!r}:\n"
            "    package = importlib.import_module(name)\n"
            "    for info in pkgutil.walk_packages(package.__path__, name + '.'):\n"
            "        importlib.import_module(info.name)\n"
            "        loaded.append(info.name)\n"
            "        if 'torch' in sys.modules:\n"
            "            break\n"
            "print(json.dumps({'torch': 'torch' in sys.modules, 'last': loaded[-1], 'modules': len(loaded)}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["modules"] > 20  # the walk saw the phases' modules, not an empty package
    assert not found["torch"], f"importing {found['last']} loaded torch"


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module under src/ (a package by its __init__)."""
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imported(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The project modules a module imports anywhere in its file (top level or inside a function: a deferred
    import is still a dependency that runs)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    resolved = set()
    for target in targets:  # `from a.b import c`: c is a module, or a name in a.b
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_deferred_cycle(tmp_path):
    """A cycle closed only by an import inside a function is found (the finder is not blind to what it checks)."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import g\n")
    (tmp_path / "c.py").write_text("import a\n")
    known = {p.stem: p for p in tmp_path.glob("*.py")}
    graph = {name: imported(path, name, known) for name, path in known.items()}
    assert import_cycles(graph) == [["a", "b"]]


def test_no_module_imports_one_that_imports_it_back():
    known = modules()
    graph = {name: imported(path, name, known) for name, path in known.items()}
    assert graph["micropatch.cli"], "the import graph is empty: the finder lost its way"
    assert import_cycles(graph) == []


@pytest.mark.parametrize("script", sorted((REPO / "stages").glob("*.py")), ids=lambda p: p.name)
def test_every_stage_script_is_thin(script):
    """Arguments in, one library call: logic lives in src/micropatch, where it is tested and tracked as a dep."""
    assert len(script.read_text().splitlines()) <= 30, f"{script.name}: move the logic into the library"


def test_the_files_make_test_hands_out_first_exist():
    """tests/conftest.py's LONGEST_FIRST: a renamed file would silently fall back to collection order."""
    from conftest import LONGEST_FIRST

    missing = [name for name in LONGEST_FIRST if not (REPO / "tests" / name).is_file()]
    assert not missing, f"tests/conftest.py LONGEST_FIRST names files that do not exist: {missing}"
