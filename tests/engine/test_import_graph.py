"""No import circle among kpfast's modules (static: module-level imports, parsed with ast)."""

import ast
from pathlib import Path

import kpfast

PACKAGE_DIR = Path(kpfast.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_imports(tree: ast.Module):
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def _module_level_imports(tree: ast.Module):
    """Import statements executed when the module is imported: not those inside functions."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        else:
            stack.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))


def import_graph(find_imports=_module_level_imports) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in find_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # "from a import b" imports the submodule a.b when there is one, else module a.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_kpfast_imports():
    graph = import_graph()
    assert "kpfast.engine.loop" in graph["kpfast.engine.trainer"]
    assert "kpfast.engine.checkpointer" in graph["kpfast.engine.trainer"]


def test_no_import_cycle_among_kpfast_modules():
    cycles = find_cycles(import_graph())
    assert cycles == [], f"import cycles among kpfast modules: {cycles}"


def test_engine_modules_do_not_import_each_other_in_a_circle_even_inside_functions():
    # Deferred imports hide a circle from Python, not from the reader: the engine has none.
    graph = import_graph(_all_imports)
    engine = {name: {t for t in targets if t.startswith("kpfast.engine")}
              for name, targets in graph.items() if name.startswith("kpfast.engine")}
    assert find_cycles(engine) == []


def test_codecs_and_inference_never_import_the_engine():
    # The codec and the Predictor serve the trainer, kpfast.eval and kpfast.predict alike; the engine
    # passes them what they need (docs/engine.md), so not even a deferred import climbs back up.
    graph = import_graph(_all_imports)
    climbing = {name: sorted(t for t in targets if t.startswith("kpfast.engine"))
                for name, targets in graph.items() if name.startswith(("kpfast.codecs", "kpfast.inference"))}
    assert set(climbing) >= {"kpfast.codecs.heatmap", "kpfast.inference.predictor"}
    assert {name: targets for name, targets in climbing.items() if targets} == {}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for succ in graph[stack.pop()]:
            if succ not in seen:
                seen.add(succ)
                stack.append(succ)
    return seen


def test_no_data_module_imports_the_engine_even_inside_functions_or_through_other_modules():
    # kpfast.data is below the engine (docs/engine.md): its tools (python -m kpfast.data.synthetic,
    # kpfast.data.coco download) run through kpfast.cli, which imports nothing from the engine.
    graph = import_graph(_all_imports)
    data_modules = [name for name in graph if name == "kpfast.data" or name.startswith("kpfast.data.")]
    assert "kpfast.data.synthetic" in data_modules and "kpfast.cli" in graph["kpfast.data.synthetic"]
    offenders = {name: sorted(t for t in _reachable(graph, name) if t == "kpfast.engine" or t.startswith("kpfast.engine."))
                 for name in data_modules}
    assert {name: hits for name, hits in offenders.items() if hits} == {}


def test_reference_and_data_never_import_the_ops_or_the_engine():
    # The torch reference defines the ops' semantics and the data pipeline feeds them (docs/design.md,
    # docs/engine.md): both sit below kpfast.ops and kpfast.engine, so no import of theirs, deferred
    # or through another module, climbs up to either.
    # The root package is left out: importing any kpfast module runs kpfast/__init__.py, which is
    # not an arrow of that module (kpfast._extension's `from kpfast import _C` reads as one).
    graph = {name: targets - {"kpfast"} for name, targets in import_graph(_all_imports).items()}
    lower = [name for name in graph if name.startswith(("kpfast.reference", "kpfast.data"))]
    assert {"kpfast.reference.loss", "kpfast.reference.render", "kpfast.data.loader"} <= set(lower)
    upper = ("kpfast.ops", "kpfast.engine")
    offenders = {name: sorted(t for t in _reachable(graph, name) if t in upper or t.startswith(tuple(u + "." for u in upper)))
                 for name in lower}
    assert {name: hits for name, hits in offenders.items() if hits} == {}
