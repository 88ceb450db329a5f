// csrc/cuda/blocked_sum.cuh -- float64 sums in the CPU kernels' order, so that the CUDA
// reductions have the very bits of fusedopt._core's (csrc/cpu/kernels.cpp, csrc/cpu/lbfgs.cpp).
//
// The CPU cuts a vector into chunks of kReduceBlock elements; each chunk is summed by 8 lanes,
// lane j taking elements lo + j, lo + j + 8, ... in order, the lanes combined as
// ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)); the chunk sums are added in chunk order.
// Two conventions exist for the last (hi - lo) % 8 elements: sum_squares gives tail element i to
// lane (i - lo) % 8 like the others; the L-BFGS dots give the whole tail to lane 0, after its own
// elements (TailToLane0).
//
// Here a block takes a chunk: all its threads compute the terms of a tile of the chunk (coalesced
// loads, stores in place), park them in shared memory, and 8 threads add them up as the CPU's
// lanes do. No atomics on floats: the grid writes one partial per chunk, and a single thread
// (a later launch, or the block that finishes last, see last_block) adds them in chunk order.
#pragma once
#include "multi_tensor.cuh"

namespace fusedopt {
namespace cuda {

constexpr int kLanes = 8;
constexpr int kTile = 1024;  // elements per tile (a multiple of kLanes)

// For the chunk [lo, hi): term(i, t) fills t[0..NV) with the NV float64 terms of element i (and
// may store to element i); thread 0 receives in sums[v] the CPU's blocked sum of terms v. Every
// thread of the block must call it (it synchronizes the block).
template <int NV, bool TailToLane0, typename F>
__device__ __forceinline__ void chunk_sums(i64 lo, i64 hi, F&& term, double (&sums)[NV]) {
    __shared__ double terms[NV][kTile];
    __shared__ double lanes[NV][kLanes];
    const i64 main_end = TailToLane0 ? lo + (hi - lo) / kLanes * kLanes : hi;
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
            // t0 - lo is a multiple of 8: lane j's elements are t0 + j, t0 + j + 8, ...
            const i64 m1 = t1 < main_end ? t1 : main_end;
            for (i64 i = t0 + j; i < m1; i += kLanes)
#pragma unroll
                for (int v = 0; v < NV; ++v) acc[v] = acc[v] + terms[v][i - t0];
            if (TailToLane0 && j == 0)  // the tail lies in the last tile, after main_end
                for (i64 i = main_end > t0 ? main_end : t0; i < t1; ++i)
#pragma unroll
                    for (int v = 0; v < NV; ++v) acc[v] = acc[v] + terms[v][i - t0];
        }
        __syncthreads();
    }
    if (j < kLanes)
#pragma unroll
        for (int v = 0; v < NV; ++v) lanes[v][j] = acc[v];
    __syncthreads();
    if (j == 0)
#pragma unroll
        for (int v = 0; v < NV; ++v) {
            const double* a = lanes[v];
            sums[v] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        }
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
