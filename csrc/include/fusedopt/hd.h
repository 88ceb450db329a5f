// fusedopt/hd.h -- the host/device macro and the few math helpers every rule uses.
//
// The rule headers are compiled twice: by g++ into the OpenMP loops of fusedopt._core and by
// NVRTC (through CuPy RawModule) into the CUDA kernels. NVRTC has no standard library, so standard
// headers are included only outside __CUDACC_RTC__, and the helpers below pick the device
// intrinsic or the host function. All helpers are exact IEEE operations (no approximations).
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define FUSEDOPT_HD __host__ __device__ __forceinline__
#else
#define FUSEDOPT_HD inline __attribute__((always_inline))
#endif

#if !defined(__CUDACC_RTC__)
#include <cmath>
#include <cstdint>
#endif

namespace fusedopt {

// Correctly rounded square root (IEEE 754), float and double.
FUSEDOPT_HD float fo_sqrt(float x) {
#if defined(__CUDA_ARCH__)
    return sqrtf(x);
#else
    return std::sqrt(x);
#endif
}
FUSEDOPT_HD double fo_sqrt(double x) {
#if defined(__CUDA_ARCH__)
    return ::sqrt(x);
#else
    return std::sqrt(x);
#endif
}

// |x| (clears the sign bit; exact), float and double.
FUSEDOPT_HD float fo_abs(float x) {
#if defined(__CUDA_ARCH__)
    return fabsf(x);
#else
    return std::fabs(x);
#endif
}
FUSEDOPT_HD double fo_abs(double x) {
#if defined(__CUDA_ARCH__)
    return ::fabs(x);
#else
    return std::fabs(x);
#endif
}

// max(a, b) with NumPy's np.maximum semantics: a NaN in either operand propagates. Written
// without branches (bitwise |, one select) so that compilers vectorize it.
template <typename T>
FUSEDOPT_HD T fo_max(T a, T b) {
    const bool take_a = (a >= b) | (a != a);
    return take_a ? a : b;
}

}  // namespace fusedopt
