// tests/cuda_host/cuda_host.h -- just enough of CUDA to run csrc/cuda/*.cu on the host, for tests
// on machines without a GPU (tests/test_cuda_host.py).
//
// A launch runs its blocks one after the other; each block is `blockDim.x` host threads, so that
// __syncthreads is a real barrier and __shared__ (static here) is private to the running block.
// The rule headers see no __CUDACC__ and take their host paths (std::sqrt etc.: the same IEEE
// operations). What this cannot show: NVRTC/PTX code generation, the device's memory system,
// warp-level behaviour, speed. tests/test_cuda_build.py covers the compilation.
#pragma once
#define FUSEDOPT_HOST_EMULATION 1

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct fo_dim3 {
    unsigned x = 0, y = 1, z = 1;
};
inline thread_local fo_dim3 threadIdx, blockIdx;
inline fo_dim3 blockDim, gridDim;

namespace fusedopt_emulation {
inline std::barrier<>* block_barrier = nullptr;

inline float half_to_float(unsigned short bits) {
    _Float16 h;
    std::memcpy(&h, &bits, 2);
    return static_cast<float>(h);  // exact
}
inline unsigned short float_to_half(float x) {
    const _Float16 h = static_cast<_Float16>(x);  // round to nearest even
    unsigned short bits;
    std::memcpy(&bits, &h, 2);
    return bits;
}
}  // namespace fusedopt_emulation

inline void __syncthreads() { fusedopt_emulation::block_barrier->arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
template <typename T>
inline T __ldcg(const T* p) {
    return *p;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}

namespace fusedopt_emulation {

// Calls kernel(args...) with each argument read from args[i] (a pointer to its value, as the
// CUDA driver takes kernel arguments).
template <typename... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::decay_t<A>*>(args[I])...);
}

template <typename... A>
void launch(void (*kernel)(A...), unsigned grid, unsigned block, void** args) {
    gridDim.x = grid;
    blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {
        std::barrier<> barrier(block);
        block_barrier = &barrier;
        std::vector<std::thread> threads;
        threads.reserve(block);
        for (unsigned t = 0; t < block; ++t)
            threads.emplace_back([=] {
                threadIdx.x = t;
                blockIdx.x = b;
                call(kernel, args, std::index_sequence_for<A...>{});
            });
        for (auto& th : threads) th.join();
    }
}

}  // namespace fusedopt_emulation
