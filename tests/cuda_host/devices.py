"""The ``dev`` fixture of the CUDA tests: each test runs on a GPU through CuPy (``gpu`` marker;
conftest.py skips it where there is none) and on the host emulation (emulation.py; needs g++)."""
from __future__ import annotations

import shutil
import types

import pytest


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu),
                        pytest.param("host", marks=pytest.mark.skipif(
                            shutil.which("g++") is None, reason="no g++ for the host build"))])
def dev(request, monkeypatch):
    """xp (the array module), ndarray, asarray, asnumpy, sync, name."""
    if request.param == "cuda":
        cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install '.[cuda]')")
        return types.SimpleNamespace(
            name="cuda", xp=cupy, ndarray=cupy.ndarray, asarray=cupy.asarray,
            asnumpy=cupy.asnumpy, sync=lambda: cupy.cuda.Device().synchronize())
    from cuda_host import emulation  # noqa: PLC0415

    emulation.install(monkeypatch)
    return types.SimpleNamespace(name="host", xp=emulation.xp, ndarray=emulation.ndarray,
                                 asarray=emulation.asarray, asnumpy=emulation.asnumpy,
                                 sync=lambda: None)
