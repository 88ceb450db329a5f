"""``python -m fusedopt bench``: the command runs, prints one table per rule with sane numbers,
and calls its sections (the L-BFGS one among them). (Speed itself is judged by the benchmarks,
not here.)"""
from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fusedopt
from fusedopt.benchmarks import cli, registry, timing
from fusedopt.benchmarks import lbfgs as lbfgs_section

RULE_NAMES = [r.name for r in registry.RULES]
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def run_module(*args, timeout=120):
    env = dict(os.environ)
    root = str(Path(fusedopt.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "fusedopt", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def tables(out: str) -> dict:
    """``{section name: (headers, rows)}`` for each titled table in the output."""
    found = {}
    for block in out.split("\n\n"):
        lines = block.strip("\n").splitlines()
        if len(lines) >= 4 and set(lines[2].replace(" ", "")) == {"-"}:
            split = [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]
            found[lines[0].split(":")[0]] = (split[0], split[2:])
    return found


def number(cell: str) -> float:
    return float(cell.rstrip("x%"))


@pytest.fixture(scope="module")
def quick_run():
    rules = ",".join(RULE_NAMES + ["model", "overhead"])
    proc = run_module("bench", "--quick", "--sizes", "1000", "--rules", rules)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_one_table_per_rule_with_sane_numbers(quick_run):
    found = tables(quick_run)
    assert set(RULE_NAMES) <= set(found), f"missing tables: {set(RULE_NAMES) - set(found)}"
    for name in RULE_NAMES:
        headers, rows = found[name]
        assert headers[:7] == ["n", "fused us", "fused GB/s", "probe GB/s", "of probe",
                               "reference us", "x reference"], (name, headers)
        assert ("x torch" in headers) == HAVE_TORCH, (name, headers)
        assert len(rows) == 1 and rows[0][0] == "1000", (name, rows)
        assert len(rows[0]) == len(headers), (name, rows)
        for header, cell in zip(headers, rows[0]):
            value = number(cell)
            assert math.isfinite(value) and value > 0, (name, header, cell)
        # The columns agree with each other: GB/s is the rule's bytes over the time.
        rule = registry.RULES_BY_NAME[name]
        us, gbs = number(rows[0][1]), number(rows[0][2])
        assert gbs == pytest.approx(rule.nbytes(1000) / (us * 1e-6) / 1e9, rel=0.05, abs=0.01)


def test_model_and_overhead_tables(quick_run):
    found = tables(quick_run)
    headers, rows = found["model"]
    assert headers == ["layout", "us", "GB/s", "time / flat"]
    by_layout = {r[0]: r for r in rows}
    assert by_layout["1 flat array"][3] == "1.00"
    assert all(number(r[1]) > 0 and math.isfinite(number(r[3])) for r in rows)
    headers, rows = found["overhead"]
    assert headers[:4] == ["tensors", "Adam.step us", "target us", "met"]
    assert [r[0] for r in rows] == ["1", "200"]
    assert [r[2] for r in rows] == ["20.5", "120.0"]
    assert all(number(r[1]) > 0 and r[3] in ("yes", "NO") for r in rows)


def test_lbfgs_hook_is_called_and_printed(monkeypatch, capsys):
    calls = []

    def section(ctx):
        calls.append((ctx.quick, ctx.full))
        return ["L-BFGS TABLE ONE", "L-BFGS TABLE TWO"]

    monkeypatch.setattr(lbfgs_section, "section", section)
    assert cli.main(["--quick", "--sizes", "1000", "--rules", "sgd,lbfgs", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert calls == [(True, False)]
    assert out.index("sgd:") < out.index("L-BFGS TABLE ONE") < out.index("L-BFGS TABLE TWO")
    assert cli.main(["--sizes", "1000", "--rules", "lbfgs", "--no-torch", "--full"]) == 0
    assert calls[-1] == (False, True)


def test_lbfgs_section_default_is_trimmed_and_full_has_the_long_cases():
    # The default stays within the one-minute budget of the README's main command; --full
    # brings back the long cases.
    quick, default, full = (lbfgs_section.cases(quick=True), lbfgs_section.cases(),
                            lbfgs_section.cases(full=True))
    assert max(default["direction"]) <= 10**6 and max(default["ext_rosenbrock"]) <= 10**5
    assert default["chained"] == (10**5, 100)
    assert full["chained"] == (10**6, 500) and 10**7 in full["direction"]
    assert 10**6 in full["ext_rosenbrock"]
    assert all(max(quick[k]) <= max(default[k]) for k in ("direction", "ext_rosenbrock"))


def test_lbfgs_section_prints_tables_through_the_shared_formatter():
    # The real section at its --quick sizes: every block is a titled table of the one
    # formatter, with every solver and positive numbers.
    blocks = lbfgs_section.run(quick=True, timer=timing.Timer(0.0))
    found = tables("\n\n".join(blocks[1:]) + "\n")
    assert "lbfgs direction" in found
    assert any(k.startswith("lbfgs Extended Rosenbrock n=1e+04 from (-1.2") for k in found)
    headers, rows = found["lbfgs direction"]
    assert headers == ["n", "fused ms", "reference ms", "speed-up", "GB/s", "read GB/s",
                       "bound ms", "of bound"]
    assert [r[0] for r in rows] == ["1e+05"] and all(number(c) > 0 for c in rows[0][1:])
    headers, rows = found["lbfgs Chained Rosenbrock (scipy.optimize.rosen) n=1e+04, 100 fixed "
                          "iterations (gtol = ftol = 0)"]
    assert headers == ["solver", "wall s", "outside f ms/it", "nit", "nfev", "f"]
    assert [r[0] for r in rows] == list(lbfgs_section.solvers())
    assert all(r[3] == "100" for r in rows)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [2, 10, 4098])
def test_ext_rosenbrock_with_work_has_the_bits_of_the_plain_expressions(dtype, n):
    # The bench's objective writes into reused work arrays; its f and g are those of the plain
    # NumPy expressions (the ground truth), call after call on the same work, and agree with
    # the residual form of fusedopt.testset.
    from fusedopt import testset
    rng = np.random.default_rng(n)
    fun = lbfgs_section.ext_rosenbrock_objective(n, dtype)
    for x in [lbfgs_section.ext_rosenbrock_x0(n, dtype)] + [
            rng.uniform(-2, 2, n).astype(dtype) for _ in range(3)]:
        x1, x2 = x[0::2], x[1::2]
        t, u = x2 - x1 * x1, 1.0 - x1
        want = np.empty_like(x)
        want[0::2], want[1::2] = -400.0 * t * x1 - 2.0 * u, 200.0 * t
        for f, g in [fun(x), lbfgs_section.ext_rosenbrock(x)]:
            assert f == float(np.sum(100.0 * t * t + u * u))
            assert g.dtype == dtype and g.tobytes() == want.tobytes()
        r = testset.ext_rosenbrock(x.astype(np.float64))
        assert f == pytest.approx(float(r @ r), rel=1e-5 if dtype == np.float32 else 1e-12)
    assert fun(x)[1] is not fun(x)[1]          # a fresh gradient per call


def test_threads_option_sets_and_is_reported(capsys):
    old = fusedopt.get_num_threads()
    try:
        assert cli.main(["--sizes", "1000", "--rules", "adam", "--threads", "1",
                           "--no-torch"]) == 0
        assert fusedopt.get_num_threads() == 1
    finally:
        fusedopt.set_num_threads(old)
    assert capsys.readouterr().out.startswith("fusedopt bench: 1 threads")


@pytest.mark.parametrize("args", [["--rules", "nope"], ["--sizes", "0"], ["--sizes", "a"],
                                  ["--threads", "0"]])
def test_bad_options_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_main_dispatch():
    help_ = run_module("--help")
    assert help_.returncode == 0 and "bench" in help_.stdout and "demo" in help_.stdout
    unknown = run_module("frobnicate")
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr
    bench_help = run_module("bench", "--help")
    assert bench_help.returncode == 0
    for option in ("--quick", "--sizes", "--rules", "--threads"):
        assert option in bench_help.stdout
    demo_help = run_module("demo", "--help")
    assert demo_help.returncode == 0 and "--quick" in demo_help.stdout


def test_model_sizes_sum_and_count():
    for total, count in [(10**7, 200), (1000, 200), (5, 200)]:
        sizes = registry.model_sizes(total, count)
        assert sum(sizes) == total and len(sizes) == min(count, total) and min(sizes) >= 1
    assert len(set(registry.model_sizes(10**7))) > 50        # varied, not equal parts


def test_rule_patterns_match_the_issue():
    pattern = {r.name: (r.reads, r.writes) for r in registry.RULES}
    assert pattern == {"sgd": (2, 1), "sgd_momentum": (3, 2), "sgd_nesterov": (3, 2),
                       "adagrad": (3, 2), "rmsprop": (3, 2), "rmsprop_centered_momentum": (5, 4),
                       "adam": (4, 3), "adamw": (4, 3), "amsgrad": (5, 4), "adamax": (4, 3)}


REPORT = Path(__file__).resolve().parent.parent / "bench" / "report.py"


@pytest.mark.skipif(not REPORT.exists(), reason="bench/report.py is not in this tree")
def test_report_computes_gbs_and_ratios():
    spec = importlib.util.spec_from_file_location("bench_report", REPORT)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    rule = registry.RULES_BY_NAME["adam"]
    n = 10**6

    def entry(impl, seconds, **extra):
        info = dict(rule=rule.name, impl=impl, n=n, reads=rule.reads, writes=rule.writes,
                    bytes=rule.nbytes(n), torch=rule.torch_label, **extra)
        return {"group": f"adam n={n}", "name": f"test[{impl}]", "extra_info": info,
                "stats": {"median": seconds, "min": seconds / 2}}

    data = {"benchmarks": [
        entry("probe", 0.9e-3), entry("fused", 1e-3), entry("reference", 12e-3),
        entry("torch", 2e-3),
        entry("fused", 1.05e-3, layout="split", tensors=200),
        entry("fused", 1e-3, layout="flat", tensors=1),
        entry("fused", 30e-6, tensors=200, target_s=120e-6)]}
    text = report.report(data)
    row = next(line.split() for line in text.splitlines() if line.startswith("adam "))
    assert row[:11] == ["adam", "1e6", "4/3", "1000.0", "28.00", "31.11", "90%", "12000.0",
                        "12.00x", "2000.0", "2.00x"]
    assert re.search(r"split\s+200\s+1050\.0\s+26\.67\s+1\.05", text)
    assert re.search(r"fused\s+200\s+30\.0\s+120\.0\s+yes", text)
    assert "500.0" in report.report(data, "min")           # the chosen statistic is used


def test_timer_interleaves_and_takes_medians():
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    samples = timing.time_interleaved(fns, budget=0.0, min_repeats=5, max_repeats=5,
                                     sample=1e-4)
    assert [len(v) for v in samples.values()] == [5, 5]
    assert all(t > 0 for v in samples.values() for t in v)
    # After the warm-ups, the samples alternate: a run of a's, a run of b's, five times.
    runs = [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k]
    assert runs[-10:] == ["a", "b"] * 5
    timer = timing.Timer(budget=0.0)
    medians = timer({"x": lambda: None}, min_repeats=5, max_repeats=5)
    assert set(medians) == {"x"} and medians["x"] > 0 and timer.spread >= 1.0
