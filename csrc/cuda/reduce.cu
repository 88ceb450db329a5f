// csrc/cuda/reduce.cu -- deterministic sum of squares over a table of tensors (global_norm).
//
// The partition and the order of every addition are those of the CPU kernel
// (csrc/cpu/kernels.cpp, block_sum_squares / sum_squares_typed), so the result has the same bits
// as fusedopt._core.sum_squares, on any grid, every run; no atomics:
//   stage 1  each chunk of `chunk` (== _core.reduce_block) elements of a tensor is summed by 8
//            lanes, lane j taking the elements lo + j, lo + j + 8, ... in order, in float64;
//            the lanes are combined as ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
//            and written to partial[chunk index];
//   stage 2  one thread adds the partials of the float32 tensors in order, then those of the
//            float64 tensors, and returns sum32 + sum64.
// The table is that of multi_tensor.cuh, with the param slot only.
#include "multi_tensor.cuh"

namespace fusedopt {
namespace cuda {

constexpr int kLanes = 8;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sum_squares_partial(const i64* table, i64 nt, i64 nchunks, i64 chunk, double* partial) {
    // Thread q serves lane q % 8 of chunk q / 8. The loop runs whole warps (the bound is rounded
    // up to 32) so that the shuffles below always see all 32 lanes.
    const i64 nq = nchunks * kLanes;
    const i64 bound = (nq + 31) / 32 * 32;
    const i64 stride = static_cast<i64>(gridDim.x) * blockDim.x;
    for (i64 q = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; q < bound; q += stride) {
        const int lane = static_cast<int>(q % kLanes);
        double acc = 0.0;
        if (q < nq) {
            const ChunkRef ref = chunk_ref(table, nt, chunk, q / kLanes);
            const T* x = reinterpret_cast<const T*>(ref.row[kParam]);
#pragma unroll 8
            for (i64 i = ref.lo + lane; i < ref.hi; i += kLanes) {
                const double v = static_cast<double>(x[i]);
                acc = acc + v * v;
            }
        }
        acc = acc + __shfl_down_sync(0xffffffffu, acc, 1);  // lanes 0,2,4,6: a_j + a_{j+1}
        acc = acc + __shfl_down_sync(0xffffffffu, acc, 2);  // lanes 0,4
        acc = acc + __shfl_down_sync(0xffffffffu, acc, 4);  // lane 0
        if (q < nq && lane == 0) partial[q / kLanes] = acc;
    }
}

// One thread: sum32 over partial[0, n32), sum64 over partial[n32, n32 + n64); out = sum32 + sum64.
__global__ void sum_squares_finish(const double* partial, i64 n32, i64 n64, double* out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double s32 = 0.0;
    for (i64 k = 0; k < n32; ++k) s32 = s32 + partial[k];
    double s64 = 0.0;
    for (i64 k = n32; k < n32 + n64; ++k) s64 = s64 + partial[k];
    out[0] = s32 + s64;
}

}  // namespace cuda
}  // namespace fusedopt
