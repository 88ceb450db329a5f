// tests/cuda_host/cuda_host.h -- just enough of CUDA to run csrc/cuda/*.cu on the host, for tests
// on machines without a GPU (tests/test_cuda_host.py).
//
// A launch runs its blocks one after the other on `blockDim.x` host threads (kept between
// launches), so that __syncthreads is a real barrier and __shared__ (static here) belongs to the
// running block. Launches come from one Python thread at a time.
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
#include <functional>
#include <map>
#include <mutex>
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
inline unsigned atomicMax(unsigned* p, unsigned v) {
    std::atomic_ref<unsigned> a(*p);
    unsigned old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
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

// `n` host threads that run the blocks of launches, one block at a time, with threadIdx set once.
class BlockThreads {
  public:
    explicit BlockThreads(unsigned n) : start_(n + 1), done_(n + 1), sync_(n) {
        for (unsigned t = 0; t < n; ++t) threads_.emplace_back([this, t] { work(t); });
    }
    // Runs body() in every thread as block `b`; returns when all have finished.
    void run(unsigned b, const std::function<void()>& body) {
        block_ = b;
        body_ = &body;
        block_barrier = &sync_;
        start_.arrive_and_wait();
        done_.arrive_and_wait();
    }

  private:
    void work(unsigned t) {
        threadIdx.x = t;
        for (;;) {
            start_.arrive_and_wait();
            blockIdx.x = block_;
            (*body_)();
            done_.arrive_and_wait();
        }
    }
    std::barrier<> start_, done_, sync_;
    unsigned block_ = 0;
    const std::function<void()>* body_ = nullptr;
    std::vector<std::thread> threads_;
};

// The threads of each block size, made on first use and kept (detached at exit with the process).
inline BlockThreads& threads_for_block(unsigned block) {
    static std::mutex mutex;
    static std::map<unsigned, BlockThreads*> pools;
    std::lock_guard<std::mutex> lock(mutex);
    BlockThreads*& p = pools[block];
    if (!p) p = new BlockThreads(block);
    return *p;
}

template <typename... A>
void launch(void (*kernel)(A...), unsigned grid, unsigned block, void** args) {
    gridDim.x = grid;
    blockDim.x = block;
    BlockThreads& threads = threads_for_block(block);
    const std::function<void()> body = [&] {
        call(kernel, args, std::index_sequence_for<A...>{});
    };
    for (unsigned b = 0; b < grid; ++b) threads.run(b, body);
}

}  // namespace fusedopt_emulation
