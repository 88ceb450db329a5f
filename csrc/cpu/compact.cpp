// csrc/cpu/compact.cpp -- the block loop of compact state (see compact.h): bfloat16 and 8-bit
// blockwise state, stochastic rounding of bfloat16 params.
//
// Compiled once per instruction set (FUSEDOPT_ISA), like kernels.cpp. Only float32 math exists
// here (compact state needs float32 math), and only the rule's loop over a block is a template
// instance; loading and storing a block are plain functions shared by every rule, so the new
// kernels add few instances to the build.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "compact.h"
#include "fusedopt/compact.h"
#include "fusedopt/functors.h"
#include "fusedopt/half.h"
#include "loops.h"
#include "parallel.h"

namespace fusedopt {
namespace cpu {
namespace FUSEDOPT_ISA {
namespace {

constexpr int kB = kQuantBlock;

// n values of a param or grad of dtype d, from element `at`, as float32 (exact).
__attribute__((noinline)) void load_values(DType d, const void* src, int64_t at, int n,
                                           float* __restrict out) {
    if (d == DType::kFloat32) {
        const float* __restrict s = as<float>(src) + at;
        for (int i = 0; i < n; ++i) out[i] = s[i];
    } else if (d == DType::kFloat16) {
        const uint16_t* __restrict s = as<uint16_t>(src) + at;
        for (int i = 0; i < n; ++i) out[i] = fo_half_to_float(s[i]);
    } else {
        const uint16_t* __restrict s = as<uint16_t>(src) + at;
        for (int i = 0; i < n; ++i) out[i] = fo_bf16_to_float(s[i]);
    }
}

// State slot k of tensor t, block at `at` (a multiple of kB): widened or dequantized
// (map[code] * absmax, one float32 multiplication).
__attribute__((noinline)) void load_state(const CompactCall& c, const CompactTensor& t, int k,
                                          int64_t at, int n, float* __restrict out) {
    switch (t.kind[k]) {
        case StateKind::kFloat32: {
            const float* __restrict s = as<float>(t.state[k]) + at;
            for (int i = 0; i < n; ++i) out[i] = s[i];
            break;
        }
        case StateKind::kBFloat16: {
            const uint16_t* __restrict s = as<uint16_t>(t.state[k]) + at;
            for (int i = 0; i < n; ++i) out[i] = fo_bf16_to_float(s[i]);
            break;
        }
        case StateKind::kUInt8: {
            const uint8_t* __restrict q = as<uint8_t>(t.state[k]) + at;
            const float* __restrict m = c.map[t.qsigned[k]];
            const float a = t.absmax[k][at / kB];
            for (int i = 0; i < n; ++i) out[i] = m[q[i]] * a;
            break;
        }
    }
}

// The codes of a block of values with absmax a (fusedopt/compact.h fo_quant_encode of x / a,
// or of 0 where a == 0).
__attribute__((noinline)) void encode_block(const float* __restrict in, float a,
                                            uint8_t* __restrict q, const int* __restrict lut,
                                            const float* __restrict th, int n) {
    if (a == 0.0f) {
        const uint8_t zero = static_cast<uint8_t>(fo_quant_encode(0.0f, lut, th));
        for (int i = 0; i < n; ++i) q[i] = zero;
        return;
    }
    for (int i = 0; i < n; ++i) q[i] = static_cast<uint8_t>(fo_quant_encode(in[i] / a, lut, th));
}

// The block's new values into state slot k: as float32, rounded to bfloat16 (nearest even), or
// requantized: absmax = max |x| (a NaN wins), codes of x / absmax (0 where absmax == 0).
__attribute__((noinline)) void store_state(const CompactCall& c, const CompactTensor& t, int k,
                                           int64_t at, int n, const float* __restrict in) {
    switch (t.kind[k]) {
        case StateKind::kFloat32: {
            float* __restrict s = as<float>(t.state[k]) + at;
            for (int i = 0; i < n; ++i) s[i] = in[i];
            break;
        }
        case StateKind::kBFloat16: {
            uint16_t* __restrict s = as<uint16_t>(t.state[k]) + at;
            for (int i = 0; i < n; ++i) s[i] = fo_float_to_bf16(in[i]);
            break;
        }
        case StateKind::kUInt8: {
            // |x| as bits orders like |x| itself, and any NaN lies above infinity.
            unsigned mx = 0;
            for (int i = 0; i < n; ++i) {
                const unsigned b = fo_float_bits(in[i]) & 0x7fffffffu;
                mx = b > mx ? b : mx;
            }
            const float a = fo_bits_float(mx);
            t.absmax[k][at / kB] = a;
            uint8_t* __restrict q = as<uint8_t>(t.state[k]) + at;
            const float* __restrict th = c.thresholds[t.qsigned[k]];
            const int* __restrict lut = c.encode[t.qsigned[k]];
            encode_block(in, a, q, lut, th, n);
            break;
        }
    }
}

// The block's new param values: into the master weights (when given) and the param, rounded to
// nearest even or (bfloat16, stochastic_rounding) stochastically.
__attribute__((noinline)) void store_param(const CompactCall& c, const CompactTensor& t,
                                           int64_t at, int n, const float* __restrict in) {
    if (t.master) {
        float* __restrict mw = as<float>(t.master) + at;
        for (int i = 0; i < n; ++i) mw[i] = in[i];
    }
    if (t.dtype == DType::kFloat32) {
        float* __restrict p = as<float>(t.param) + at;
        for (int i = 0; i < n; ++i) p[i] = in[i];
    } else if (t.dtype == DType::kFloat16) {
        uint16_t* __restrict p = as<uint16_t>(t.param) + at;
        for (int i = 0; i < n; ++i) p[i] = fo_float_to_half(in[i]);
    } else if (c.stochastic_rounding) {
        uint16_t* __restrict p = as<uint16_t>(t.param) + at;
        const unsigned key = t.sr_key;
        const unsigned hi = static_cast<unsigned>(static_cast<uint64_t>(at) >> 32);
        const unsigned lo = static_cast<unsigned>(at);  // a block never crosses 2^32
        for (int i = 0; i < n; ++i)
            p[i] = fo_float_to_bf16_sr(in[i], key, lo + static_cast<unsigned>(i), hi);
    } else {
        uint16_t* __restrict p = as<uint16_t>(t.param) + at;
        for (int i = 0; i < n; ++i) p[i] = fo_float_to_bf16(in[i]);
    }
}

struct Unit {
    int64_t tensor;
    int64_t begin;
};

// The loop: chunks of kCompactChunk elements of one tensor on the pool's threads; in each, block
// by block, load, run the functor, store.
template <typename Op>
void compact_loop(const CompactCall& c, const Op& op0) {
    constexpr unsigned S = Op::kStates;
    thread_local std::vector<Unit> units;  // reused: no allocation once grown
    units.clear();
    for (int64_t k = 0; k < c.ntensors; ++k)
        for (int64_t at = 0; at < c.tensors[k].size; at += kCompactChunk) units.push_back({k, at});
    const Unit* u = units.data();
    parallel_chunks(static_cast<int64_t>(units.size()), threads_for(c.total), [&](int64_t j) {
        const Op op = op0;  // a local copy: the scalars stay in registers
        const CompactTensor& t = c.tensors[u[j].tensor];
        const int64_t end = std::min(t.size, u[j].begin + kCompactChunk);
        alignas(64) float p[kB], g[kB], s0[kB], s1[kB], s2[kB];
        for (int64_t at = u[j].begin; at < end; at += kB) {
            const int n = static_cast<int>(std::min<int64_t>(kB, end - at));
            load_values(t.master ? DType::kFloat32 : t.dtype, t.master ? t.master : t.param, at,
                        n, p);
            load_values(t.dtype, t.grad, at, n, g);
            if (c.grad_scale) {
                const float scale = *c.grad_scale;
                for (int i = 0; i < n; ++i) g[i] = g[i] / scale;
            }
            if (S & state_bit(0)) load_state(c, t, 0, at, n, s0);
            if (S & state_bit(1)) load_state(c, t, 1, at, n, s1);
            if (S & state_bit(2)) load_state(c, t, 2, at, n, s2);
            FUSEDOPT_IVDEP
            for (int i = 0; i < n; ++i) op(p[i], g[i], s0[i], s1[i], s2[i]);
            store_param(c, t, at, n, p);
            if (S & state_bit(0)) store_state(c, t, 0, at, n, s0);
            if (S & state_bit(1)) store_state(c, t, 1, at, n, s1);
            if (S & state_bit(2)) store_state(c, t, 2, at, n, s2);
        }
    });
}

void sgd(const CompactCall& c, const rules::SgdScalars<double>& s, const rules::SgdFlags& f) {
    const rules::SgdScalars<float> st = s.cast<float>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.has_momentum, [&](auto Mom) {
                with_bool(f.nesterov, [&](auto Nes) {
                    compact_loop(c, SgdOp<float, Max.value, WD.value, Mom.value, Nes.value>{st});
                });
            });
        });
    });
}

void adagrad(const CompactCall& c, const rules::AdagradScalars<double>& s,
             const rules::AdagradFlags& f) {
    const rules::AdagradScalars<float> st = s.cast<float>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            compact_loop(c, AdagradOp<float, Max.value, WD.value>{st});
        });
    });
}

void rmsprop(const CompactCall& c, const rules::RmspropScalars<double>& s,
             const rules::RmspropFlags& f) {
    const rules::RmspropScalars<float> st = s.cast<float>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.centered, [&](auto C) {
                with_bool(f.has_momentum, [&](auto Mom) {
                    compact_loop(c, RmspropOp<float, Max.value, WD.value, C.value, Mom.value>{st});
                });
            });
        });
    });
}

void adam(const CompactCall& c, const rules::AdamScalars<double>& s, const rules::AdamFlags& f) {
    const rules::AdamScalars<float> st = s.cast<float>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            with_bool(f.amsgrad, [&](auto Ams) {
                compact_loop(c, AdamOp<float, Max.value, WD.value, Ams.value>{st});
            });
        });
    });
}

void adamax(const CompactCall& c, const rules::AdamaxScalars<double>& s,
            const rules::AdamaxFlags& f) {
    const rules::AdamaxScalars<float> st = s.cast<float>();
    with_bool(f.maximize, [&](auto Max) {
        with_decay(f.weight_decay_mode, [&](auto WD) {
            compact_loop(c, AdamaxOp<float, Max.value, WD.value>{st});
        });
    });
}

}  // namespace

#define FUSEDOPT_STR2(x) #x
#define FUSEDOPT_STR(x) FUSEDOPT_STR2(x)
const CompactTable& compact_table() {
    static const CompactTable t{FUSEDOPT_STR(FUSEDOPT_ISA), sgd, adagrad, rmsprop, adam, adamax};
    return t;
}

}  // namespace FUSEDOPT_ISA
}  // namespace cpu
}  // namespace fusedopt
