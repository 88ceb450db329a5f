// csrc/cpu/kernels.cpp -- the OpenMP loops: load, call the rule, store.
//
// This file is compiled once per instruction set (FUSEDOPT_ISA = generic | avx2, see
// CMakeLists.txt). The rules are exact IEEE arithmetic with FMA contraction off, so every copy
// gives the same bits; only the vector width differs.
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "fusedopt/blocked_sum.h"
#include "fusedopt/functors.h"
#include "kernels.h"
#include "loops.h"
#include "parallel.h"

namespace fusedopt {
namespace cpu {
namespace FUSEDOPT_ISA {
namespace {

using rules::kDecoupled;
using rules::kL2;
using rules::kNone;

// Calls f(std::integral_constant<bool, flag>).
template <typename F>
inline void with_bool(bool flag, F&& f) {
    if (flag)
        f(std::true_type{});
    else
        f(std::false_type{});
}

// Calls f(std::integral_constant<int, mode>) for a weight decay mode.
template <typename F>
inline void with_decay(int mode, F&& f) {
    switch (mode) {
        case kL2: f(std::integral_constant<int, kL2>{}); break;
        case kDecoupled: f(std::integral_constant<int, kDecoupled>{}); break;
        default: f(std::integral_constant<int, kNone>{}); break;
    }
}

// ---------------------------------------------------------------------------------------------
// The one loop: load the slots the functor uses, call it, store them (as apply<> in
// csrc/cuda/multi_tensor.cuh). Amp: the functor sees g / scale.

template <typename T, bool Amp, typename Op>
void elementwise(const Batch& b, const Op& op0, T scale) {
    constexpr unsigned S = Op::kStates;
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const Op op = op0;  // a local copy: the scalars stay in registers
        T* __restrict p = as<T>(sg.param);
        const T* __restrict g = as<T>(sg.grad);
        T* __restrict s0 = as<T>(sg.state[0]);
        T* __restrict s1 = as<T>(sg.state[1]);
        T* __restrict s2 = as<T>(sg.state[2]);
        FUSEDOPT_IVDEP
        for (int64_t i = lo; i < hi; ++i) {
            T pi = p[i];
            T gi = Op::kReadsGrad ? g[i] : T(0);
            if (Amp) gi = gi / scale;
            T a = (S & state_bit(0)) ? s0[i] : T(0);
            T c = (S & state_bit(1)) ? s1[i] : T(0);
            T d = (S & state_bit(2)) ? s2[i] : T(0);
            op(pi, gi, a, c, d);
            p[i] = pi;
            if (S & state_bit(0)) s0[i] = a;
            if (S & state_bit(1)) s1[i] = c;
            if (S & state_bit(2)) s2[i] = d;
        }
    });
}

// Runs `op` with or without the AMP scale.
template <typename T, typename Op>
void run_op(const Batch& b, const Op& op, const float* grad_scale) {
    if (grad_scale) {
        elementwise<T, true>(b, op, static_cast<T>(*grad_scale));
    } else {
        elementwise<T, false>(b, op, T(1));
    }
}

// The flags of each rule as template arguments (the instance), the scalars cast once to T.

template <typename T>
void sgd_typed(const Batch& b, const rules::SgdScalars<double>& s, const rules::SgdFlags& f,
               const float* gs) {
    const rules::SgdScalars<T> st = s.cast<T>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.has_momentum, [&](auto Mom) {
                with_bool(f.nesterov, [&](auto Nes) {
                    run_op<T>(b, SgdOp<T, Max.value, WD.value, Mom.value, Nes.value>{st}, gs);
                });
            });
        });
    });
}

template <typename T>
void adagrad_typed(const Batch& b, const rules::AdagradScalars<double>& s,
                   const rules::AdagradFlags& f, const float* gs) {
    const rules::AdagradScalars<T> st = s.cast<T>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            run_op<T>(b, AdagradOp<T, Max.value, WD.value>{st}, gs);
        });
    });
}

template <typename T>
void rmsprop_typed(const Batch& b, const rules::RmspropScalars<double>& s,
                   const rules::RmspropFlags& f, const float* gs) {
    const rules::RmspropScalars<T> st = s.cast<T>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.centered, [&](auto C) {
                with_bool(f.has_momentum, [&](auto Mom) {
                    run_op<T>(b, RmspropOp<T, Max.value, WD.value, C.value, Mom.value>{st}, gs);
                });
            });
        });
    });
}

template <typename T>
void adam_typed(const Batch& b, const rules::AdamScalars<double>& s, const rules::AdamFlags& f,
                const float* gs) {
    const rules::AdamScalars<T> st = s.cast<T>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.amsgrad, [&](auto Ams) {
                run_op<T>(b, AdamOp<T, Max.value, WD.value, Ams.value>{st}, gs);
            });
        });
    });
}

template <typename T>
void adamax_typed(const Batch& b, const rules::AdamaxScalars<double>& s,
                  const rules::AdamaxFlags& f, const float* gs) {
    const rules::AdamaxScalars<T> st = s.cast<T>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            run_op<T>(b, AdamaxOp<T, Max.value, WD.value>{st}, gs);
        });
    });
}

template <typename T>
void scale_typed(const Batch& b, double factor) {
    elementwise<T, false>(b, ScaleOp<T>{static_cast<T>(factor)}, T(1));
}

// Whether any element of the params slot is infinite or NaN: x - x is NaN exactly then.
template <typename T>
bool nonfinite_typed(const Batch& b) {
    std::atomic<bool> found{false};
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const T* __restrict x = as<T>(sg.param);
        bool bad = false;
        for (int64_t i = lo; i < hi; ++i) bad |= !(x[i] - x[i] == x[i] - x[i]);
        if (bad) found.store(true, std::memory_order_relaxed);
    });
    return found.load();
}

// ---------------------------------------------------------------------------------------------
// Reductions and helpers

// Sum of squares of x[lo:hi] in float64: the one blocked sum of fusedopt/blocked_sum.h.
template <typename T>
double block_sum_squares(const T* __restrict x, int64_t lo, int64_t hi) {
    return block_sum(lo, hi, [&](int64_t i) {
        const double v = static_cast<double>(x[i]);
        return v * v;
    });
}

struct BlockRef {
    int64_t seg;
    int64_t begin;
};

template <typename T>
double sum_squares_typed(const Batch& b) {
    // Reused buffers: nothing is allocated once they have grown to the largest batch seen.
    thread_local std::vector<BlockRef> blocks;
    thread_local std::vector<double> partial;
    blocks.clear();
    for (int64_t k = 0; k < b.nsegs; ++k)
        for (int64_t at = 0; at < b.segs[k].size; at += kReduceBlock) blocks.push_back({k, at});
    const int64_t nb = static_cast<int64_t>(blocks.size());
    partial.resize(static_cast<size_t>(nb));
    const BlockRef* bl = blocks.data();
    double* part = partial.data();
    // One block per chunk, any thread; the partials are then added in block order.
    parallel_chunks(nb, threads_for(b.total), [&](int64_t k) {
        const Segment& s = b.segs[bl[k].seg];
        const int64_t hi = std::min(s.size, bl[k].begin + kReduceBlock);
        part[k] = block_sum_squares(as<T>(s.param), bl[k].begin, hi);
    });
    double total = 0.0;
    for (int64_t k = 0; k < nb; ++k) total = total + part[k];
    return total;
}

// ---------------------------------------------------------------------------------------------
// dtype dispatch

#define FUSEDOPT_BY_DTYPE(batch, call)                          \
    do {                                                        \
        if ((batch).dtype == DType::kFloat32) {                 \
            using T = float;                                    \
            call;                                               \
        } else {                                                \
            using T = double;                                   \
            call;                                               \
        }                                                       \
    } while (0)

void sgd(const Batch& b, const rules::SgdScalars<double>& s, const rules::SgdFlags& f,
         const float* gs) {
    FUSEDOPT_BY_DTYPE(b, sgd_typed<T>(b, s, f, gs));
}
void adagrad(const Batch& b, const rules::AdagradScalars<double>& s, const rules::AdagradFlags& f,
             const float* gs) {
    FUSEDOPT_BY_DTYPE(b, adagrad_typed<T>(b, s, f, gs));
}
void rmsprop(const Batch& b, const rules::RmspropScalars<double>& s, const rules::RmspropFlags& f,
             const float* gs) {
    FUSEDOPT_BY_DTYPE(b, rmsprop_typed<T>(b, s, f, gs));
}
void adam(const Batch& b, const rules::AdamScalars<double>& s, const rules::AdamFlags& f,
          const float* gs) {
    FUSEDOPT_BY_DTYPE(b, adam_typed<T>(b, s, f, gs));
}
void adamax(const Batch& b, const rules::AdamaxScalars<double>& s, const rules::AdamaxFlags& f,
            const float* gs) {
    FUSEDOPT_BY_DTYPE(b, adamax_typed<T>(b, s, f, gs));
}
double sum_squares(const Batch& b) {
    double r = 0.0;
    FUSEDOPT_BY_DTYPE(b, r = sum_squares_typed<T>(b));
    return r;
}
void scale(const Batch& b, double f) { FUSEDOPT_BY_DTYPE(b, scale_typed<T>(b, f)); }
bool nonfinite(const Batch& b) {
    bool r = false;
    FUSEDOPT_BY_DTYPE(b, r = nonfinite_typed<T>(b));
    return r;
}

#undef FUSEDOPT_BY_DTYPE

}  // namespace

#define FUSEDOPT_STR2(x) #x
#define FUSEDOPT_STR(x) FUSEDOPT_STR2(x)
const KernelTable& table() {
    static const KernelTable t{FUSEDOPT_STR(FUSEDOPT_ISA), sgd, adagrad, rmsprop, adam, adamax,
                               sum_squares, scale, nonfinite};
    return t;
}

}  // namespace FUSEDOPT_ISA
}  // namespace cpu
}  // namespace fusedopt
