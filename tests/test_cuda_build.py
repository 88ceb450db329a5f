"""The CUDA kernels compile, without a GPU.

* nvcc (where installed) compiles every ``csrc/cuda/*.cu`` file for sm_80 and sm_90 with
  fusedopt's NVRTC options, instantiating explicitly a covering set of the template instances
  ``fusedopt._cuda`` can request (every value of every template parameter, next to the first
  and the last value of the others), so that a syntax or type error fails CI wherever nvcc is.
* NVRTC (where CuPy and the NVRTC library are installed) compiles the very source text
  ``_cuda`` compiles at run time, the covering set for compute_80 and compute_90 and, marked
  ``slow``, all of the instances (1101) for compute_90; the PTX is checked for what would break
  bitwise equality with NumPy: fused multiply-adds, flush to zero, approximate division/sqrt.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from fusedopt import _cuda

NVCC = shutil.which("nvcc")
ARCHS = (80, 90)


def _nvrtc():
    try:
        from cupy.cuda import nvrtc  # noqa: PLC0415

        nvrtc.getVersion()
    except Exception as e:  # noqa: BLE001 -- CuPy absent, or its NVRTC library absent
        pytest.skip(f"NVRTC through CuPy is not available here: {e!r}")
    return nvrtc


def test_every_instance_is_listed_once():
    names = _cuda.name_expressions()
    cover = _cuda.name_expressions(cover=True)
    assert set(names) == set(cover) == {p.name for p in (_cuda._csrc() / "cuda").glob("*.cu")}
    for file, exprs in names.items():
        assert len(exprs) == len(set(exprs)), file
        assert exprs, file
        assert set(cover[file]) <= set(exprs)
        # Every template argument that occurs in the full set occurs in the covering set.
        args = lambda es: {(e.split("<")[0], k, a.strip())  # noqa: E731
                           for e in es if "<" in e
                           for k, a in enumerate(e.split("<", 1)[1].rstrip(">").split(","))}
        assert args(cover[file]) == args(exprs), file


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("file", sorted(_cuda.name_expressions()))
def test_nvcc_compiles_the_covering_instances(file, tmp_path):
    exprs = _cuda.name_expressions(cover=True)[file]
    unit = tmp_path / ("check_" + file)
    unit.write_text(
        f'#include "{file}"\n'
        "// Taking each instance's address instantiates it, as NVRTC's name expressions do.\n"
        "void* fusedopt_instances[] = {\n"
        + "".join(f"    (void*)&{e},\n" for e in exprs) + "};\n")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    cmd = [NVCC, *_cuda.OPTIONS, *("-I" + d for d in _cuda.include_dirs()), *gencode,
           "--Werror", "all-warnings", "-c", str(unit), "-o", str(tmp_path / "check.o")]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    assert (tmp_path / "check.o").stat().st_size > 0


def _nvrtc_check(arch, cover):
    _nvrtc()
    for file, exprs in _cuda.name_expressions(cover=cover).items():
        ptx, lowered = _cuda.compile_instances(file, exprs, arch, ptx=True)
        text = ptx.decode() if isinstance(ptx, bytes) else ptx
        assert set(lowered) == set(exprs)
        assert text.count(".entry ") == len(exprs), file
        for name in lowered.values():
            assert f".entry {name}(" in text, name
        # Exactness: no contraction into FMA, no flushed denormals, no approximate division or
        # square root (the .approx forms) in any kernel.
        bad = sorted(set(re.findall(r"\b(?:fma|mad)\.[\w.]+|\b\w+(?:\.\w+)*\.(?:ftz|approx)\b[\w.]*",
                                    text)))
        assert not bad, f"{file}: {bad[:10]}"


@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_the_covering_instances_exactly(arch):
    _nvrtc_check(arch, cover=True)


@pytest.mark.slow
def test_nvrtc_compiles_every_instance_exactly():
    _nvrtc_check(90, cover=False)


def test_nvrtc_ptx_check_can_fail():
    """The scan above finds .ftz and FMA when the options ask for them (CuPy's -ftz=true)."""
    nvrtc = _nvrtc()
    prog = nvrtc.createProgram(
        'extern "C" __global__ void k(float* a) { a[0] = a[1] * a[2] + a[3] / a[4]; }',
        "k.cu", (), ())
    try:
        nvrtc.compileProgram(prog, ("-arch=compute_80", "--fmad=false", "-ftz=false",
                                    "-ftz=true"))
        text = nvrtc.getPTX(prog).decode()
    finally:
        nvrtc.destroyProgram(prog)
    assert re.search(r"\bmul\.rn\.ftz\.f32\b", text), text  # the last -ftz wins


def test_source_text_names_the_file_and_hashes_every_header():
    text = _cuda.source_text("optim.cu")
    first, second = text.splitlines()[:2]
    assert _cuda.sources_hash() in first
    assert second == f'#line 1 "{(_cuda._csrc() / "cuda" / "optim.cu").as_posix()}"'
    assert re.fullmatch(r"[0-9a-f]{64}", _cuda.sources_hash())


def test_disk_cache_is_keyed_by_the_sources(tmp_path, monkeypatch):
    """The compiled instance is stored once and found again; a change in any header (seen
    through the sources hash in the text) gives a new key, so stale binaries are never used."""
    _nvrtc()
    monkeypatch.setenv("FUSEDOPT_CUDA_CACHE_DIR", str(tmp_path))
    name = "fusedopt::cuda::scale_kernel<float>"
    path, lowered = _cuda._cached_binary("optim.cu", name, 80, False)
    assert path.endswith(".cubin") and lowered.startswith("_ZN8fusedopt4cuda12scale_kernel")
    assert len(list(tmp_path.iterdir())) == 2  # the binary and its lowered name

    def no_compile(*a, **k):
        raise AssertionError("compiled again although cached")

    monkeypatch.setattr(_cuda.compiler, "compile_instances", no_compile)
    assert _cuda._cached_binary("optim.cu", name, 80, False) == (path, lowered)
    monkeypatch.setattr(_cuda.sources, "_SOURCES_HASH", "0" * 64)  # as if a header had changed
    with pytest.raises(AssertionError, match="compiled again"):
        _cuda._cached_binary("optim.cu", name, 80, False)
