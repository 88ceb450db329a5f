"""fusedopt vs torch.optim.Adam(fused=True) vs DeepSpeed's DeepSpeedCPUAdam on torch tensors:
the cases of ``fusedopt.benchmarks.vs_torch`` (the ``torch`` section of ``python -m fusedopt
bench`` times the same callables), against the bandwidth probe for the same bytes.

    PYTHONPATH=python python -m pytest bench/bench_torch.py --benchmark-only \\
        --benchmark-json=out.json
    python bench/report.py out.json

Skips without torch; the DeepSpeed benchmarks skip unless ``deepspeed`` is importable (never in
CI: its CPU op compiles at first use, minutes, cached by torch under ``~/.cache``).
``FUSEDOPT_BENCH_QUICK=1`` takes the --quick sizes (1e5/1e6). Each case's benchmarks share a
``group``; ``extra_info`` carries the bytes fusedopt must move.
"""
from __future__ import annotations

import os

import pytest
from bench_elementwise import run_pedantic

from fusedopt.benchmarks import vs_torch

CASES = vs_torch.cases(quick=os.environ.get("FUSEDOPT_BENCH_QUICK") == "1")
IMPLS = ("fusedopt", "torch", "deepspeed", "probe")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_adam_vs_torch(benchmark, torch_or_skip, case, impl):
    if impl == "deepspeed" and not vs_torch.deepspeed_available():
        pytest.skip("deepspeed is not importable (pip install deepspeed)")
    if impl == "probe":
        fn = vs_torch.probe_step(case)
    else:
        params, grads = vs_torch.make_tensors(case)
        fn = getattr(vs_torch, f"{impl}_step")(case, params, grads)
    benchmark.group = f"torch: {case.name}"
    benchmark.extra_info.update(rule="adam", title=case.name, impl=impl, n=case.total,
                                bytes=case.nbytes(), bytes_per_element=case.bytes_per_element)
    run_pedantic(benchmark, fn)
