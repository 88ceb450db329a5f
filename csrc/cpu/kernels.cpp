// csrc/cpu/kernels.cpp -- the OpenMP loops: load, call the rule, store.
//
// This file is compiled once per instruction set (FUSEDOPT_ISA = generic | avx2 | avx512, see
// CMakeLists.txt). The rules are exact IEEE arithmetic with FMA contraction off, and the 16-bit
// conversions portable bit code (fusedopt/half.h), so every copy gives the same bits; only the
// vector width differs.
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "fusedopt/blocked_sum.h"
#include "fusedopt/functors.h"
#include "fusedopt/half.h"
#include "kernels.h"
#include "loops.h"
#include "parallel.h"

namespace fusedopt {
namespace cpu {
namespace FUSEDOPT_ISA {
namespace {

// ---------------------------------------------------------------------------------------------
// Storage types: how a param or grad is held in memory and read into the math type M. float32
// and float64 compute in their own type; float16 and bfloat16 (raw bits) in float32, through
// the conversions of fusedopt/half.h (exact widening, rounding to nearest even). Forced inline
// (FUSEDOPT_HD): with hundreds of instances in this file GCC would otherwise call them, and the
// loop would not vectorize.

struct Half {};  // float16 params and grads
struct BF16 {};  // bfloat16 params and grads

template <typename P>
struct Storage {
    using raw = P;
    using math = P;
    FUSEDOPT_HD static P load(P x) { return x; }
    FUSEDOPT_HD static P store(P x) { return x; }
};
template <>
struct Storage<Half> {
    using raw = uint16_t;
    using math = float;
    FUSEDOPT_HD static float load(uint16_t h) { return fo_half_to_float(h); }
    FUSEDOPT_HD static uint16_t store(float x) { return fo_float_to_half(x); }
};
template <>
struct Storage<BF16> {
    using raw = uint16_t;
    using math = float;
    FUSEDOPT_HD static float load(uint16_t b) { return fo_bf16_to_float(b); }
    FUSEDOPT_HD static uint16_t store(float x) { return fo_float_to_bf16(x); }
};
template <typename P>
using MathOf = typename Storage<P>::math;
template <typename P>
constexpr bool kIs16 = std::is_same<P, Half>::value || std::is_same<P, BF16>::value;

// ---------------------------------------------------------------------------------------------
// The one loop: load the slots the functor uses, call it, store them (as apply<> in
// csrc/cuda/multi_tensor.cuh). P: the storage type of params and grads, M its math type.
// Master (16-bit params): the functor updates the float32 master weight, and the param receives
// it rounded; without, the 16-bit param is widened, updated and rounded back. Amp: the functor
// sees g / scale.

template <typename P, bool Master, bool Amp, typename Op>
void elementwise(const Batch& b, const Op& op0, MathOf<P> scale) {
    using X = Storage<P>;
    using R = typename X::raw;
    using M = MathOf<P>;
    static_assert(!Master || kIs16<P>, "master weights belong to 16-bit params");
    constexpr unsigned S = Op::kStates;
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const Op op = op0;  // a local copy: the scalars stay in registers
        R* __restrict p = as<R>(sg.param);
        const R* __restrict g = as<R>(sg.grad);
        M* __restrict s0 = as<M>(sg.state[0]);
        M* __restrict s1 = as<M>(sg.state[1]);
        M* __restrict s2 = as<M>(sg.state[2]);
        float* __restrict mw = as<float>(sg.master);
        FUSEDOPT_IVDEP
        for (int64_t i = lo; i < hi; ++i) {
            M pi;
            if constexpr (Master) {
                pi = mw[i];
            } else {
                pi = X::load(p[i]);
            }
            M gi = Op::kReadsGrad ? X::load(g[i]) : M(0);
            if (Amp) gi = gi / scale;
            M a = (S & state_bit(0)) ? s0[i] : M(0);
            M c = (S & state_bit(1)) ? s1[i] : M(0);
            M d = (S & state_bit(2)) ? s2[i] : M(0);
            op(pi, gi, a, c, d);
            if constexpr (Master) mw[i] = pi;
            p[i] = X::store(pi);
            if (S & state_bit(0)) s0[i] = a;
            if (S & state_bit(1)) s1[i] = c;
            if (S & state_bit(2)) s2[i] = d;
        }
    });
}

// Runs `op` with or without the AMP scale and master weights.
template <typename P, typename Op>
void run_op(const Batch& b, const Op& op, const float* grad_scale) {
    using M = MathOf<P>;
    with_bool(grad_scale != nullptr, [&](auto Amp) {
        const M scale = Amp.value ? static_cast<M>(*grad_scale) : M(1);
        if constexpr (kIs16<P>) {
            if (b.master) {
                elementwise<P, true, Amp.value>(b, op, scale);
                return;
            }
        }
        elementwise<P, false, Amp.value>(b, op, scale);
    });
}

// The flags of each rule as template arguments (the instance), the scalars cast once to the
// math type T of the storage type P.

// SGD with momentum whose first_step (a loop-invariant branch of rules/sgd.h) is a constant of
// the instance: with float16 params GCC left that branch in the loop, which then did not
// vectorize (float32, float64 and bfloat16 were unswitched). The same rule, the same bits.
template <typename Op, bool First>
struct FirstStepKnown {
    static constexpr unsigned kStates = Op::kStates;
    static constexpr bool kReadsGrad = Op::kReadsGrad;
    Op op;
    template <typename M>
    FUSEDOPT_HD void operator()(M& p, M g, M& a, M& c, M& d) const {
        Op known = op;
        known.s.first_step = First;
        known(p, g, a, c, d);
    }
};

template <typename P>
void sgd_typed(const Batch& b, const rules::SgdScalars<double>& s, const rules::SgdFlags& f,
               const float* gs) {
    using T = MathOf<P>;
    const rules::SgdScalars<T> st = s.cast<T>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.has_momentum, [&](auto Mom) {
                with_bool(f.nesterov, [&](auto Nes) {
                    using Op = SgdOp<T, Max.value, WD.value, Mom.value, Nes.value>;
                    if constexpr (Mom.value && std::is_same<P, Half>::value) {
                        with_bool(st.first_step, [&](auto First) {
                            run_op<P>(b, FirstStepKnown<Op, First.value>{Op{st}}, gs);
                        });
                    } else {
                        run_op<P>(b, Op{st}, gs);
                    }
                });
            });
        });
    });
}

template <typename P>
void adagrad_typed(const Batch& b, const rules::AdagradScalars<double>& s,
                   const rules::AdagradFlags& f, const float* gs) {
    using T = MathOf<P>;
    const rules::AdagradScalars<T> st = s.cast<T>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            run_op<P>(b, AdagradOp<T, Max.value, WD.value>{st}, gs);
        });
    });
}

template <typename P>
void rmsprop_typed(const Batch& b, const rules::RmspropScalars<double>& s,
                   const rules::RmspropFlags& f, const float* gs) {
    using T = MathOf<P>;
    const rules::RmspropScalars<T> st = s.cast<T>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.centered, [&](auto C) {
                with_bool(f.has_momentum, [&](auto Mom) {
                    run_op<P>(b, RmspropOp<T, Max.value, WD.value, C.value, Mom.value>{st}, gs);
                });
            });
        });
    });
}

template <typename P>
void adam_typed(const Batch& b, const rules::AdamScalars<double>& s, const rules::AdamFlags& f,
                const float* gs) {
    using T = MathOf<P>;
    const rules::AdamScalars<T> st = s.cast<T>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.amsgrad, [&](auto Ams) {
                run_op<P>(b, AdamOp<T, Max.value, WD.value, Ams.value>{st}, gs);
            });
        });
    });
}

template <typename P>
void adamax_typed(const Batch& b, const rules::AdamaxScalars<double>& s,
                  const rules::AdamaxFlags& f, const float* gs) {
    using T = MathOf<P>;
    const rules::AdamaxScalars<T> st = s.cast<T>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            run_op<P>(b, AdamaxOp<T, Max.value, WD.value>{st}, gs);
        });
    });
}

template <typename T>
void scale_typed(const Batch& b, double factor) {
    elementwise<T, false, false>(b, ScaleOp<T>{static_cast<T>(factor)}, T(1));
}

// Whether any element of the params slot is infinite or NaN: x - x is NaN exactly then (16-bit
// values widened exactly first).
template <typename P>
bool nonfinite_typed(const Batch& b) {
    using X = Storage<P>;
    std::atomic<bool> found{false};
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const typename X::raw* __restrict x = as<typename X::raw>(sg.param);
        bool bad = false;
        for (int64_t i = lo; i < hi; ++i) {
            const MathOf<P> v = X::load(x[i]);
            bad |= !(v - v == v - v);
        }
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

// Runs `call` with P the storage type of the batch's dtype; FUSEDOPT_BY_FLOAT for the calls
// that take float32 and float64 only (the bindings refuse 16-bit arrays there).
#define FUSEDOPT_BY_DTYPE(batch, call)                          \
    do {                                                        \
        switch ((batch).dtype) {                                \
            case DType::kFloat32: { using P = float; call; break; }   \
            case DType::kFloat64: { using P = double; call; break; }  \
            case DType::kFloat16: { using P = Half; call; break; }    \
            case DType::kBFloat16: { using P = BF16; call; break; }   \
        }                                                       \
    } while (0)

#define FUSEDOPT_BY_FLOAT(batch, call)                          \
    do {                                                        \
        if ((batch).dtype == DType::kFloat32) {                 \
            using T = float;                                    \
            call;                                               \
        } else if ((batch).dtype == DType::kFloat64) {          \
            using T = double;                                   \
            call;                                               \
        }                                                       \
    } while (0)

void sgd(const Batch& b, const rules::SgdScalars<double>& s, const rules::SgdFlags& f,
         const float* gs) {
    FUSEDOPT_BY_DTYPE(b, sgd_typed<P>(b, s, f, gs));
}
void adagrad(const Batch& b, const rules::AdagradScalars<double>& s, const rules::AdagradFlags& f,
             const float* gs) {
    FUSEDOPT_BY_DTYPE(b, adagrad_typed<P>(b, s, f, gs));
}
void rmsprop(const Batch& b, const rules::RmspropScalars<double>& s, const rules::RmspropFlags& f,
             const float* gs) {
    FUSEDOPT_BY_DTYPE(b, rmsprop_typed<P>(b, s, f, gs));
}
void adam(const Batch& b, const rules::AdamScalars<double>& s, const rules::AdamFlags& f,
          const float* gs) {
    FUSEDOPT_BY_DTYPE(b, adam_typed<P>(b, s, f, gs));
}
void adamax(const Batch& b, const rules::AdamaxScalars<double>& s, const rules::AdamaxFlags& f,
            const float* gs) {
    FUSEDOPT_BY_DTYPE(b, adamax_typed<P>(b, s, f, gs));
}
double sum_squares(const Batch& b) {
    double r = 0.0;
    FUSEDOPT_BY_FLOAT(b, r = sum_squares_typed<T>(b));
    return r;
}
void scale(const Batch& b, double f) { FUSEDOPT_BY_FLOAT(b, scale_typed<T>(b, f)); }
bool nonfinite(const Batch& b) {
    bool r = false;
    FUSEDOPT_BY_DTYPE(b, r = nonfinite_typed<P>(b));
    return r;
}

#undef FUSEDOPT_BY_DTYPE
#undef FUSEDOPT_BY_FLOAT

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
