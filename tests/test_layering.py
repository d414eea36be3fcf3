"""oplat's import layering, read from the source (AST, nothing is imported).

Two rules for every module of the package:

1. **No private names across modules.** A module never imports ``_name`` from another
   oplat module (``from oplat.x import _y``), nor reaches one through a module it
   imported (``x._y``): what another module needs is public, or lives elsewhere.
2. **Layers only look down.** A module imports only modules of its own layer or of a
   lower one (:data:`LAYERS`, bottom first). Imports inside functions count too.

Every module must be placed in a layer, so a new module says where it belongs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "oplat"

#: Bottom first. An entry names a module or a package (its submodules included; the
#: top-level ``oplat`` entry is the package's ``__init__`` alone).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # what everything shares: errors, units, the kernel specs, the records that cross modules
    (
        "foundation",
        ("oplat", "oplat.errors", "oplat.units", "oplat.spec", "oplat.nodespec", "oplat.records",
         "oplat.limits", "oplat.fingerprint", "oplat.data", "oplat.paths", "oplat.progress", "oplat.options", "oplat.locks"),
    ),
    # models and the one timing policy (and its wire form), no runtime
    (
        "models, timing",
        ("oplat.build", "oplat.onnxgraph", "oplat.fold", "oplat.graph", "oplat.tflite", "oplat.arch",
         "oplat.space", "oplat.opset", "oplat.timing", "oplat.wire"),
    ),
    # runtimes and targets
    ("backends", ("oplat.backends", "oplat.toolchain", "oplat.device_files", "oplat.devices")),
    # what is done with a device and a table
    (
        "operations",
        ("oplat.table", "oplat.measure", "oplat.predict", "oplat.fusion", "oplat.validate", "oplat.export",
         "oplat.extract", "oplat.attribution"),
    ),
    # services and presentation built on the operations; the search package (config, proxy,
    # pricing, storage, study, select, emit, result, run) and its report (oplat.report.search,
    # which the search's emission writes) sit here
    ("services", ("oplat.search", "oplat.agent", "oplat.report", "oplat.train")),
    # the command line
    ("command line", ("oplat.cli", "oplat.__main__")),
]

#: Modules whose own imports are not checked (imports *of* them still are).
#: Every module is checked. (None is exempt: a module that needs an exception says why here.)
NOT_CHECKED: frozenset[str] = frozenset()
#: Upward imports still allowed, as (importer, imported): none.
UPWARD_ALLOWED: frozenset[tuple[str, str]] = frozenset()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def layer_of(module: str) -> int | None:
    """Index in :data:`LAYERS` of the longest entry naming ``module`` or a package above it."""
    best, best_len = None, -1
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            inside = module == entry or (entry != "oplat" and module.startswith(entry + "."))
            if inside and len(entry) > best_len:
                best, best_len = index, len(entry)
    return best


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(importer: str, level: int, module: str | None) -> str:
    """The absolute name of a (possibly relative) ``from ... import``'s module."""
    if not level:
        return module or ""
    base = importer if importer in PACKAGES else importer.rpartition(".")[0]
    for _ in range(level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{module}" if module else base


def _imports(name: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(imported oplat modules, private names reached in other oplat modules), each with
    its line number, for module ``name``."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    modules: list[tuple[int, str]] = []
    private: list[tuple[int, str]] = []
    aliases: dict[str, str] = {}  # local name -> the oplat module it is bound to

    def note(line: int, target: str) -> None:
        if target == "oplat" or target.startswith("oplat."):
            modules.append((line, target))
            hidden = [part for part in target.split(".") if _private(part)]
            if hidden:
                private.append((line, f"module {target}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                note(node.lineno, alias.name)
                if alias.name.startswith("oplat"):
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        aliases.setdefault("oplat", "oplat")
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, node.level, node.module)
            if not (source == "oplat" or source.startswith("oplat.")):
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in MODULES:  # `from oplat import wire`: a module, not a name
                    note(node.lineno, full)
                    aliases[alias.asname or alias.name] = full
                else:
                    note(node.lineno, source)
                    if _private(alias.name) and source != name:
                        private.append((node.lineno, f"{source}.{alias.name}"))
    # `module._name` through a module bound by an import
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                target = ".".join([aliases[value.id], *reversed(chain)])
                if target in MODULES and target != name:
                    private.append((node.lineno, f"{target}.{node.attr}"))
    return modules, private


CHECKED = sorted(m for m in MODULES if m not in NOT_CHECKED)


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if layer_of(m) is None]
    assert not unplaced, f"place these modules in a layer in tests/test_layering.py LAYERS: {unplaced}"


@pytest.mark.parametrize("module", CHECKED)
def test_no_private_names_from_other_modules(module):
    _, private = _imports(module)
    where = MODULES[module].relative_to(PACKAGE.parent)
    assert not private, "; ".join(f"{where}:{line} uses private {what}" for line, what in private)


@pytest.mark.parametrize("module", CHECKED)
def test_imports_only_look_down(module):
    own = layer_of(module)
    assert own is not None, f"{module} has no layer"
    modules, _ = _imports(module)
    where = MODULES[module].relative_to(PACKAGE.parent)
    upward = []
    for line, target in modules:
        theirs = layer_of(target)
        if theirs is not None and theirs > own and (module, target) not in UPWARD_ALLOWED:
            upward.append(f"{where}:{line} ({LAYERS[own][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert not upward, "; ".join(upward)


#: What oplat.search.select may import: it decides from finished trials alone (no Optuna,
#: storage, files, models or runtimes).
SELECT_MAY_IMPORT = {"__future__", "math", "collections.abc", "dataclasses", "typing", "oplat.arch", "oplat.space",
                     "oplat.search.pricing"}


def test_search_selection_is_pure():
    tree = ast.parse(MODULES["oplat.search.select"].read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= SELECT_MAY_IMPORT, sorted(imported - SELECT_MAY_IMPORT)


def test_agent_and_its_client_share_only_the_wire():
    """The agent (server) and the remote backend (its client) do not import each other;
    what they share is oplat.wire."""
    agent = {m for _, m in _imports("oplat.agent")[0]}
    client = {m for _, m in _imports("oplat.backends.remote")[0]}
    assert "oplat.backends.remote" not in agent and not any(m.startswith("oplat.agent") for m in client)
    assert "oplat.wire" in agent and "oplat.wire" in client


def test_the_checker_sees_what_it_must_refuse(tmp_path, monkeypatch):
    """The rules on a made-up module: a private import, a private attribute through an
    imported module, and an upward import are all found."""
    source = (
        "from oplat.measure import _profile_runs\n"
        "import oplat.agent as agent\n"
        "from oplat import table\n"
        "x = agent._redact('x')\n"
        "y = table._private\n"
    )
    (tmp_path / "timing.py").write_text(source)
    monkeypatch.setitem(MODULES, "oplat.timing", tmp_path / "timing.py")  # the real module is not touched
    modules, private = _imports("oplat.timing")
    assert {what for _, what in private} == {"oplat.measure._profile_runs", "oplat.agent._redact", "oplat.table._private"}
    assert {m for _, m in modules} == {"oplat.measure", "oplat.agent", "oplat.table"}
    assert all(layer_of(m) > layer_of("oplat.timing") for _, m in modules)  # timing's layer is below them all
