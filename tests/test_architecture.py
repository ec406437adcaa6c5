"""The import layers and the "a family is one place" rules (docs/architecture.md), checked on the real import graph.

import-linter (``lint-imports``, run by .ci/run) checks the layer contract in pyproject.toml; these tests add what a
contract cannot say: no cycles at all, no module importing the root package, tiny writers only in visionfm.testing,
and an ``import visionfm`` that reads no recipe.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import visionfm

PKG = Path(visionfm.__file__).parent


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("visionfm")


def _sccs(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
    return out


def _sub(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def test_no_cycles_between_files_or_subpackages(graph):
    modules = sorted(graph.modules)
    assert len(modules) > 60  # the whole package was read
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in modules}
    file_cycles = [c for c in _sccs(modules, edges) if len(c) > 1]
    assert file_cycles == []
    sub_edges: dict[str, set[str]] = {}
    for a, bs in edges.items():
        for b in bs:
            if _sub(a) != _sub(b):
                sub_edges.setdefault(_sub(a), set()).add(_sub(b))
    subs = sorted({_sub(m) for m in modules})
    assert [c for c in _sccs(subs, sub_edges) if len(c) > 1] == []


def test_a_cycle_would_be_found():
    # the checker itself can fail: a two-module ring and a self-contained chain
    edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert sorted(map(sorted, (c for c in _sccs(["a", "b", "c"], edges) if len(c) > 1))) == [["a", "b"]]


def test_only_the_top_imports_the_root_package(graph):
    importers = sorted(graph.find_modules_that_directly_import("visionfm"))
    assert importers == []  # cli and the toyworld import the parts they use, never the facade


def test_production_modules_hold_no_tiny_writer():
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        if path.is_relative_to(PKG / "testing"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and (node.name.startswith(("write_tiny", "_write_tiny", "_tiny_"))):
                offenders.append(f"{path.relative_to(PKG)}:{node.name}")
    assert offenders == []
    assert (PKG / "testing" / "clip.py").is_file()  # the writers are there instead


def test_every_family_declares_its_format_and_kind():
    fams = visionfm.foundation.registry.families()
    assert {
        "aimv2",
        "clip",
        "dino",
        "dinov2",
        "dinov3",
        "radio",
        "sam",
        "sam3",
        "dit",
        "pixart",
        "student",
        "timm",
        "detector",
    } <= set(fams)
    for f in fams.values():
        assert f.formats, f.name
        assert f.kind in ("encoder", "detector"), f.name
    assert {n for n, f in fams.items() if f.peft_layout is not None} == {
        "aimv2",
        "clip",
        "dino",
        "dinov2",
        "dinov3",
        "radio",
        "sam",
        "sam3",
        "dit",
        "timm",
    }
    assert {n for n, f in fams.items() if f.dense_tower is not None} == {"clip"}


def test_import_visionfm_reads_no_recipe_or_suite():
    code = (
        "import sys\n"
        "opened = []\n"
        "sys.addaudithook(lambda e, a: opened.append(str(a[0])) if e == 'open' and isinstance(a[0], str) else None)\n"
        "import visionfm\n"
        "names = [m.name for m in visionfm.list_models()]\n"
        "assert 'toyworld-clip' in names and 'owlv2-base' in names, names\n"
        "print('\\n'.join(p for p in opened if p.endswith(('.yaml', '.yml'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
