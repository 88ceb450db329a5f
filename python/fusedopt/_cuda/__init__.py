"""The CUDA backend: ``fusedopt._core``'s functions for CuPy arrays.

Layer: kernels (the kernel-facing backend, the CUDA twin of ``fusedopt._core``). Every function of this
package has the signature of its ``_core`` twin (the update rules take the lists and the
``fusedopt._scalars`` record), so ``fusedopt.ops`` calls either one unchanged. Each checks all
arrays (CuPy type, one device, dtype, shape, contiguity, aliasing) before anything is launched,
then runs one kernel launch per dtype present for the whole list of tensors. CUDA's own
addition: the update functions take keyword-only ``master_params`` (mixed precision, see
``fusedopt.ops``), besides AMP's ``grad_scale`` and ``found_inf`` as on the CPU; ``found_inf_``
is AMP's non-finite check; ``lbfgs_direction``, ``lbfgs_dot``, ``lbfgs_axpby`` and
``lbfgs_amax`` mirror ``_core``'s L-BFGS kernels; ``compact_step`` is ``_core.compact_step``
(bfloat16 and 8-bit state, stochastic rounding; csrc/cuda/compact.cu).

Each call costs some Python time per array for the checks (about a microsecond), which a
synchronized step of a model of many small tensors can notice.

Kernels are the ``csrc/cuda/*.cu`` files (shipped in the wheel under ``fusedopt/csrc``, or read
from the source tree of a development checkout), compiled at first use by NVRTC for the current
device and memoized per device; the compiled code is also kept on disk (see ``cache_dir``).

Compilation, and why not ``cupy.RawModule(code=...)``
------------------------------------------------------
``RawModule(code=..., options=...)`` appends ``-ftz=true`` *after* the caller's options
(cupy/cuda/compiler.py, ``_compile_with_cache_cuda``), and NVRTC takes the last of repeated
options, so a caller's ``-ftz=false`` loses: float32 denormals would be flushed to zero and the
results would differ from NumPy's. Its disk cache key also ignores the headers pulled in with
``-I``. So the source goes to NVRTC through CuPy's binding (``cupy.cuda.nvrtc``) with
``OPTIONS``, the architecture and ``--device-as-default-execution-space`` (as CuPy adds it), is
cached on disk under a key that covers the source text (which carries a hash of every kernel
file and header), the options, the architecture and the NVRTC version, and is loaded with
``cupy.RawModule(path=...)``. Template instances are named with NVRTC name expressions and looked
up through the lowered names NVRTC reports. ``tests/test_cuda_build.py`` compiles every instance
without a device and checks the PTX for ``.ftz`` and FMA.

The package, one module per concern: ``sources`` (files, hash, NVRTC text and options),
``compiler`` (NVRTC and the disk cache), ``runtime`` (CuPy, the memoized kernels, the grid, the
tables: the state a test replaces), ``checks``, ``launch``, ``rules`` (the update functions),
``lbfgs``, ``compact`` and ``instances`` (every name expression, for the build tests).
"""
from __future__ import annotations

from .compact import compact_step
from .compiler import _cached_binary, _target, cache_dir, compile_instances
from .instances import name_expressions
from .lbfgs import lbfgs_amax, lbfgs_axpby, lbfgs_direction, lbfgs_dot
from .rules import adagrad, adam, adamax, found_inf_, rmsprop, scale_, sgd, sum_squares
from .runtime import BLOCKS_PER_SM, CHUNK, SLOTS, THREADS
from .sources import OPTIONS, _csrc, include_dirs, nvrtc_options, source_text, sources_hash

__all__ = ["sgd", "adagrad", "rmsprop", "adam", "adamax", "sum_squares", "scale_", "found_inf_",
           "compact_step", "lbfgs_direction", "lbfgs_dot", "lbfgs_axpby", "lbfgs_amax", "OPTIONS",
           "cache_dir", "compile_instances", "name_expressions", "source_text"]
