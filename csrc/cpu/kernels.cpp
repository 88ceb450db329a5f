// csrc/cpu/kernels.cpp -- the OpenMP loops: load, call the rule, store.
//
// This file is compiled once per instruction set (FUSEDOPT_ISA = generic | avx2, see
// CMakeLists.txt). The rules are exact IEEE arithmetic with FMA contraction off, so every copy
// gives the same bits; only the vector width differs.
#include <cstdint>
#include <type_traits>
#include <vector>

#include "fusedopt/blocked_sum.h"
#include "fusedopt/rules.h"
#include "kernels.h"
#include "parallel.h"

#ifndef FUSEDOPT_ISA
#error "FUSEDOPT_ISA must name the instruction set of this copy (generic, avx2)"
#endif

// The arrays of a call are checked to be disjoint before any kernel runs (csrc/cpu/arrays.cpp),
// so the iterations of every elementwise loop are independent. GCC does not trust __restrict on
// local pointers and would otherwise fall back to scalar code on a run-time alias test.
#define FUSEDOPT_IVDEP _Pragma("GCC ivdep")

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

template <typename T>
inline T* as(void* p) { return static_cast<T*>(p); }
template <typename T>
inline const T* as(const void* p) { return static_cast<const T*>(p); }

// ---------------------------------------------------------------------------------------------
// SGD

template <typename T, bool Max, int WD>
void sgd_plain(const Batch& b, const rules::SgdScalars<T> s0) {
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const rules::SgdScalars<T> s = s0;
        T* __restrict p = as<T>(sg.param);
        const T* __restrict g = as<T>(sg.grad);
        FUSEDOPT_IVDEP
        for (int64_t i = lo; i < hi; ++i) {
            T pi = p[i];
            rules::sgd_update<T, Max, WD>(pi, g[i], s);
            p[i] = pi;
        }
    });
}

template <typename T, bool Max, int WD, bool Nesterov>
void sgd_momentum(const Batch& b, const rules::SgdScalars<T> s0) {
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const rules::SgdScalars<T> s = s0;
        T* __restrict p = as<T>(sg.param);
        const T* __restrict g = as<T>(sg.grad);
        T* __restrict buf = as<T>(sg.state[0]);
        FUSEDOPT_IVDEP
        for (int64_t i = lo; i < hi; ++i) {
            T pi = p[i], bi = buf[i];
            rules::sgd_momentum_update<T, Max, WD, Nesterov>(pi, g[i], bi, s);
            p[i] = pi;
            buf[i] = bi;
        }
    });
}

template <typename T>
void sgd_typed(const Batch& b, const SgdArgs& a) {
    const rules::SgdScalars<T> s{T(a.lr), T(a.momentum), T(a.one_minus_dampening),
                                 T(a.weight_decay), a.first_step};
    with_bool(a.maximize, [&](auto Max) {
        with_decay(a.weight_decay_mode, [&](auto WD) {
            if (!a.has_momentum) {
                sgd_plain<T, Max.value, WD.value>(b, s);
            } else {
                with_bool(a.nesterov, [&](auto Nes) {
                    sgd_momentum<T, Max.value, WD.value, Nes.value>(b, s);
                });
            }
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Adagrad

template <typename T, bool Max, int WD>
void adagrad_loop(const Batch& b, const rules::AdagradScalars<T> s0) {
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const rules::AdagradScalars<T> s = s0;
        T* __restrict p = as<T>(sg.param);
        const T* __restrict g = as<T>(sg.grad);
        T* __restrict sum = as<T>(sg.state[0]);
        FUSEDOPT_IVDEP
        for (int64_t i = lo; i < hi; ++i) {
            T pi = p[i], si = sum[i];
            rules::adagrad_update<T, Max, WD>(pi, g[i], si, s);
            p[i] = pi;
            sum[i] = si;
        }
    });
}

template <typename T>
void adagrad_typed(const Batch& b, const AdagradArgs& a) {
    const rules::AdagradScalars<T> s{T(a.clr), T(a.eps), T(a.eps_root), T(a.weight_decay)};
    with_bool(a.maximize, [&](auto Max) {
        with_decay(a.weight_decay_mode,
                   [&](auto WD) { adagrad_loop<T, Max.value, WD.value>(b, s); });
    });
}

// ---------------------------------------------------------------------------------------------
// RMSprop

template <typename T, bool Max, int WD, bool Centered, bool Mom>
void rmsprop_loop(const Batch& b, const rules::RmspropScalars<T> s0) {
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const rules::RmspropScalars<T> s = s0;
        T* __restrict p = as<T>(sg.param);
        const T* __restrict g = as<T>(sg.grad);
        T* __restrict sq = as<T>(sg.state[0]);
        T* __restrict ga = Centered ? as<T>(sg.state[1]) : nullptr;
        T* __restrict buf = Mom ? as<T>(sg.state[2]) : nullptr;
        FUSEDOPT_IVDEP
        for (int64_t i = lo; i < hi; ++i) {
            T pi = p[i], sqi = sq[i];
            T gai = Centered ? ga[i] : T(0);
            T bi = Mom ? buf[i] : T(0);
            rules::rmsprop_update<T, Max, WD, Centered, Mom>(pi, g[i], sqi, gai, bi, s);
            p[i] = pi;
            sq[i] = sqi;
            if (Centered) ga[i] = gai;
            if (Mom) buf[i] = bi;
        }
    });
}

template <typename T>
void rmsprop_typed(const Batch& b, const RmspropArgs& a) {
    const rules::RmspropScalars<T> s{T(a.lr),  T(a.alpha),        T(a.one_minus_alpha),
                                     T(a.eps), T(a.eps_root),     T(a.weight_decay),
                                     T(a.momentum)};
    with_bool(a.maximize, [&](auto Max) {
        with_decay(a.weight_decay_mode, [&](auto WD) {
            with_bool(a.centered, [&](auto C) {
                with_bool(a.has_momentum, [&](auto M) {
                    rmsprop_loop<T, Max.value, WD.value, C.value, M.value>(b, s);
                });
            });
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Adam / AdamW / AMSGrad

template <typename T, bool Max, int WD, bool Ams>
void adam_loop(const Batch& b, const rules::AdamScalars<T> s0) {
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const rules::AdamScalars<T> s = s0;
        T* __restrict p = as<T>(sg.param);
        const T* __restrict g = as<T>(sg.grad);
        T* __restrict m = as<T>(sg.state[0]);
        T* __restrict v = as<T>(sg.state[1]);
        T* __restrict vmax = Ams ? as<T>(sg.state[2]) : nullptr;
        FUSEDOPT_IVDEP
        for (int64_t i = lo; i < hi; ++i) {
            T pi = p[i], mi = m[i], vi = v[i];
            T vmi = Ams ? vmax[i] : T(0);
            rules::adam_update<T, Max, WD, Ams>(pi, g[i], mi, vi, vmi, s);
            p[i] = pi;
            m[i] = mi;
            v[i] = vi;
            if (Ams) vmax[i] = vmi;
        }
    });
}

template <typename T>
void adam_typed(const Batch& b, const AdamArgs& a) {
    const rules::AdamScalars<T> s{T(a.lr),
                                  T(a.beta1),
                                  T(a.one_minus_beta1),
                                  T(a.beta2),
                                  T(a.one_minus_beta2),
                                  T(a.bias_correction1),
                                  T(a.bias_correction2),
                                  T(a.eps),
                                  T(a.eps_root),
                                  T(a.weight_decay),
                                  T(a.decay)};
    with_bool(a.maximize, [&](auto Max) {
        with_decay(a.weight_decay_mode, [&](auto WD) {
            with_bool(a.amsgrad,
                      [&](auto Ams) { adam_loop<T, Max.value, WD.value, Ams.value>(b, s); });
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Adamax

template <typename T, bool Max, int WD>
void adamax_loop(const Batch& b, const rules::AdamaxScalars<T> s0) {
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const rules::AdamaxScalars<T> s = s0;
        T* __restrict p = as<T>(sg.param);
        const T* __restrict g = as<T>(sg.grad);
        T* __restrict m = as<T>(sg.state[0]);
        T* __restrict u = as<T>(sg.state[1]);
        FUSEDOPT_IVDEP
        for (int64_t i = lo; i < hi; ++i) {
            T pi = p[i], mi = m[i], ui = u[i];
            rules::adamax_update<T, Max, WD>(pi, g[i], mi, ui, s);
            p[i] = pi;
            m[i] = mi;
            u[i] = ui;
        }
    });
}

template <typename T>
void adamax_typed(const Batch& b, const AdamaxArgs& a) {
    const rules::AdamaxScalars<T> s{T(a.clr), T(a.beta1),        T(a.one_minus_beta1),
                                    T(a.beta2), T(a.eps), T(a.weight_decay)};
    with_bool(a.maximize, [&](auto Max) {
        with_decay(a.weight_decay_mode,
                   [&](auto WD) { adamax_loop<T, Max.value, WD.value>(b, s); });
    });
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

template <typename T>
void scale_typed(const Batch& b, double factor) {
    const T f = T(factor);
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        T* __restrict p = as<T>(sg.param);
        FUSEDOPT_IVDEP
        for (int64_t i = lo; i < hi; ++i) p[i] = p[i] * f;
    });
}

// Reads R streams (param, grad, state0, state1, state2) and writes W of (param, state0, ...).
template <typename T, int R, int W>
void stream_loop(const Batch& b) {
    parallel_for_elements(b, [&](const Segment& sg, int64_t lo, int64_t hi) {
        const T* in[5] = {as<T>(sg.param), as<T>(sg.grad), as<T>(sg.state[0]),
                          as<T>(sg.state[1]), as<T>(sg.state[2])};
        T* out[4] = {as<T>(sg.param), as<T>(sg.state[0]), as<T>(sg.state[1]),
                     as<T>(sg.state[2])};
        FUSEDOPT_IVDEP
        for (int64_t i = lo; i < hi; ++i) {
            T acc = T(0);
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) acc = acc + in[r][i];
#pragma GCC unroll 8
            for (int w = 0; w < W; ++w) out[w][i] = acc;
        }
    });
}

template <typename T, int R>
void stream_w(const Batch& b, int writes) {
    switch (writes) {
        case 0: stream_loop<T, R, 0>(b); break;
        case 1: stream_loop<T, R, 1>(b); break;
        case 2: if (R >= 3) stream_loop<T, R, 2>(b); break;
        case 3: if (R >= 4) stream_loop<T, R, 3>(b); break;
        case 4: if (R >= 5) stream_loop<T, R, 4>(b); break;
    }
}

template <typename T>
void stream_typed(const Batch& b, int reads, int writes) {
    switch (reads) {
        case 1: stream_w<T, 1>(b, writes); break;
        case 2: stream_w<T, 2>(b, writes); break;
        case 3: stream_w<T, 3>(b, writes); break;
        case 4: stream_w<T, 4>(b, writes); break;
        case 5: stream_w<T, 5>(b, writes); break;
    }
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

void sgd(const Batch& b, const SgdArgs& a) { FUSEDOPT_BY_DTYPE(b, sgd_typed<T>(b, a)); }
void adagrad(const Batch& b, const AdagradArgs& a) { FUSEDOPT_BY_DTYPE(b, adagrad_typed<T>(b, a)); }
void rmsprop(const Batch& b, const RmspropArgs& a) { FUSEDOPT_BY_DTYPE(b, rmsprop_typed<T>(b, a)); }
void adam(const Batch& b, const AdamArgs& a) { FUSEDOPT_BY_DTYPE(b, adam_typed<T>(b, a)); }
void adamax(const Batch& b, const AdamaxArgs& a) { FUSEDOPT_BY_DTYPE(b, adamax_typed<T>(b, a)); }
double sum_squares(const Batch& b) {
    double r = 0.0;
    FUSEDOPT_BY_DTYPE(b, r = sum_squares_typed<T>(b));
    return r;
}
void scale(const Batch& b, double f) { FUSEDOPT_BY_DTYPE(b, scale_typed<T>(b, f)); }
void stream(const Batch& b, int reads, int writes) {
    FUSEDOPT_BY_DTYPE(b, stream_typed<T>(b, reads, writes));
}

#undef FUSEDOPT_BY_DTYPE

}  // namespace

#define FUSEDOPT_STR2(x) #x
#define FUSEDOPT_STR(x) FUSEDOPT_STR2(x)
const KernelTable& table() {
    static const KernelTable t{FUSEDOPT_STR(FUSEDOPT_ISA), sgd, adagrad, rmsprop, adam, adamax,
                               sum_squares, scale, stream};
    return t;
}

}  // namespace FUSEDOPT_ISA
}  // namespace cpu
}  // namespace fusedopt
