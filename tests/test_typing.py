"""Typing: the package ships ``py.typed``, mypy sees real types in a user's script, and the
user-facing modules type-check. Skipped where mypy is not installed."""
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import fusedopt

# The package this process imports (the source tree or the installed wheel).
PACKAGE = pathlib.Path(fusedopt.__file__).resolve().parent
PYTHON_DIR = PACKAGE.parent

USER_SCRIPT = """\
import numpy as np
from fusedopt import ops, optim, schedules

w = np.zeros(10, np.float32)
opt = optim.AdamW([w], lr=schedules.cosine_decay(1e-3, 100), weight_decay=0.1)
opt.step([np.ones(10, np.float32)])
reveal_type(opt.step_count)
reveal_type(opt.current_lr())
reveal_type(schedules.cosine_decay(1e-3, 100))
reveal_type(schedules.join([schedules.constant(0.1)], []))
reveal_type(ops.global_norm([w]))
reveal_type(optim.flatten_state_dict(opt.state_dict()))
count: str = opt.step_count
optim.Adam([w], lr="fast")
optim.SGD([w], backend="gpu")
"""


def _mypy(args, cwd):
    pytest.importorskip("mypy", reason="mypy is not installed")
    env = dict(os.environ)
    if PYTHON_DIR.name != "site-packages":  # mypy finds an installed package by itself
        env["MYPYPATH"] = str(PYTHON_DIR)
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                           f"--cache-dir={cwd / '.mypy_cache'}", "--follow-imports=silent",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_py_typed_is_shipped():
    assert (PACKAGE / "py.typed").is_file()
    if PYTHON_DIR.name == "site-packages":
        return  # an installed wheel: it has py.typed (above), so the wheel shipped it
    # scikit-build-core's wheel.packages copies the package directory: py.typed goes with it.
    pathutil = pytest.importorskip("scikit_build_core.build._pathutil",
                                   reason="scikit-build-core is not installed")
    files = [str(t) for _, t in pathutil.iter_package_files(
        packages={"fusedopt": str(PACKAGE)}, include=[], src_exclude=[], target_exclude=[],
        build_dir="build/{wheel_tag}", mode="default")]
    assert "fusedopt/py.typed" in [f.replace(os.sep, "/") for f in files]


def test_mypy_sees_real_types_in_a_user_script(tmp_path):
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    out = _mypy(["user.py"], tmp_path)
    text = out.stdout + out.stderr
    revealed = [(line, t.replace("builtins.", "")) for line, t in
                re.findall(r'user\.py:(\d+): note: Revealed type is "(.*)"', text)]
    assert revealed[:5] == [("7", "int"), ("8", "float"), ("9", "fusedopt.schedules.CosineDecay"),
                            ("10", "fusedopt.schedules.Join"), ("11", "float")], text
    assert len(revealed) == 6 and revealed[5][1].startswith("dict[str, numpy.ndarray"), text
    errors = re.findall(r"user\.py:(\d+): error: .*\[(.*)\]", text)
    assert errors == [("13", "assignment"), ("14", "arg-type"), ("15", "arg-type")], text
    assert out.returncode == 1, text


def test_user_facing_modules_type_check(tmp_path):
    mods = ["optim", "schedules", "_checks", "functions", "init", "ops", "natural"]
    # By module name: mypy finds them in the source tree (MYPYPATH) or, installed, by py.typed.
    out = _mypy([a for m in mods for a in ("-m", f"fusedopt.{m}")], tmp_path)
    assert out.returncode == 0, textwrap.shorten(out.stdout + out.stderr, 4000)
