// csrc/cuda/reduce.cu -- deterministic sum of squares over a table of tensors (global_norm).
//
// The partition and the order of every addition are those of fusedopt/blocked_sum.h, which the
// CPU kernel (csrc/cpu/kernels.cpp, sum_squares_typed) uses too (see blocked_sum.cuh), so the
// result has the bits of fusedopt._core.sum_squares, on any grid, every run; no atomics:
//   stage 1  partial[c] = the float64 sum of squares of chunk c (chunk == _core.reduce_block);
//   stage 2  one thread adds the partials of the float32 tensors in order, then those of the
//            float64 tensors, and returns sum32 + sum64.
// The table is that of multi_tensor.cuh, with the param slot only.
#include "blocked_sum.cuh"

namespace fusedopt {
namespace cuda {

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sum_squares_partial(const i64* table, i64 nt, i64 nchunks, i64 chunk, double* partial) {
    for_each_chunk(table, nt, nchunks, chunk, [&](i64 c, const ChunkRef& ref) {
        const T* x = reinterpret_cast<const T*>(ref.row[kParam]);
        double sum[1];
        chunk_sums<1>(ref.lo, ref.hi, [&](i64 i, double (&t)[1]) {
            const double v = static_cast<double>(x[i]);
            t[0] = v * v;
        }, sum);
        if (threadIdx.x == 0) partial[c] = sum[0];
    });
}

// One thread: sum32 over partial[0, n32), sum64 over partial[n32, n32 + n64); out = sum32 + sum64.
__global__ void sum_squares_finish(const double* partial, i64 n32, i64 n64, double* out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    out[0] = sum_in_order(partial, n32, 1) + sum_in_order(partial + n32, n64, 1);
}

}  // namespace cuda
}  // namespace fusedopt
