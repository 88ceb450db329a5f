// csrc/cuda/lbfgs.cu -- the L-BFGS two-loop recursion and vector helpers on the GPU, with the
// bits of the CPU kernels (csrc/cpu/lbfgs.cpp): the same passes, the same values in T, the same
// float64 dots in the same order (fusedopt/blocked_sum.h, through blocked_sum.cuh).
//
// direction: out = -H grad over the ring (s, y, rho, head, count) of fusedopt.lbfgs.History, in
// 2 * count + 1 launches and no host synchronization. The scalars live on the device in
//   D[k] = alpha_k, D[m + k] = beta_k (k = pair number, oldest 0), D[2m] = gamma;
// each pass writes one partial per chunk, and its last block (last_block) adds them in chunk order
// and writes the next scalar, which the next launch reads.
//   lbfgs_first  out = grad; D[ialpha] = rho[irho] * s.grad, D[igamma] = s.y / y.y (newest pair)
//   lbfgs_pass   out = (out + a * x) * scale;  D[io] = rho[irho] * (w . out)   (when Dot)
//                a = T(a_sign * (D[ia] - D[ib])) (D[ib] left out when ib < 0),
//                scale = T(D[iscale]), or T(scale_const) when iscale < 0
#include "blocked_sum.cuh"

namespace fusedopt {
namespace cuda {

__device__ __forceinline__ i64 chunk_end(i64 c, i64 chunk, i64 n) {
    return (c + 1) * chunk < n ? (c + 1) * chunk : n;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    lbfgs_first(T* out, const T* grad, const T* s, const T* y, i64 n, i64 chunk, double* D,
                const double* rho, i64 irho, i64 ialpha, i64 igamma, double* partial,
                unsigned* counter) {
    const i64 nchunks = (n + chunk - 1) / chunk;
    for (i64 c = blockIdx.x; c < nchunks; c += gridDim.x) {
        double sums[3];
        chunk_sums<3>(c * chunk, chunk_end(c, chunk, n), [&](i64 i, double (&t)[3]) {
            out[i] = grad[i];
            t[0] = static_cast<double>(s[i]) * static_cast<double>(grad[i]);
            t[1] = static_cast<double>(s[i]) * static_cast<double>(y[i]);
            t[2] = static_cast<double>(y[i]) * static_cast<double>(y[i]);
        }, sums);
        if (threadIdx.x == 0)
            for (int v = 0; v < 3; ++v) partial[3 * c + v] = sums[v];
    }
    if (last_block(counter) && threadIdx.x == 0) {
        D[ialpha] = rho[irho] * sum_in_order(partial, nchunks, 3);
        D[igamma] = sum_in_order(partial + 1, nchunks, 3) / sum_in_order(partial + 2, nchunks, 3);
    }
}

template <typename T, bool Dot>
__global__ void __launch_bounds__(kThreads)
    lbfgs_pass(T* out, const T* x, const T* w, i64 n, i64 chunk, double* D, const double* rho,
               i64 ia, i64 ib, double a_sign, i64 iscale, double scale_const, i64 io, i64 irho,
               double* partial, unsigned* counter) {
    const i64 nchunks = (n + chunk - 1) / chunk;
    const T a = static_cast<T>(a_sign * (ib >= 0 ? D[ia] - D[ib] : D[ia]));
    const T scale = static_cast<T>(iscale >= 0 ? D[iscale] : scale_const);
    if (Dot) {
        for (i64 c = blockIdx.x; c < nchunks; c += gridDim.x) {
            double sum[1];
            chunk_sums<1>(c * chunk, chunk_end(c, chunk, n), [&](i64 i, double (&t)[1]) {
                const T v = (out[i] + a * x[i]) * scale;
                out[i] = v;
                t[0] = static_cast<double>(w[i]) * static_cast<double>(v);
            }, sum);
            if (threadIdx.x == 0) partial[c] = sum[0];
        }
        if (last_block(counter) && threadIdx.x == 0)
            D[io] = rho[irho] * sum_in_order(partial, nchunks, 1);
    } else {  // the last pass: no dot, plain elementwise grid
        for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
             i += static_cast<i64>(gridDim.x) * blockDim.x)
            out[i] = (out[i] + a * x[i]) * scale;
    }
}

// out = -grad (no pairs yet).
template <typename T>
__global__ void __launch_bounds__(kThreads) lbfgs_negate(T* out, const T* grad, i64 n) {
    for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<i64>(gridDim.x) * blockDim.x)
        out[i] = -grad[i];
}

// result[0] = sum a[i] * b[i] in float64, in the CPU's order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    lbfgs_dot(const T* a, const T* b, i64 n, i64 chunk, double* partial, unsigned* counter,
              double* result) {
    const i64 nchunks = (n + chunk - 1) / chunk;
    for (i64 c = blockIdx.x; c < nchunks; c += gridDim.x) {
        double sum[1];
        chunk_sums<1>(c * chunk, chunk_end(c, chunk, n), [&](i64 i, double (&t)[1]) {
            t[0] = static_cast<double>(a[i]) * static_cast<double>(b[i]);
        }, sum);
        if (threadIdx.x == 0) partial[c] = sum[0];
    }
    if (last_block(counter) && threadIdx.x == 0) result[0] = sum_in_order(partial, nchunks, 1);
}

// out = T(a) * x + T(b) * y; out may be x or y itself.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    lbfgs_axpby(T* out, double a, const T* x, double b, const T* y, i64 n) {
    const T ta = static_cast<T>(a), tb = static_cast<T>(b);
    for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<i64>(gridDim.x) * blockDim.x)
        out[i] = ta * x[i] + tb * y[i];
}

}  // namespace cuda
}  // namespace fusedopt
