"""The package's import layers hold: no module imports a module of a higher layer.

Layers, low to high (:data:`LAYERS`; the README's "Layout" table in data-flow order):

    foundations → tables, metric, DICOM, synthetic data → registration → localisation → crops
    → models → training → inference → applications (run, recipes, the CLI, Kaggle publishing)

A module may import modules of its own layer and of lower ones, never of a higher one. Every
``import``/``from … import`` in the source counts wherever it stands: at the top, inside a
function (a deferred import is still a dependency), under ``try``, and under
``if TYPE_CHECKING:`` — a type a lower layer needs from a higher one belongs in the lower
layer. Relative imports are resolved; ``from package import name`` counts as an import of the
submodule ``package.name`` when there is one. Imports by string (``importlib.import_module``)
are not seen; the CLI's dispatch to its own subcommands is the only one, within its layer.

Within a layer, modules must not import each other in a cycle (:func:`import_cycles`).

Every module must belong to a layer: a new top-level module or subpackage fails
:func:`test_every_module_has_a_layer` until it is added to :data:`LAYERS`.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "rsna_lumbar"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", (PACKAGE, "vocabulary", "atomic", "layout", "parallel", "geometry", "devices",
                     "provenance")),
    ("tables, metric, DICOM, synthetic data", ("tables", "points", "metric", "submission",
                                               "priors", "folds", "dicom", "synth")),
    ("registration", ("registration",)),
    ("localisation", ("localize",)),
    ("crops", ("crops",)),
    ("models", ("models",)),
    ("training", ("training",)),
    ("inference", ("inference",)),
    ("applications", ("run", "recipes", "cli", "publish", "__main__")),
)
"""``(layer, members)`` low to high. A member is a module or a subpackage (with everything in
it), named relative to the package; :data:`PACKAGE` itself stands for the package's
``__init__`` only."""

KNOWN_CYCLES: tuple[frozenset[str], ...] = ()
"""Import cycles that exist and are to be removed; a new cycle fails, and so does an entry
here whose cycle is gone (delete the entry)."""


@dataclass(frozen=True)
class Import:
    """``module`` (in ``file`` at ``line``) imports ``target``."""

    module: str
    file: Path
    line: int
    target: str


def package_modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name → source file of every ``.py`` file under ``root`` (the package)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def package_imports(root: Path, package: str = PACKAGE) -> list[Import]:
    """Every import of a module of ``package`` by a module of it (module docstring)."""
    modules = package_modules(root, package)
    found = []
    for module, path in modules.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[:len(here.split(".")) - node.level + 1]
                    source = ".".join([*base, node.module] if node.module else base)
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules
                           else source for alias in node.names]  # fmt: skip
            else:
                continue
            found += [Import(module, path, node.lineno, target) for target in dict.fromkeys(targets)
                      if target.split(".")[0] == package and target != module]  # fmt: skip
    return found


def layer_of(module: str, package: str = PACKAGE) -> int | None:
    """Index in :data:`LAYERS` of the member ``module`` belongs to (the longest match); None
    when it belongs to none."""
    best, length = None, -1
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            name = package if member == PACKAGE else f"{package}.{member}"
            prefix = member != PACKAGE and module.startswith(name + ".")
            if (module == name or prefix) and len(name) > length:
                best, length = index, len(name)
    return best


def unassigned(root: Path, package: str = PACKAGE) -> list[str]:
    """Modules of the package that no layer holds."""
    return [m for m in package_modules(root, package) if layer_of(m, package) is None]


def upward_imports(root: Path, package: str = PACKAGE) -> list[str]:
    """One line per import of a higher layer's module: ``file:line: module (layer) imports
    target (layer)``."""
    lines = []
    for imp in sorted(package_imports(root, package), key=lambda i: (i.file, i.line)):
        low, high = layer_of(imp.module, package), layer_of(imp.target, package)
        if low is not None and high is not None and high > low:
            lines.append(f"{imp.file.relative_to(root.parent)}:{imp.line}: {imp.module} "
                         f"({LAYERS[low][0]}) imports {imp.target} ({LAYERS[high][0]})")
    return lines


def import_cycles(root: Path, package: str = PACKAGE) -> list[frozenset[str]]:
    """The sets of modules that import each other in a cycle (strongly connected, > 1 module)."""
    graph: dict[str, set[str]] = {m: set() for m in package_modules(root, package)}
    for imp in package_imports(root, package):
        if imp.target in graph:
            graph[imp.module].add(imp.target)
    order, low, stack, cycles = {}, {}, [], []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        order[node] = low[node] = len(order)
        stack.append(node)
        for succ in sorted(graph[node]):
            if succ not in order:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], order[succ])
        if low[node] == order[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                cycles.append(frozenset(component))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return cycles


def test_every_module_has_a_layer():
    missing = unassigned(SOURCE)
    assert not missing, ("modules in no layer: assign each (or its subpackage) a layer in LAYERS "
                         "of tests/test_layers.py:\n  " + "\n  ".join(missing))


def test_every_layer_member_exists():
    modules = package_modules(SOURCE)
    stale = [member for _, members in LAYERS for member in members
             if not any(m == f"{PACKAGE}.{member}" or m.startswith(f"{PACKAGE}.{member}.")
                        for m in modules) and member != PACKAGE]  # fmt: skip
    assert not stale, f"LAYERS names modules that do not exist (remove them): {stale}"


def test_no_module_imports_a_higher_layer():
    upward = upward_imports(SOURCE)
    assert not upward, (f"{len(upward)} import(s) of a higher layer (move the code the import "
                        "needs down a layer, or the importer up):\n" + "\n".join(upward))


def test_no_import_cycles():
    cycles = set(import_cycles(SOURCE))
    new = sorted(sorted(c) for c in cycles - set(KNOWN_CYCLES))
    gone = sorted(sorted(c) for c in set(KNOWN_CYCLES) - cycles)
    assert not new, f"modules importing each other in a cycle: {new}"
    assert not gone, f"these cycles are gone: delete them from KNOWN_CYCLES: {gone}"


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / PACKAGE
    shutil.copytree(SOURCE, root, ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    return root


def _append(path: Path, text: str) -> int:
    """Append ``text`` to ``path``; returns the line number of its first line."""
    old = path.read_text(encoding="utf-8")
    path.write_text(old + text, encoding="utf-8")
    return old.count("\n") + 1


def test_planted_upward_imports_are_flagged(tmp_path):
    """Every form of import counts: deferred, relative, ``from package import module``, under
    ``TYPE_CHECKING``."""
    root = _copy(tmp_path)
    before = set(upward_imports(root))
    deferred = _append(root / "vocabulary.py",
                       "\n\ndef _planted():\n    from rsna_lumbar.cli import main\n")
    relative = _append(root / "models" / "registry.py", "\nfrom ..training import loop\n")
    package = _append(root / "dicom" / "stacks.py", "\nfrom rsna_lumbar import inference\n")
    typing = _append(root / "crops" / "montage.py",
                     "\nif TYPE_CHECKING:\n    import rsna_lumbar.models.network\n")
    found = [line for line in upward_imports(root) if line not in before]
    assert found == [
        f"{PACKAGE}/crops/montage.py:{typing + 2}: rsna_lumbar.crops.montage (crops) imports "
        "rsna_lumbar.models.network (models)",
        f"{PACKAGE}/dicom/stacks.py:{package + 1}: rsna_lumbar.dicom.stacks (tables, metric, "
        "DICOM, synthetic data) imports rsna_lumbar.inference (inference)",
        f"{PACKAGE}/models/registry.py:{relative + 1}: rsna_lumbar.models.registry (models) "
        "imports rsna_lumbar.training.loop (training)",
        f"{PACKAGE}/vocabulary.py:{deferred + 3}: rsna_lumbar.vocabulary (foundations) imports "
        "rsna_lumbar.cli (applications)",
    ]


def test_a_new_subpackage_needs_a_layer(tmp_path):
    root = _copy(tmp_path)
    before = upward_imports(root)
    (root / "newstage").mkdir()
    (root / "newstage" / "__init__.py").write_text('"""A stage nobody placed yet."""\n')
    (root / "newstage" / "step.py").write_text("from rsna_lumbar.cli import main\n")
    new = set(unassigned(root)) - set(unassigned(SOURCE))
    assert new == {"rsna_lumbar.newstage", "rsna_lumbar.newstage.step"}
    assert upward_imports(root) == before  # an unplaced module is reported as such, not guessed


def test_a_planted_cycle_is_found(tmp_path):
    root = _copy(tmp_path)
    before = set(import_cycles(root))
    _append(root / "models" / "registry.py",
            "\n\ndef _planted():\n    from rsna_lumbar.models.network import LumbarNet\n")
    cycles = set(import_cycles(root)) - before
    assert cycles == {frozenset({"rsna_lumbar.models.network", "rsna_lumbar.models.registry"})}
