"""Layer: kernels (the CUDA backend). Every kernel instance (NVRTC name expressions), for the build
tests and the host emulation.
"""
from __future__ import annotations

from .checks import _CTYPES, _HALF_CTYPES
from .launch import _flags


def name_expressions(cover: bool = False) -> dict:
    """Every kernel instance this module can request, by file: {file: [name expression]}.

    With ``cover``, a subset in which every value of every template parameter appears, next to
    both the first and the last value of every other one (for quick compile checks).
    """
    import itertools  # noqa: PLC0415

    def combos(domains):
        if not cover:
            return list(itertools.product(*domains))
        out = []
        for base in ([d[0] for d in domains], [d[-1] for d in domains]):
            for i, d in enumerate(domains):
                for v in d:
                    c = tuple(base[:i] + [v] + base[i + 1:])
                    if c not in out:
                        out.append(c)
        return out

    def names(kernel, *choices):
        tf = (False, True)
        exact = combos([tuple(_CTYPES.values()), *choices, (False,), tf])  # no master weights
        half = combos([tuple(_HALF_CTYPES.values()), *choices, tf, tf])
        return [f"fusedopt::cuda::{kernel}<{c[0]}, {_flags(*c[1:])}>" for c in exact + half]

    tf, wd = (False, True), (0, 1, 2)
    optim = (names("sgd_kernel", tf, wd, tf, tf) + names("adagrad_kernel", tf, wd)
             + names("rmsprop_kernel", tf, wd, tf, tf) + names("adam_kernel", tf, wd, tf)
             + names("adamax_kernel", tf, wd)
             + [f"fusedopt::cuda::scale_kernel<{c}>" for c in _CTYPES.values()]
             + [f"fusedopt::cuda::found_inf_kernel<{c}>"
                for c in (*_CTYPES.values(), *_HALF_CTYPES.values())])
    reduce = ([f"fusedopt::cuda::sum_squares_partial<{c}>" for c in _CTYPES.values()]
              + ["fusedopt::cuda::sum_squares_finish"])
    lbfgs = [f"fusedopt::cuda::{k}" for c in _CTYPES.values()
             for k in (f"lbfgs_first<{c}>", f"lbfgs_pass<{c}, true>", f"lbfgs_pass<{c}, false>",
                       f"lbfgs_negate<{c}>", f"lbfgs_dot<{c}>", f"lbfgs_axpby<{c}>")]
    def compact_names(kernel, *choices):
        ptypes = ("float", *_HALF_CTYPES.values())
        return [f"fusedopt::cuda::{kernel}<{c[0]}, {_flags(*c[1:])}>"
                for c in combos([ptypes, *choices])]

    compact = (compact_names("sgd_compact", tf, wd, tf, tf)
               + compact_names("adagrad_compact", tf, wd)
               + compact_names("rmsprop_compact", tf, wd, tf, tf)
               + compact_names("adam_compact", tf, wd, tf) + compact_names("adamax_compact", tf, wd))
    return {"optim.cu": optim, "reduce.cu": reduce, "lbfgs.cu": lbfgs, "compact.cu": compact}
