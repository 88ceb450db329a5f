// csrc/cpu/lbfgs_compact.h -- the instruction-set copies of the compact-form direction's two
// passes and of L-BFGS-B's rows_dots_many (lbfgs_compact.cpp, compiled once per instruction
// set like kernels.cpp) and their run-time choice (lbfgs_compact_dispatch.cpp: the copy of the
// kernels' instruction set, fusedopt.set_isa). Every copy gives the same bits: the float64
// blocked sums of fusedopt/blocked_sum.h, no FMA contraction. The functions are those of lbfgs.h.
#pragma once
#include <cstdint>

#include "lbfgs.h"

namespace fusedopt {
namespace cpu {

// The name of the kernels' instruction-set copy in use (bindings.cpp: fusedopt.isa()).
const char* active_isa();

namespace lbfgs {

template <typename T>
struct CompactFns {
    void (*dots)(double*, const Ring<T>&, const T*, int64_t, bool);
    void (*combine)(double*, T*, const T*, const Ring<T>&, const double*, const double*, double,
                    bool);
    double (*direction)(T*, const T*, const Ring<T>&, double*, double*, int64_t);
    void (*rows_dots_many)(double*, const T*, const T*, const T* const*, int64_t, int64_t,
                           int64_t, const GramRow*);
};

struct CompactDirectionTable {
    const char* name;
    CompactFns<float> f32;
    CompactFns<double> f64;
};

}  // namespace lbfgs

namespace generic { const lbfgs::CompactDirectionTable& compact_direction_table(); }
namespace avx2 { const lbfgs::CompactDirectionTable& compact_direction_table(); }
namespace avx512 { const lbfgs::CompactDirectionTable& compact_direction_table(); }

}  // namespace cpu
}  // namespace fusedopt
