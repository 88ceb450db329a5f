"""Layer: kernels (the CUDA backend). Compilation: NVRTC through CuPy's binding and the disk cache
of compiled kernels (see the package docstring for why not ``cupy.RawModule(code=...)``).
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile

from . import sources

def cache_dir() -> pathlib.Path:
    env = os.environ.get("FUSEDOPT_CUDA_CACHE_DIR")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / \
        "fusedopt" / "cuda"


def _target(cupy) -> tuple:
    """(arch, ptx) for the current device: a cubin for its compute capability when NVRTC knows
    it, else PTX for the newest architecture NVRTC knows below it (the driver JIT-compiles it),
    as CuPy does."""
    from cupy.cuda import nvrtc  # noqa: PLC0415

    cc = int(cupy.cuda.Device().compute_capability)
    known = [a for a in nvrtc.getSupportedArchs() if a <= cc]
    if cc in known:
        return cc, False
    if not known:
        raise RuntimeError(f"NVRTC {nvrtc.getVersion()} supports no architecture at or below "
                           f"this device's compute capability {cc}")
    return known[-1], True


def compile_instances(file: str, names, arch: int, *, ptx: bool = False):
    """NVRTC-compile name expressions of ``csrc/cuda/<file>`` for compute capability ``arch``.

    Returns (cubin, or PTX when ``ptx``; {name expression: lowered name}). Needs CuPy's NVRTC
    binding and the NVRTC library, not a device. Options: ``nvrtc_options()``, the
    architecture, and ``--device-as-default-execution-space`` as CuPy adds it; nothing else.
    """
    from cupy.cuda import nvrtc  # noqa: PLC0415

    opts = sources.nvrtc_options() + (f"-arch={'compute' if ptx else 'sm'}_{arch}",
                              "--device-as-default-execution-space")
    prog = nvrtc.createProgram(sources.source_text(file), file, (), ())
    try:
        for name in names:
            nvrtc.addNameExpression(prog, name)
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError as e:
            raise RuntimeError(f"NVRTC failed on {file} ({' '.join(opts)}):\n"
                               f"{nvrtc.getProgramLog(prog)}") from e
        code = nvrtc.getPTX(prog) if ptx else nvrtc.getCUBIN(prog)
        return code, {name: nvrtc.getLoweredName(prog, name) for name in names}
    finally:
        nvrtc.destroyProgram(prog)


def _cached_binary(file: str, name: str, arch: int, ptx: bool):
    from cupy.cuda import nvrtc  # noqa: PLC0415

    key = hashlib.sha256("\0".join(
        [sources.source_text(file), *sources.nvrtc_options(), str(arch), str(ptx),
         repr(nvrtc.getVersion()),
         name]).encode())
    stem = cache_dir() / key.hexdigest()
    meta, binary = stem.with_suffix(".json"), stem.with_suffix(".ptx" if ptx else ".cubin")
    if meta.is_file() and binary.is_file():
        return str(binary), json.loads(meta.read_text())["lowered"]
    code, mapping = compile_instances(file, [name], arch, ptx=ptx)
    lowered = mapping[name]
    stem.parent.mkdir(parents=True, exist_ok=True)
    for target, data in ((binary, code if isinstance(code, bytes) else code.encode()),
                         (meta, json.dumps({"name": name, "lowered": lowered}).encode())):
        fd, tmp = tempfile.mkstemp(dir=stem.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)  # atomic: a concurrent reader sees a whole file or none
    return str(binary), lowered
