"""fusedopt without mpi4py: nothing imports it until ``comm=`` is given, and then the error
says how to install it (the MPI tests themselves, tests/test_mpi.py, skip where it is absent).

Runs with or without mpi4py installed (the import is blocked here with ``sys.modules``).
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fusedopt.lbfgs import local_slice, minimize


class _Comm:
    """Looks like an mpi4py communicator to minimize's argument check."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def allgather(self, obj):
        return [obj]

    def Allgatherv(self, send, recv):
        raise AssertionError("not reached")


def test_importing_fusedopt_does_not_import_mpi4py():
    code = ("import sys, fusedopt, fusedopt.lbfgs, fusedopt.lbfgs.mpi, fusedopt.optimize; "
            "print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("shard", [False, True])
def test_comm_without_mpi4py_says_how_to_install_it(monkeypatch, shard):
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # import mpi4py -> ImportError
    calls = []

    def fun(x):
        calls.append(1)
        return float(x @ x), 2 * x
    with pytest.raises(ImportError, match=r"comm= needs mpi4py: pip install 'fusedopt\[mpi\]'"):
        minimize(fun, np.ones(8), comm=_Comm(), shard=shard)
    assert not calls          # refused before fun is called
    assert local_slice(10, None) == slice(0, 10)   # needs no MPI
