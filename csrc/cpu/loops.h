// csrc/cpu/loops.h -- what every OpenMP loop file (kernels.cpp, stream.cpp) shares.
#pragma once

#ifndef FUSEDOPT_ISA
#error "FUSEDOPT_ISA must name the instruction set of this copy (generic, avx2, avx512)"
#endif

// The arrays of a call are checked to be disjoint before any kernel runs (csrc/cpu/arrays.cpp),
// so the iterations of every elementwise loop are independent. GCC does not trust __restrict on
// local pointers and would otherwise fall back to scalar code on a run-time alias test.
#define FUSEDOPT_IVDEP _Pragma("GCC ivdep")

#include <type_traits>

#include "flags.h"   // with_bool: the flags of a rule as template arguments
#include "fusedopt/rules/common.h"

namespace fusedopt {
namespace cpu {

// A slot's pointer as the array's element type.
template <typename T>
inline T* as(void* p) { return static_cast<T*>(p); }
template <typename T>
inline const T* as(const void* p) { return static_cast<const T*>(p); }

// f(std::integral_constant<int, mode>) for a weight decay mode (rules::WeightDecay).
template <typename F>
inline void with_decay(int mode, F&& f) {
    switch (mode) {
        case rules::kL2: f(std::integral_constant<int, rules::kL2>{}); break;
        case rules::kDecoupled: f(std::integral_constant<int, rules::kDecoupled>{}); break;
        default: f(std::integral_constant<int, rules::kNone>{}); break;
    }
}

}  // namespace cpu
}  // namespace fusedopt
