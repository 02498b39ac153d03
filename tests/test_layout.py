"""The house rules of the library's layout: one folder per paper, a core that imports no paper, no import
cycles, and cache keys that do not depend on where a method's class lives."""
import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib" / "scribbleseg"
PAPERS = ("blpseg", "urss", "cdsp", "potts")


def _modules():
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(LIB.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        yield name, ast.parse(path.read_text())


def _imports(tree, top_level_only: bool):
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scribbleseg"):
            yield node.module, node
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("scribbleseg"):
                    yield a.name, node


def _paper(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PAPERS else None


def test_core_imports_no_paper_and_papers_import_only_the_core():
    bad = []
    for name, tree in _modules():
        for target, node in _imports(tree, top_level_only=False):
            mine, theirs = _paper(name), _paper(target)
            if theirs is not None and theirs != mine:
                bad.append(f"{name}:{node.lineno} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_function_local_imports_of_the_library():
    """A function-local import hides an import cycle or an import-time cost; the library needs neither."""
    bad = []
    for name, tree in _modules():
        top = {id(n) for n in tree.body}
        bad += [f"{name}:{node.lineno} imports {target} inside a function or block"
                for target, node in _imports(tree, top_level_only=False) if id(node) not in top]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {name: set() for name, _ in _modules()}
    for name, tree in _modules():
        for target, node in _imports(tree, top_level_only=True):
            mod = target
            if isinstance(node, ast.ImportFrom):   # "from scribbleseg.x import y" may name the module x.y
                sub = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in graph]
                graph[name].update(sub)
            while mod not in graph and "." in mod:
                mod = mod.rsplit(".", 1)[0]
            if mod in graph and mod != name:
                graph[name].add(mod)
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)


def _key(method):
    from scribbleseg.data.embedded import EmbeddedConfig
    from scribbleseg.data.folder import ScribbleVariant
    from scribbleseg.experiment import experiment_key
    from scribbleseg.train import TrainConfig

    return experiment_key(EmbeddedConfig(), ScribbleVariant(), TrainConfig(), method)[0]


def _methods():
    from scribbleseg.baseline import PartialCE
    from scribbleseg.blpseg.method import BLPSeg
    from scribbleseg.cdsp.method import CDSP
    from scribbleseg.potts.method import PottsGD, SelfLabeling
    from scribbleseg.urss.method import URSS

    return [(PartialCE(), "e4a5739b2a6e5f91"), (BLPSeg(), "c77343ddf2cf22bf"), (URSS(), "4fb3361b3434ff78"),
            (CDSP(segc=False, dc=False, lorm=False), "145bd35f3b2086a3"), (PottsGD(), "dfd60de956cf5279"),
            (SelfLabeling(), "e04afb32d58184d1")]


@pytest.mark.parametrize("index", range(6))
def test_cache_keys_survive_the_move_to_one_folder_per_paper(index):
    """Keys computed before the methods moved out of ``scribbleseg.methods`` (the hashes are those of the old
    module paths): a method's class attribute NAME keeps them, so no cached run is invalidated."""
    method, before = _methods()[index]
    assert _key(method) == before
    assert type(method).NAME.startswith("scribbleseg.methods.")
