"""Layer: kernels (the CUDA backend). Sources: where the kernel files are, their hash, the text and
options given to NVRTC.
"""
from __future__ import annotations

import hashlib
import pathlib

# Exact IEEE arithmetic as on the CPU: no FMA contraction, no flush to zero, correctly rounded
# division and square root (NVRTC's defaults, spelled out), no fast math.
OPTIONS = ("--std=c++17", "--fmad=false", "-ftz=false", "-prec-div=true", "-prec-sqrt=true")


def _csrc() -> pathlib.Path:
    """The kernel sources: installed in the package, else the source tree of a checkout."""
    pkg = pathlib.Path(__file__).resolve().parent.parent  # .../fusedopt
    for root in (pkg / "csrc", pkg.parent.parent / "csrc"):
        if (root / "cuda" / "optim.cu").is_file() and (root / "include" / "fusedopt").is_dir():
            return root
    raise FileNotFoundError(
        f"fusedopt's CUDA sources were found neither in {pkg / 'csrc'} nor in "
        f"{pkg.parent.parent / 'csrc'}; reinstall fusedopt")


def include_dirs() -> tuple:
    root = _csrc()
    return (str(root / "include"), str(root / "cuda"))


_SOURCES_HASH = None


def sources_hash() -> str:
    """sha256 of every kernel file and header (names and contents)."""
    global _SOURCES_HASH
    if _SOURCES_HASH is None:
        root = _csrc()
        h = hashlib.sha256()
        for base in (root / "cuda", root / "include" / "fusedopt"):
            for f in sorted(p for p in base.rglob("*") if p.is_file()):
                h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
        _SOURCES_HASH = h.hexdigest()
    return _SOURCES_HASH


def source_text(file: str) -> str:
    """The text given to NVRTC: the hash of all sources (so that a changed header changes the
    text, hence every cache key), then ``#line 1`` so that errors name the real file."""
    path = _csrc() / "cuda" / file
    return (f"// fusedopt kernel sources sha256 {sources_hash()}\n"
            f'#line 1 "{path.as_posix()}"\n' + path.read_text())


def nvrtc_options() -> tuple:
    return OPTIONS + tuple("-I" + d for d in include_dirs())
