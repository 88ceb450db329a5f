// csrc/cuda/blocked_sum.cuh -- the blocked float64 sum of fusedopt/blocked_sum.h on the GPU, so
// that the CUDA reductions have the very bits of fusedopt._core's (global_norm, the L-BFGS dots).
//
// A CUDA block takes one chunk (one block of the blocked sum, _core.reduce_block elements): all
// its threads compute the terms of a tile of the chunk (coalesced loads, stores in place), park
// them in shared memory, and 8 threads add them up as the lanes of blocked_sum.h (lane_sum, then
// combine_lanes). No atomics on floats: the grid writes one partial per chunk, and a single
// thread (a later launch, or the block that finishes last, see last_block) adds them in chunk
// order.
#pragma once
#include "fusedopt/blocked_sum.h"
#include "multi_tensor.cuh"

namespace fusedopt {
namespace cuda {

constexpr int kLanes = kSumLanes;
constexpr int kTile = 1024;  // elements per tile (a multiple of kLanes)

// For the chunk [lo, hi): term(i, t) fills t[0..NV) with the NV float64 terms of element i (and
// may store to element i); thread 0 receives in sums[v] the blocked sum of terms v. Every thread
// of the block must call it (it synchronizes the block).
template <int NV, typename F>
__device__ __forceinline__ void chunk_sums(i64 lo, i64 hi, F&& term, double (&sums)[NV]) {
    __shared__ double terms[NV][kTile];
    __shared__ double lanes[NV][kLanes];
    const int j = static_cast<int>(threadIdx.x);  // the lane, for threads 0..7
    double acc[NV];
#pragma unroll
    for (int v = 0; v < NV; ++v) acc[v] = 0.0;
    for (i64 t0 = lo; t0 < hi; t0 += kTile) {
        const i64 t1 = t0 + kTile < hi ? t0 + kTile : hi;
        for (i64 i = t0 + threadIdx.x; i < t1; i += blockDim.x) {
            double t[NV];
            term(i, t);
#pragma unroll
            for (int v = 0; v < NV; ++v) terms[v][i - t0] = t[v];
        }
        __syncthreads();
        if (j < kLanes) {
            // t0 - lo is a multiple of 8: lane j's elements of this tile are t0 + j, t0 + j + 8...
#pragma unroll
            for (int v = 0; v < NV; ++v)
                acc[v] = lane_sum(acc[v], t0 + j, t1, [&](i64 i) { return terms[v][i - t0]; });
        }
        __syncthreads();
    }
    if (j < kLanes)
#pragma unroll
        for (int v = 0; v < NV; ++v) lanes[v][j] = acc[v];
    __syncthreads();
    if (j == 0)
#pragma unroll
        for (int v = 0; v < NV; ++v) sums[v] = combine_lanes(lanes[v]);
    __syncthreads();
}

// True in every thread of the block that finishes last; the partials that all blocks wrote
// before calling it are then visible to it. `counter` (zero before the launch) is reset to zero.
__device__ __forceinline__ bool last_block(unsigned* counter) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(counter, 1u) == gridDim.x - 1;
        if (last) *counter = 0u;
    }
    __syncthreads();
    return last;
}

// sum over k of part[k * stride], k = 0..n-1, in order (read through L2: written by other blocks).
__device__ __forceinline__ double sum_in_order(const double* part, i64 n, i64 stride) {
    double t = 0.0;
    for (i64 k = 0; k < n; ++k) t = t + __ldcg(part + k * stride);
    return t;
}

}  // namespace cuda
}  // namespace fusedopt
