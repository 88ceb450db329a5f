"""Elementwise update rules: fused kernels vs the NumPy reference vs torch.optim, against the
bandwidth probe, at n = 1e5, 1e6, 1e7 float32.

Every benchmark of one rule and size shares a pytest-benchmark ``group``, and carries in
``extra_info`` what ``bench/report.py`` needs: the implementation, n, the rule's reads and writes
and the bytes one step must move, ``(reads + writes) * n * itemsize``. The configurations and the
step callables come from ``fusedopt.benchmarks`` (the same ones ``python -m fusedopt bench`` times).

    PYTHONPATH=python python -m pytest bench/ --benchmark-only --benchmark-json=out.json
    python bench/report.py out.json

``FUSEDOPT_BENCH_SIZES=1e3,1e4`` replaces the sizes (a quick smoke run). Rounds are sized from
one timed call (``pedantic``) so that each benchmark takes about BUDGET seconds and the
reference at 1e7 three rounds, not pytest-benchmark's calibration of a second or more each.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from fusedopt import optim, reference
from fusedopt.benchmarks import registry as fb
from fusedopt.benchmarks.table import size_label
from fusedopt.benchmarks.timing import call_time

SIZES = [int(float(s)) for s in os.environ.get("FUSEDOPT_BENCH_SIZES", "1e5,1e6,1e7").split(",")]
MODEL_TOTAL = max(SIZES)
MODEL_TENSORS = 200
IMPLS = ("probe", "fused", "reference", "torch")

ROUND_S = 1e-3      # a round: back-to-back calls for at least this long
BUDGET = 0.3        # seconds per benchmark, within 3 .. 100 rounds


def run_pedantic(benchmark, fn):
    """``benchmark.pedantic`` after a warm-up, with iterations and rounds sized from one timed
    call: rounds of ~ROUND_S, ~BUDGET s in all (the reference at 1e7 gets 3 rounds)."""
    t = call_time(fn)
    iterations = max(1, int(ROUND_S / t))
    rounds = int(min(100, max(3, BUDGET / (t * iterations))))
    benchmark.pedantic(fn, rounds=rounds, iterations=iterations)


def step_of(impl, rule, arrays, sizes):
    if impl == "probe":
        return fb.probe_step(rule, sizes)
    if impl == "fused":
        return fb.fused_step(rule, arrays)
    if impl == "reference":
        return fb.fused_step(rule, arrays, reference)
    return fb.torch_step(rule, arrays)


def info(benchmark, rule, impl, n, **extra):
    benchmark.extra_info.update(
        rule=rule.name, title=rule.title, impl=impl, n=n, reads=rule.reads, writes=rule.writes,
        itemsize=4, bytes=rule.nbytes(n),
        torch=rule.torch_label, **extra)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("rule", fb.RULES, ids=lambda r: r.name)
@pytest.mark.parametrize("n", SIZES, ids=size_label)
def test_elementwise(benchmark, grads_of, n, rule, impl, request):
    if impl == "torch":
        request.getfixturevalue("torch_or_skip")
    arrays = fb.make_arrays(rule, grads_of([n]))
    benchmark.group = f"{rule.name} n={size_label(n)}"
    info(benchmark, rule, impl, n)
    run_pedantic(benchmark, step_of(impl, rule, arrays, [n]))
    assert np.isfinite(arrays[0][0]).all(), "the params went non-finite while timed"


MODEL_LAYOUTS = ("split", "flat", "probe", "torch split")


@pytest.mark.parametrize("layout", MODEL_LAYOUTS)
def test_model_vs_flat(benchmark, grads_of, layout, request):
    """Adam over a model of MODEL_TENSORS tensors of varied sizes vs one flat array of the same
    number of elements (the issue's target: within 10%)."""
    if layout.startswith("torch"):
        request.getfixturevalue("torch_or_skip")
    rule = fb.RULES_BY_NAME["adam"]
    sizes = fb.model_sizes(MODEL_TOTAL, MODEL_TENSORS) if "split" in layout else [MODEL_TOTAL]
    arrays = fb.make_arrays(rule, grads_of(sizes, seed=1))
    impl = {"split": "fused", "flat": "fused", "probe": "probe", "torch split": "torch"}[layout]
    benchmark.group = f"adam model n={size_label(MODEL_TOTAL)} in {MODEL_TENSORS} tensors"
    info(benchmark, rule, impl, MODEL_TOTAL, layout=layout, tensors=len(sizes))
    run_pedantic(benchmark, step_of(impl, rule, arrays, sizes))
    assert all(np.isfinite(p).all() for p in arrays[0])


@pytest.mark.parametrize("impl", ("fused", "torch"))
@pytest.mark.parametrize("count", (1, 200))
def test_step_overhead(benchmark, count, impl, request):
    """The fixed cost of ``Adam.step`` (validation and dispatch) on tensors of 4 elements; the
    issue's target is 20 us + 0.5 us per tensor."""
    rule = fb.RULES_BY_NAME["adam"]
    params = [np.ones(4, np.float32) for _ in range(count)]
    grads = fb.make_grads([4] * count, seed=2)
    if impl == "torch":
        request.getfixturevalue("torch_or_skip")
        fn = fb.torch_step(rule, (params, grads, []))
    else:
        opt = optim.Adam(params, lr=1e-3)
        fn = lambda: opt.step(grads)  # noqa: E731
    benchmark.group = f"adam step overhead, {count} tensors of 4"
    info(benchmark, rule, impl, 4 * count, tensors=count, target_s=20e-6 + 0.5e-6 * count)
    benchmark(fn)
    assert all(np.isfinite(p).all() for p in params)
