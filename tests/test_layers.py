"""The layer map of fusedopt, enforced: every module's imports (walked with ``ast``) go one way.

Layers, lowest first (a module may import its own layer and the layers below it):

    core        fusedopt._core, the compiled extension
    support     argument checks and the per-step scalar records (_checks, _scalars)
    kernels     the front doors to the kernels (ops, _cuda) and their NumPy ground truth
                (reference)
    algorithms  what is built on the kernels: optimizers, schedules, L-BFGS, Newton
    tools       test functions, initializers, sampling, the demo, the benchmarks, the CLI
    package     fusedopt/__init__.py, which re-exports

and, whatever the layer:

* only the modules in ``CORE_IMPORTERS`` import ``_core``;
* the optional packages in ``OPTIONAL`` are imported only inside functions (lazily), never at
  a module's top level (``import fusedopt`` must work with NumPy alone); except that the
  front doors in ``OPTIONAL_FRONT_DOORS`` (``fusedopt.torch``) may import their own package at
  their top level, because no other module imports them at its top level (so ``import
  fusedopt`` never loads them);
* each module's docstring has a line ``Layer: <name>`` naming its layer in ``LAYERS``.

A new module must be entered in ``LAYERS`` (an entry covers a package and its submodules; the
entry ``fusedopt`` is ``fusedopt/__init__.py`` alone).
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fusedopt

PACKAGE_DIR = Path(fusedopt.__file__).resolve().parent

RANKS = {"core": 0, "support": 1, "kernels": 2, "algorithms": 3, "tools": 4, "package": 5}

#: module (or package: it covers its submodules) -> layer
LAYERS = {
    "fusedopt": "package",
    "fusedopt._core": "core",
    "fusedopt._checks": "support",
    "fusedopt._scalars": "support",
    "fusedopt.quant": "support",
    "fusedopt.ops": "kernels",
    "fusedopt._cuda": "kernels",
    "fusedopt.reference": "kernels",
    "fusedopt.optim": "algorithms",
    "fusedopt.schedules": "algorithms",
    "fusedopt.lbfgs": "algorithms",
    "fusedopt.newton": "algorithms",
    "fusedopt.natural": "algorithms",
    "fusedopt.optimize": "algorithms",
    "fusedopt.functions": "tools",
    "fusedopt.init": "tools",
    "fusedopt.sampling": "tools",
    "fusedopt.demo": "tools",
    "fusedopt.benchmarks": "tools",
    "fusedopt.__main__": "tools",
    "fusedopt.torch": "algorithms",
}

#: The only modules (or packages) that import the compiled extension.
CORE_IMPORTERS = ("fusedopt", "fusedopt.ops", "fusedopt.lbfgs", "fusedopt._cuda",
                  "fusedopt.benchmarks")

#: Optional packages: imported lazily, inside the functions that need them.
OPTIONAL = ("torch", "scipy", "matplotlib", "cupy", "sklearn", "tqdm", "threadpoolctl",
            "ml_dtypes", "mpi4py")

#: Front doors for one optional package (covering their submodules): they may import that
#: package at their top level; every other module imports them lazily only.
OPTIONAL_FRONT_DOORS = {"fusedopt.torch": "torch"}


# ---------------------------------------------------------------------------------------------
# The checker


def package_sources(root: Path = PACKAGE_DIR) -> dict:
    """``{module name: (source text, is_package)}`` of every .py file of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        out[name] = (path.read_text(encoding="utf-8"), is_package)
    return out


def owner(name: str, table) -> str | None:
    """The longest entry of ``table`` that is ``name`` or a package above it; the entry
    ``fusedopt`` stands for ``fusedopt/__init__.py`` alone."""
    best = None
    for key in table:
        covers = name == key or (key != "fusedopt" and name.startswith(key + "."))
        if covers and (best is None or len(key) > len(best)):
            best = key
    return best


class _Imports(ast.NodeVisitor):
    """Every import of a module as ``(target, lineno, top_level)``; an import is top-level
    unless it is inside a function (or under ``if TYPE_CHECKING:``)."""

    def __init__(self, name, is_package, known):
        self.package = name if is_package else name.rpartition(".")[0]
        self.known, self.depth, self.found = known, 0, []

    def _lazy(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _lazy

    def visit_If(self, node):
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
                (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self._lazy(node)
        else:
            self.generic_visit(node)

    def visit_Import(self, node):
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self.depth == 0))

    def visit_ImportFrom(self, node):
        if node.level:
            base = self.package.split(".")
            base = base[:len(base) - (node.level - 1)]
            base = ".".join(base + ([node.module] if node.module else []))
        else:
            base = node.module
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            target = sub if sub in self.known else base
            self.found.append((target, node.lineno, self.depth == 0))


def violations(sources: dict) -> list:
    """The broken rules of the layer map, one string per offending import or module."""
    known = set(sources) | {"fusedopt._core"}
    out = []
    for name, (text, is_package) in sorted(sources.items()):
        entry = owner(name, LAYERS)
        if entry is None:
            out.append(f"{name}: not in the layer map (add it to LAYERS)")
            continue
        layer = LAYERS[entry]
        visitor = _Imports(name, is_package, known)
        visitor.visit(ast.parse(text, filename=name))
        for target, line, top_level in visitor.found:
            where = f"{name}:{line}"
            if target == "fusedopt" or target.startswith("fusedopt."):
                tentry = owner(target, LAYERS)
                if tentry is None:
                    out.append(f"{where}: imports {target}, which is not in the layer map")
                    continue
                tlayer = LAYERS[tentry]
                door = owner(target, OPTIONAL_FRONT_DOORS)
                if door is not None and top_level and owner(name, OPTIONAL_FRONT_DOORS) != door:
                    out.append(f"{where}: imports {target} at the top level; it imports "
                               f"{OPTIONAL_FRONT_DOORS[door]}, so import it lazily")
                elif target == "fusedopt._core" and owner(name, CORE_IMPORTERS) is None:
                    out.append(f"{where}: imports fusedopt._core; only {CORE_IMPORTERS} may")
                elif RANKS[tlayer] > RANKS[layer] and tentry != entry:
                    out.append(f"{where}: {layer} module imports {target} ({tlayer}), a "
                               "higher layer")
            elif target.split(".")[0] in OPTIONAL and top_level and \
                    OPTIONAL_FRONT_DOORS.get(owner(name, OPTIONAL_FRONT_DOORS)) != \
                    target.split(".")[0]:
                out.append(f"{where}: imports the optional package {target} at the top level "
                           "(import it inside the function that needs it)")
    return out


def layer_line(text: str) -> str | None:
    """The layer named by the docstring's ``Layer: <name>`` line, else None."""
    doc = ast.get_docstring(ast.parse(text)) or ""
    m = re.search(r"^Layer: (\w+)", doc, re.MULTILINE)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------
# The package as it is


SOURCES = package_sources()


def test_the_walk_sees_the_whole_package():
    # the packages of this layout and their modules are all walked (a wrong root or glob would
    # make every other test here vacuous)
    for name in ("fusedopt", "fusedopt.ops", "fusedopt.lbfgs", "fusedopt.lbfgs.solver",
                 "fusedopt.benchmarks.cli", "fusedopt.demo.mlp", "fusedopt.__main__"):
        assert name in SOURCES, name
    assert SOURCES["fusedopt.lbfgs"][1] and not SOURCES["fusedopt.lbfgs.solver"][1]
    assert len(SOURCES) > 30


def test_imports_follow_the_layer_map():
    assert violations(SOURCES) == []


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_docstring_names_the_layer(name):
    expected = LAYERS[owner(name, LAYERS)]
    assert layer_line(SOURCES[name][0]) == expected, (
        f"{name}: the docstring must have a line 'Layer: {expected}'")


def test_import_fusedopt_loads_no_optional_package_and_no_tool():
    code = ("import sys, fusedopt; print(' '.join(sorted(m for m in sys.modules "
            "if m.split('.')[0] in %r or m.startswith(('fusedopt.demo', 'fusedopt.benchmarks',"
            " 'fusedopt.sampling', 'fusedopt.functions', 'fusedopt.torch')))))" % (OPTIONAL,))
    assert python_prints(code) == []


def python_prints(code: str) -> list:
    """The words ``code`` prints, run in a fresh interpreter that imports this package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_DIR.parent),
                                                      env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


# ---------------------------------------------------------------------------------------------
# The checker can fail: planted bad imports are flagged, each with the rule it breaks


PLANTED = [
    ("fusedopt.ops", "from . import demo\n", "kernels module imports fusedopt.demo (tools)"),
    ("fusedopt.ops", "def f():\n    from .benchmarks import cli\n",
     "kernels module imports fusedopt.benchmarks.cli (tools)"),
    ("fusedopt.reference", "import fusedopt.optim\n",
     "kernels module imports fusedopt.optim (algorithms)"),
    ("fusedopt.lbfgs.history", "from ..sampling import multistart\n",
     "algorithms module imports fusedopt.sampling (tools)"),
    ("fusedopt._checks", "from .ops import adam_\n", "support module imports fusedopt.ops"),
    ("fusedopt.functions", "from ._core import lbfgs_dot\n", "imports fusedopt._core; only"),
    ("fusedopt.optim", "from fusedopt import _core\n", "imports fusedopt._core; only"),
    ("fusedopt.demo.mlp", "from .. import _core\n", "imports fusedopt._core; only"),
    ("fusedopt.optim", "import torch\n", "optional package torch at the top level"),
    ("fusedopt.schedules", "try:\n    import scipy.stats\nexcept ImportError:\n    pass\n",
     "optional package scipy.stats at the top level"),
    ("fusedopt.newton", "class A:\n    from matplotlib import pyplot\n",
     "optional package matplotlib at the top level"),
    ("fusedopt.lbfgs.new_module", "x = 1\n", None),     # allowed: covered by fusedopt.lbfgs
    ("fusedopt.brand_new", "x = 1\n", "fusedopt.brand_new: not in the layer map"),
    # the torch front door: only it imports torch at the top level, and nothing imports it so
    ("fusedopt.optim", "import fusedopt.torch\n", "imports fusedopt.torch at the top level"),
    ("fusedopt.benchmarks.registry", "from ..torch import optimizers\n",
     "imports fusedopt.torch.optimizers at the top level"),
    ("fusedopt.torch.clip", "import scipy\n", "optional package scipy at the top level"),
    ("fusedopt.torch.optimizers", "from .. import demo\n",
     "algorithms module imports fusedopt.demo (tools)"),
]


@pytest.mark.parametrize("name, code, message", PLANTED)
def test_a_planted_import_is_flagged(name, code, message):
    sources = dict(SOURCES)
    text, is_package = sources.get(name, ("", False))
    sources[name] = (text + "\n" + code, is_package)
    found = violations(sources)
    if message is None:
        assert found == []
    else:
        assert len(found) == 1 and message in found[0], found
        assert found[0].startswith(name)


@pytest.mark.parametrize("name, code", [
    ("fusedopt.optim", "def f():\n    import torch\n"),                 # lazy: allowed
    ("fusedopt.schedules", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                           "    import scipy\n"),
    ("fusedopt.benchmarks.registry", "from .. import _core, optim\n"),  # tools: may
    ("fusedopt.lbfgs.solver", "from .. import ops\nfrom . import history\n"),
    ("fusedopt.torch.clip", "import torch.distributed\n"),            # its own package
    ("fusedopt.torch", "from . import _bridge\n"),                     # its own modules
    ("fusedopt.benchmarks.registry", "def f():\n    import fusedopt.torch\n"),  # lazily
])
def test_allowed_imports_are_not_flagged(name, code):
    sources = dict(SOURCES)
    sources[name] = (sources[name][0] + "\n" + code, sources[name][1])
    assert violations(sources) == []


def test_import_fusedopt_torch_loads_torch():
    """The front door itself imports torch (where installed): the exception is real."""
    pytest.importorskip("torch")
    assert python_prints("import sys, fusedopt.torch; print('torch' in sys.modules)") == \
        ["True"]


def test_a_wrong_layer_line_is_caught():
    assert layer_line('"""Doc.\n\nLayer: tools (the CLI).\n"""\n') == "tools"
    assert layer_line('"""Doc without one."""\n') is None
    assert layer_line(SOURCES["fusedopt.lbfgs.solver"][0]) == "algorithms"
