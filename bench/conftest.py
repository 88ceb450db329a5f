"""pytest-benchmark setup for ``bench/``.

    PYTHONPATH=python python -m pytest bench/ --benchmark-only --benchmark-json=out.json
    python bench/report.py out.json

Files named ``bench_*.py`` are collected here (the project's tests are ``test_*.py``). Fixtures
share the gradient arrays between benchmarks of one size; torch benchmarks skip without torch.
"""
from __future__ import annotations

import pytest

from fusedopt.benchmarks import registry as fb


def pytest_collect_file(file_path, parent):
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


_GRADS = {}


@pytest.fixture
def grads_of():
    """``grads_of(sizes, seed=0)``: cached standard-normal float32 gradient lists (read only)."""
    def get(sizes, seed=0):
        key = (tuple(sizes), seed)
        if key not in _GRADS:
            _GRADS.clear()          # keep one set at a time: 1e7-element arrays add up
            _GRADS[key] = fb.make_grads(sizes, seed=seed)
        return _GRADS[key]
    return get


@pytest.fixture
def torch_or_skip():
    return pytest.importorskip("torch", reason="torch is not installed")
