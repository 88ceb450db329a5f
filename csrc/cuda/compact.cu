// csrc/cuda/compact.cu -- compact optimizer state on the device (issue 10): bfloat16 and 8-bit
// blockwise state, stochastic rounding of bfloat16 params; the CUDA twin of csrc/cpu/compact.cpp.
//
// One thread block works on one quantization block (fusedopt::kQuantBlock = 256 elements, one
// element per thread) at a time, blocks looping over the quantization blocks of every tensor of
// the call. Each thread widens (bfloat16) or decodes (8-bit: map[code] * absmax, one float32
// multiplication) its element's states, runs the rule's functor (fusedopt/functors.h, the one
// the CPU loops call) and stores the param (rounded to nearest even, or stochastically with
// fusedopt/compact.h's hash) and the bfloat16/float32 states. For 8-bit states the block's new
// absmax is max |x| over the block, taken as the maximum of the bit patterns |x| (which order as
// |x|, a NaN above infinity), so the order of the reduction cannot change it; then every thread
// encodes fo_quant_normalize(x, absmax) (x times the block's float32 reciprocal) with fo_quant_encode (fusedopt/compact.h: the CPU's encoder, same tables,
// same tie rule). Hence the CPU's and the reference's bits.
//
// The table (int64, built by fusedopt/_cuda/compact.py) for `nt` tensors of one param dtype:
//   table[k], k = 0..nt                     first quantization block of tensor k; table[nt] == total
//   table[nt + 1 + k * kCompactStride + f]  field f of tensor k (CompactField)
// The quantization format's tables (fusedopt.quant, copied to the device once): `maps` (float32
// [2][256]: unsigned, signed), `thresholds` (float32 [2][256]) and `encode` (int32 [2][2 *
// kEncodeSpan]).
#include "fusedopt/compact.h"
#include "fusedopt/functors.h"
#include "multi_tensor.cuh"

namespace fusedopt {
namespace cuda {

enum CompactField : int {
    kFParam = 0,   // params (P)
    kFGrad = 1,    // grads (P)
    kFMaster = 2,  // float32 master weights, or 0
    kFState = 3,   // 3 fields: the state slots (float32, bfloat16 or uint8 codes), or 0
    kFAbsmax = 6,  // 3 fields: the float32 absmax of 8-bit state slots, or 0
    kFKinds = 9,   // bits 2k..2k+1: the kind of slot k (0 float32, 1 bfloat16, 2 uint8);
                   // bit 8 + k: slot k's 8-bit map is the signed one
    kFKey = 10,    // fo_sr_key(seed, step, the tensor's index in the call's list)
    kFSize = 11,   // number of elements (> 0)
};
constexpr int kCompactStride = 16;  // fields 12..15 unused (a power of two: shifts, no multiply)

static_assert(kThreads == kQuantBlock, "one thread per element of a quantization block");

// The maximum of |x| as bits, over the block: `acc` one unsigned per state slot in shared memory.
__device__ __forceinline__ void block_max(unsigned* acc, unsigned v) {
#if !defined(FUSEDOPT_HOST_EMULATION)
    // within the warp first (the maximum of integers: any order gives the same value)
    for (int d = 16; d > 0; d >>= 1) {
        const unsigned o = __shfl_xor_sync(0xffffffffu, v, d);
        v = o > v ? o : v;
    }
    if ((threadIdx.x & 31) == 0) atomicMax(acc, v);
#else
    atomicMax(acc, v);
#endif
}

// Bits of a compact kernel's `mode` argument (the same for the whole call).
enum CompactMode : int {
    kModeMaster = 1,  // the master slots are set: the rule updates them, params get the rounding
    kModeSR = 2,      // bfloat16 params rounded stochastically (else to nearest even)
    kModeAmp = 4,     // AMP: skip the step when *found_inf != 0, the rule sees g / *grad_scale
                      // (without it, those two pointers are not read)
};

// Runs `op` over every element of every tensor of the table. P: the storage type of params and
// grads (float, half_t, bf16_t).
template <typename P, typename Op>
__device__ __forceinline__ void compact_apply(const Op& op, const i64* table, i64 nt,
                                              i64 nblocks, const float* maps,
                                              const float* thresholds, const int* encode,
                                              const float* grad_scale, const float* found_inf,
                                              i64 mode) {
    constexpr unsigned S = Op::kStates;
    const bool master = (mode & kModeMaster) != 0, sr = (mode & kModeSR) != 0,
               amp = (mode & kModeAmp) != 0;
    if (amp && *found_inf != 0.0f) return;
    // Four rounds of accumulators (one per state slot, and a pad) in turn: round r's are zeroed
    // during round r - 1, before its barrier, and read after round r's barrier; their previous
    // readers (round r - 4) were done before round r - 3's barrier. One barrier per block of 8-bit
    // state.
    __shared__ unsigned acc[4][4];
    if (threadIdx.x < 16) acc[threadIdx.x >> 2][threadIdx.x & 3] = 0u;
    __syncthreads();
    unsigned round = 0;
    const i64 t = threadIdx.x;
    for (i64 c = blockIdx.x; c < nblocks; c += gridDim.x) {
        const int k = tensor_of(table, nt, c);
        const i64* row = table + (nt + 1) + static_cast<i64>(k) * kCompactStride;
        const i64 qb = c - table[k];  // the quantization block within the tensor
        const i64 i = qb * kQuantBlock + t;
        const bool live = i < row[kFSize];
        const unsigned kinds = static_cast<unsigned>(row[kFKinds]);
        P* p = reinterpret_cast<P*>(row[kFParam]);
        const P* g = reinterpret_cast<const P*>(row[kFGrad]);
        float* mw = reinterpret_cast<float*>(row[kFMaster]);
        float s[3] = {0.0f, 0.0f, 0.0f};
        bool quantized = false;
        float pv = 0.0f, gv = 0.0f;
        if (live) {
            pv = master ? mw[i] : to_math(p[i]);
            gv = to_math(g[i]);
            if (amp) gv = gv / *grad_scale;
        }
#pragma unroll
        for (int j = 0; j < 3; ++j) {
            if (!(S & state_bit(j))) continue;
            const unsigned kind = (kinds >> (2 * j)) & 3u;
            quantized = quantized || kind == 2u;
            if (!live) continue;
            const i64 at = row[kFState + j];
            if (kind == 0u) {
                s[j] = reinterpret_cast<const float*>(at)[i];
            } else if (kind == 1u) {
                s[j] = fo_bf16_to_float(reinterpret_cast<const unsigned short*>(at)[i]);
            } else {
                const unsigned sgn = (kinds >> (8 + j)) & 1u;
                const unsigned char code = reinterpret_cast<const unsigned char*>(at)[i];
                s[j] = maps[sgn * kQuantBlock + code] *
                       reinterpret_cast<const float*>(row[kFAbsmax + j])[qb];
            }
        }
        if (live) {
            op(pv, gv, s[0], s[1], s[2]);
            if (master) mw[i] = pv;
            if (sr) {
                const unsigned long long u = static_cast<unsigned long long>(i);
                reinterpret_cast<unsigned short*>(p)[i] =
                    fo_float_to_bf16_sr(pv, static_cast<unsigned>(row[kFKey]),
                                        static_cast<unsigned>(u), static_cast<unsigned>(u >> 32));
            } else {
                p[i] = from_math<P>(pv);
            }
        }
        // Plain states stored; 8-bit ones: |x| as bits into the block's maximum.
        unsigned* a = acc[round & 3];
#pragma unroll
        for (int j = 0; j < 3; ++j) {
            if (!(S & state_bit(j))) continue;
            const unsigned kind = (kinds >> (2 * j)) & 3u;
            const i64 at = row[kFState + j];
            if (kind == 0u) {
                if (live) reinterpret_cast<float*>(at)[i] = s[j];
            } else if (kind == 1u) {
                if (live) reinterpret_cast<unsigned short*>(at)[i] = fo_float_to_bf16(s[j]);
            } else {
                block_max(a + j, live ? (fo_float_bits(s[j]) & 0x7fffffffu) : 0u);
            }
        }
        if (!quantized) continue;  // the same for every thread of the block: no barrier
        if (threadIdx.x < 3) acc[(round + 1) & 3][threadIdx.x] = 0u;
        __syncthreads();
#pragma unroll
        for (int j = 0; j < 3; ++j) {
            if (!(S & state_bit(j)) || ((kinds >> (2 * j)) & 3u) != 2u) continue;
            const float amax = fo_bits_float(a[j]);
            const unsigned sgn = (kinds >> (8 + j)) & 1u;
            const int* lut = encode + sgn * (2 * kEncodeSpan);
            const float* th = thresholds + sgn * kQuantBlock;
            if (t == 0) reinterpret_cast<float*>(row[kFAbsmax + j])[qb] = amax;
            if (live) {
                const float y = amax == 0.0f ? 0.0f : fo_quant_normalize(s[j], amax);
                reinterpret_cast<unsigned char*>(row[kFState + j])[i] =
                    static_cast<unsigned char>(fo_quant_encode(y, lut, th));
            }
        }
        ++round;
    }
}

// The arguments of every compact kernel, after the rule's scalars.
#define FUSEDOPT_CT_PARAMS                                                                    \
    const i64 *table, i64 nt, i64 nblocks, const float *maps, const float *thresholds,        \
        const int *encode, const float *grad_scale, const float *found_inf, i64 mode
#define FUSEDOPT_CT_ARGS table, nt, nblocks, maps, thresholds, encode, grad_scale, found_inf, mode

template <typename P, bool Maximize, int WD, bool Momentum, bool Nesterov>
__global__ void __launch_bounds__(kThreads)
    sgd_compact(rules::SgdScalars<float> s, FUSEDOPT_CT_PARAMS) {
    compact_apply<P>(SgdOp<float, Maximize, WD, Momentum, Nesterov>{s}, FUSEDOPT_CT_ARGS);
}

template <typename P, bool Maximize, int WD>
__global__ void __launch_bounds__(kThreads)
    adagrad_compact(rules::AdagradScalars<float> s, FUSEDOPT_CT_PARAMS) {
    compact_apply<P>(AdagradOp<float, Maximize, WD>{s}, FUSEDOPT_CT_ARGS);
}

template <typename P, bool Maximize, int WD, bool Centered, bool Momentum>
__global__ void __launch_bounds__(kThreads)
    rmsprop_compact(rules::RmspropScalars<float> s, FUSEDOPT_CT_PARAMS) {
    compact_apply<P>(RmspropOp<float, Maximize, WD, Centered, Momentum>{s}, FUSEDOPT_CT_ARGS);
}

template <typename P, bool Maximize, int WD, bool AMSGrad>
__global__ void __launch_bounds__(kThreads)
    adam_compact(rules::AdamScalars<float> s, FUSEDOPT_CT_PARAMS) {
    compact_apply<P>(AdamOp<float, Maximize, WD, AMSGrad>{s}, FUSEDOPT_CT_ARGS);
}

template <typename P, bool Maximize, int WD>
__global__ void __launch_bounds__(kThreads)
    adamax_compact(rules::AdamaxScalars<float> s, FUSEDOPT_CT_PARAMS) {
    compact_apply<P>(AdamaxOp<float, Maximize, WD>{s}, FUSEDOPT_CT_ARGS);
}

#undef FUSEDOPT_CT_PARAMS
#undef FUSEDOPT_CT_ARGS

}  // namespace cuda
}  // namespace fusedopt
