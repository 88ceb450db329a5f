// csrc/cuda/multi_tensor.cuh -- the multi-tensor driver of the CUDA kernels: a device-side table
// of tensors, blocks mapped to fixed-size chunks, load -> rule -> store.
//
// Compiled at run time by NVRTC (fusedopt/_cuda/) and, for CI, by nvcc (tests/test_cuda_build.py).
// NVRTC has no standard headers: only fusedopt/hd.h and what it guards are used; half and bfloat16
// are handled bit by bit (PTX cvt for half, fusedopt/half.h for bfloat16, as the CPU), so
// cuda_fp16.h is not needed either. Tests also compile these
// files for the host (tests/cuda_host/, FUSEDOPT_HOST_EMULATION), each CUDA thread a host thread.
//
// The table (int64, built by fusedopt/_cuda/runtime.py, table()) for `nt` tensors cut into
// chunks of `chunk` elements:
//   table[k], k = 0..nt              index of the first chunk of tensor k; table[nt] == nchunks
//   table[nt + 1 + k * 7 + s], s < 6 pointer of slot s of tensor k (0 when the slot is unused)
//   table[nt + 1 + k * 7 + 6]        number of elements of tensor k (> 0)
// The slots are those of fusedopt/slots.h: param, grad, state0, state1, state2, master (float32
// master weights).
// Every element is computed by one thread from its own values only, so the bits do not depend on
// the grid, the block size or the chunk size.
#pragma once
#include "fusedopt/half.h"
#include "fusedopt/hd.h"
#include "fusedopt/slots.h"

namespace fusedopt {
namespace cuda {

typedef long long i64;

constexpr int kThreads = kCudaThreads;  // threads per block of every kernel (__launch_bounds__)

constexpr int kStride = kSlots + 1;  // table entries per tensor

// ---- storage types -------------------------------------------------------------------------
// float16 and bfloat16 as bits; the math is done in float32.
struct half_t {
    unsigned short bits;
};
struct bf16_t {
    unsigned short bits;
};

template <typename P>
struct MathOf {
    typedef P type;  // float32 and float64 compute in their own type
};
template <>
struct MathOf<half_t> {
    typedef float type;
};
template <>
struct MathOf<bf16_t> {
    typedef float type;
};

// Exact widening; correctly rounded (to nearest even) narrowing, as NumPy and ml_dtypes do.
__device__ __forceinline__ float to_math(float x) { return x; }
__device__ __forceinline__ double to_math(double x) { return x; }
__device__ __forceinline__ float to_math(half_t h) {
#ifdef FUSEDOPT_HOST_EMULATION  // tests/cuda_host: the kernels run as host threads
    return fusedopt_emulation::half_to_float(h.bits);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
    return f;
#endif
}
__device__ __forceinline__ float to_math(bf16_t b) {
    return fo_bf16_to_float(b.bits);
}

template <typename P>
__device__ __forceinline__ P from_math(typename MathOf<P>::type x) {
    return x;
}
template <>
__device__ __forceinline__ half_t from_math<half_t>(float x) {
    half_t h;
#ifdef FUSEDOPT_HOST_EMULATION
    h.bits = fusedopt_emulation::float_to_half(x);
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(x));
#endif
    return h;
}
template <>
__device__ __forceinline__ bf16_t from_math<bf16_t>(float x) {
    bf16_t b;
    b.bits = fo_float_to_bf16(x);  // the CPU's bits (fusedopt/half.h): a NaN becomes 0x7fc0
    return b;
}

// N values moved by one vector load or store.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
    T v[N];
};

template <int N, typename M, typename X>
__device__ __forceinline__ void load(M (&r)[N], const X* src, i64 i, i64 hi, bool full) {
    if (full) {
        const Pack<X, N> v = *reinterpret_cast<const Pack<X, N>*>(src + i);
#pragma unroll
        for (int j = 0; j < N; ++j) r[j] = to_math(v.v[j]);
    } else {
#pragma unroll
        for (int j = 0; j < N; ++j) r[j] = (i + j < hi) ? to_math(src[i + j]) : M(0);
    }
}

template <int N, typename M, typename X>
__device__ __forceinline__ void store(X* dst, const M (&r)[N], i64 i, i64 hi, bool full) {
    if (full) {
        Pack<X, N> v;
#pragma unroll
        for (int j = 0; j < N; ++j) v.v[j] = from_math<X>(r[j]);
        *reinterpret_cast<Pack<X, N>*>(dst + i) = v;
    } else {
#pragma unroll
        for (int j = 0; j < N; ++j)
            if (i + j < hi) dst[i + j] = from_math<X>(r[j]);
    }
}

__device__ __forceinline__ bool aligned(const void* p, int bytes) {
    return (reinterpret_cast<unsigned long long>(p) % static_cast<unsigned long long>(bytes)) == 0;
}

// The tensor that chunk `c` belongs to: the last k with first[k] <= c.
__device__ __forceinline__ int tensor_of(const i64* first, i64 nt, i64 c) {
    int lo = 0, hi = static_cast<int>(nt) - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (first[mid] <= c) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

// Where chunk `c` lies: its tensor's table row and the element range [lo, hi).
struct ChunkRef {
    const i64* row;
    i64 lo, hi;
};

__device__ __forceinline__ ChunkRef chunk_ref(const i64* table, i64 nt, i64 chunk, i64 c) {
    const int k = tensor_of(table, nt, c);
    ChunkRef r;
    r.row = table + (nt + 1) + static_cast<i64>(k) * kStride;
    r.lo = (c - table[k]) * chunk;
    const i64 end = r.lo + chunk;
    r.hi = end < r.row[kSlots] ? end : r.row[kSlots];
    return r;
}

// Calls f(c, ref) for each chunk c of the table that this block takes (blocks loop over chunks).
template <typename F>
__device__ __forceinline__ void for_each_chunk(const i64* table, i64 nt, i64 nchunks, i64 chunk,
                                               F&& f) {
    for (i64 c = blockIdx.x; c < nchunks; c += gridDim.x) f(c, chunk_ref(table, nt, chunk, c));
}

// The arguments every elementwise kernel starts with. `grad_scale` and `found_inf` (float32
// scalars on the device) are read only by the AMP instances; others receive any pointer.
#define FUSEDOPT_MT_PARAMS                                                                  \
    const ::fusedopt::cuda::i64 *table, ::fusedopt::cuda::i64 nt,                           \
        ::fusedopt::cuda::i64 nchunks, ::fusedopt::cuda::i64 chunk, const float *grad_scale, \
        const float *found_inf
#define FUSEDOPT_MT_ARGS table, nt, nchunks, chunk, grad_scale, found_inf

// Runs `op` (a functor of fusedopt/functors.h over the math type of P) over every element of
// every tensor of the table: loads the slots it uses, calls it, stores them (as elementwise<> in
// csrc/cpu/kernels.cpp). P is the storage type of params and grads. Master: params are read from
// and written to the float32 master slot, and the param slot receives the rounded result. Amp:
// the step is skipped when *found_inf != 0, and g is divided by *grad_scale before the functor
// sees it.
template <typename P, bool Master, bool Amp, typename Op>
__device__ __forceinline__ void apply(const Op& op, FUSEDOPT_MT_PARAMS) {
    typedef typename MathOf<P>::type M;
    constexpr int N = 16 / sizeof(M);  // one 16-byte vector of state per thread and step
    constexpr unsigned S = Op::kStates;
    constexpr bool G = Op::kReadsGrad;
    if (Amp && *found_inf != 0.0f) return;
    const M scale = Amp ? M(*grad_scale) : M(1);
    for_each_chunk(table, nt, nchunks, chunk, [&](i64, const ChunkRef& ref) {
        P* p = reinterpret_cast<P*>(ref.row[kParam]);
        const P* g = reinterpret_cast<const P*>(ref.row[kGrad]);
        M* s0 = reinterpret_cast<M*>(ref.row[kState0]);
        M* s1 = reinterpret_cast<M*>(ref.row[kState1]);
        M* s2 = reinterpret_cast<M*>(ref.row[kState2]);
        float* mw = reinterpret_cast<float*>(ref.row[kMaster]);
        const bool vec = aligned(p, N * sizeof(P)) && (!G || aligned(g, N * sizeof(P))) &&
                         (!(S & state_bit(0)) || aligned(s0, N * sizeof(M))) &&
                         (!(S & state_bit(1)) || aligned(s1, N * sizeof(M))) &&
                         (!(S & state_bit(2)) || aligned(s2, N * sizeof(M))) &&
                         (!Master || aligned(mw, N * sizeof(float)));
        for (i64 i = ref.lo + static_cast<i64>(threadIdx.x) * N; i < ref.hi;
             i += static_cast<i64>(blockDim.x) * N) {
            const bool full = vec && i + N <= ref.hi;
            M rp[N], rg[N], r0[N], r1[N], r2[N];
            if (Master) {
                load<N>(rp, mw, i, ref.hi, full);
            } else {
                load<N>(rp, p, i, ref.hi, full);
            }
            if (G) load<N>(rg, g, i, ref.hi, full);
            if (S & state_bit(0)) load<N>(r0, s0, i, ref.hi, full);
            if (S & state_bit(1)) load<N>(r1, s1, i, ref.hi, full);
            if (S & state_bit(2)) load<N>(r2, s2, i, ref.hi, full);
#pragma unroll
            for (int j = 0; j < N; ++j) {
                M gj = G ? rg[j] : M(0);
                if (Amp) gj = gj / scale;
                op(rp[j], gj, r0[j], r1[j], r2[j]);
            }
            if (Master) store<N>(mw, rp, i, ref.hi, full);
            store<N>(p, rp, i, ref.hi, full);
            if (S & state_bit(0)) store<N>(s0, r0, i, ref.hi, full);
            if (S & state_bit(1)) store<N>(s1, r1, i, ref.hi, full);
            if (S & state_bit(2)) store<N>(s2, r2, i, ref.hi, full);
        }
    });
}

}  // namespace cuda
}  // namespace fusedopt
