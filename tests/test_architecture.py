"""The package's import structure: no import circles, and the layering rules (which parts
never import which), read from the tables of ``docs/architecture.md``.

Every ``import`` of an ``mce`` module counts, at module level or inside a function, except
those under ``if TYPE_CHECKING:`` (annotations only, never executed). ``from mce.a import b``
depends on ``mce.a.b`` when that is a module, else on ``mce.a``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import mce

ROOT = Path(mce.__file__).parent
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in ROOT.rglob("*.py")}


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                if base == "mce" and alias.name.startswith("_C"):
                    continue  # the compiled kernels: an extension module, no Python imports
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    resolved = {_resolve(name) for name in found if name == "mce" or name.startswith("mce.")}
    return {name for name in resolved if name and name != module}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def _importers(part: str, targets: tuple[str, ...]) -> list[str]:
    """``module -> target`` for every module under ``part`` importing one of ``targets``."""
    return sorted(
        f"{module} -> {target}"
        for module, imported in GRAPH.items()
        if module == part or module.startswith(part + ".")
        for target in imported
        if any(target == t or target.startswith(t + ".") for t in targets)
    )


def test_the_checker_sees_imports_and_cycles() -> None:
    assert "mce.ops" in GRAPH["mce.science.shapley"] and "mce.ops._checks" in GRAPH["mce.ops.plans"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    assert _cycles(GRAPH) == []


def test_methods_never_import_tasks_config_or_the_driver() -> None:
    assert _importers("mce.methods", ("mce.tasks", "mce.training", "mce.train")) == []


def test_tasks_never_import_the_driver() -> None:
    driver = tuple(
        m for m in MODULES if m.startswith("mce.training.") and m != "mce.training.config"
    )
    assert _importers("mce.tasks", ("mce.train", *driver)) == []


def test_data_never_imports_nn() -> None:
    assert _importers("mce.data", ("mce.nn",)) == []


def test_config_imports_nothing_of_tasks_or_methods() -> None:
    assert _importers("mce.training.config", ("mce.tasks", "mce.methods")) == []


def test_report_lives_in_experiment() -> None:
    assert "mce.experiment.report" in MODULES
    assert GRAPH["mce.report"] == {"mce.experiment.report"}  # the command's name only


def _defines(module: str, name: str) -> bool:
    tree = ast.parse(MODULES[module].read_text())
    return name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_shapley_weight_lives_on_the_floor_once() -> None:
    assert _defines("mce.support.bits", "shapley_weight")
    assert not _defines("mce.science.shapley", "shapley_weight")
    assert not _defines("mce.ops.reference", "shapley_weight")


def test_the_references_never_import_the_method_layer() -> None:
    science = ("mce.science", "mce.methods")
    assert _importers("mce.ops.reference", science) == []
    assert _importers("mce.ops", science) == []


def test_running_weights_is_the_record_and_lce_is_free_of_model_code() -> None:
    assert _importers("mce.training", ("mce.inference",)) == []  # training never needs prediction
    assert _importers("mce.science.lce", ("mce.nn",)) == []
    assert _importers("mce.nn", ("mce.data",)) == []  # the BEV grid lives on the floor


def _tables() -> tuple[dict[str, list[str]], list[tuple[str, str, str]]]:
    """(part -> its files and folders, [(from, to, why)]) from ``docs/architecture.md``."""
    text = ARCHITECTURE.read_text()
    parts_text = text.split("## Parts")[1].split("## Never")[0]
    parts = {
        match[1]: re.findall(r"`([^`]+)`", match[2])
        for match in re.finditer(r"^\| (\w+) \| (`.*?`) \| .* \|$", parts_text, flags=re.M)
    }
    never_text = text.split("## Never")[1].split("\n## ")[0]
    rules = re.findall(r"^\| (\w+) \| (\w+) \| (.+) \|$", never_text, flags=re.M)
    return parts, [rule for rule in rules if rule[0] != "from"]


PARTS, RULES = _tables()


def _part(module: str) -> str | None:
    """The part of the most specific place in the table that holds ``module``."""
    path = "src/" + MODULES[module].relative_to(ROOT.parent).as_posix()
    holding = [
        (len(place), name)
        for name, places in PARTS.items()
        for place in places
        if path == place or (place.endswith("/") and path.startswith(place))
    ]
    return max(holding)[1] if holding else None


def test_the_tables_are_read() -> None:
    assert {"Face", "Driver", "Science", "Base"} <= set(PARTS) and len(RULES) >= 15
    assert all(a in PARTS and b in PARTS for a, b, _ in RULES)


def test_every_module_belongs_to_one_part() -> None:
    assert [module for module in MODULES if _part(module) is None] == []


def test_no_import_breaks_a_rule_of_the_docs() -> None:
    broken = [
        f"{module} -> {target} ({a} never imports {b}: {why})"
        for a, b, why in RULES
        for module, targets in GRAPH.items()
        if _part(module) == a
        for target in targets
        if _part(target) == b
    ]
    assert broken == []


ENTRY_POINTS = {
    "train.py": "mce.training",
    "predict.py": "mce.inference",
    "report.py": "mce.experiment",
}


def test_the_top_level_holds_the_face_and_the_entry_points_only() -> None:
    assert sorted(path.name for path in ROOT.glob("*.py")) == sorted(["__init__.py", *ENTRY_POINTS])
    for name, package in ENTRY_POINTS.items():  # each a thin door to its own package
        module = _module_name(ROOT / name)
        assert GRAPH[module] and all(t.startswith(package + ".") for t in GRAPH[module])


def test_every_package_says_what_it_holds_and_may_import() -> None:
    for init in ROOT.rglob("__init__.py"):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and len(docstring.split()) >= 8, init
        if init.parent.parent == ROOT:  # a part's package: what it may import, too
            assert "import" in docstring, init
