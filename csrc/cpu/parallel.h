// csrc/cpu/parallel.h -- how the CPU loops use threads: fixed chunks claimed one at a time.
//
// A call cuts its work into fixed chunks (kChunk elements of the concatenated index space, or one
// reduction block) and runs them on the calling thread and up to threads - 1 workers of a small
// persistent pool (parallel.cpp). Each thread claims the next unclaimed chunk through one atomic
// counter (on OpenMP's threads, by default one counter per thread's contiguous slice, the others'
// slices taken over chunk by chunk once its own is done: split_mode below); the caller works too
// and waits only for chunks that were actually claimed. A thread
// that the OS has descheduled (other processes keeping the cores busy) therefore holds at most
// the one chunk it claimed, and a worker that wakes late finds nothing left: on a loaded machine
// the call costs at most one chunk more than on one thread, where a static split (an OpenMP
// parallel region) waits for the slowest thread's whole slice and for its join barrier.
//
// Elementwise rules give the same bits whatever the split, and every reduction writes one
// partial per fixed block and adds the partials in block order on the calling thread, so neither
// the thread count nor which thread ran which chunk ever changes a result.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels.h"

namespace fusedopt {
namespace cpu {

// Below this many elements a call runs on the calling thread alone: waking a worker costs more
// than it saves.
constexpr int64_t kSerialCutoff = 1 << 15;

// Elements per chunk of the elementwise loops (a multiple of 64, so that no two threads share a
// cache line): 16384 elements are 20-100 us of work, small enough that a stalled thread holds
// little, large enough that the claim (one atomic add) is noise.
constexpr int64_t kChunk = 16384;

// Threads for `work` elements: 1 below kSerialCutoff, else at most the thread count set by
// fusedopt.set_num_threads / OMP_NUM_THREADS, and at most one per kSerialCutoff / 2 elements.
int threads_for(int64_t work);

// Runs fn(ctx, k) exactly once for every k in [0, nchunks), on the calling thread and at most
// threads - 1 pool workers; returns when all have run. If another thread's call holds the pool,
// this one runs its chunks itself. Safe from any thread; the pool is re-created after fork().
void run_chunks(int64_t nchunks, int threads, void (*fn)(void*, int64_t), void* ctx);

// How the pool waits (no result depends on it): an idle worker polls (the CPU's pause instruction)
// for the next job for `idle_spin_us` microseconds of the steady clock, then sleeps on a
// condition variable until a job wakes it (0: sleeps at once); a caller whose chunks are all
// claimed polls `block_after_us` microseconds for the workers' last chunks, then blocks until
// they are done (-1: never blocks; it yields between polls). `threading` says whose threads
// run the chunks (Threading): the pool's, or the process's OpenMP runtime's (one parallel region
// per call, the chunks claimed as here: the threads torch uses when it loaded the same libgomp,
// awake after torch's own work), or -- kAuto, the default -- OpenMP's for calls made while the
// calling thread is marked a torch caller (set_torch_caller: fusedopt.torch's steps) and the
// pool's otherwise. Process-wide; idle_spin_us is fusedopt.set_pool_spin /
// FUSEDOPT_POOL_SPIN_US, threading fusedopt.set_threading / FUSEDOPT_THREADING; all three are
// _core._pool_waits (benchmarks, tests).
enum Threading : int { kAuto = 0, kPool = 1, kOpenMP = 2 };
struct PoolWaits {
    int idle_spin_us;
    int block_after_us;
    int threading;  // Threading
};
// Default idle spin: long enough that back-to-back calls (a step's groups, a benchmark loop, the
// 150 us of Python between two steps of a 200-tensor model) find the workers awake, short enough
// that they do not hold the cores for milliseconds after a step while another runtime's threads
// (torch's OpenMP pool in a training loop) have work.
constexpr int kDefaultIdleSpinUs = 200;
PoolWaits pool_waits();
void set_pool_waits(PoolWaits w);
// One field of the waits each (no read-modify-write of the others: safe beside a concurrent
// setter of another field).
void set_idle_spin_us(int us);
void set_threading(int mode);
// Marks the calling thread as stepping torch tensors (kAuto then runs its calls on OpenMP's
// threads); returns the previous mark. Thread-local.
bool set_torch_caller(bool on);
// How many calls ran on OpenMP's threads so far (tests: which threads a call took).
int64_t openmp_regions();
// How a call run on OpenMP's threads hands out its chunks (no result depends on it; benchmarks
// compare them, _core._split): kClaim, one shared counter, each thread claiming the next chunk;
// kRanges, each of the region's threads first claims, one at a time, the chunks of its own
// contiguous slice (thread t of T: chunks [t n / T, (t + 1) n / T)), in order, then those left
// in the other slices, from the next thread's on. A slice is a long run of consecutive
// addresses, as a static split's (DeepSpeed's CPU Adam: `omp parallel for`), while a thread
// still holds at most the one chunk it claimed: a descheduled thread's slice is taken over by
// the others chunk by chunk, as with kClaim. Process-wide; kRanges by default (the layout of
// DeepSpeed's split at no cost in robustness; bench/torch_split.py compares the two).
enum Split : int { kClaim = 0, kRanges = 1 };
int split_mode();
void set_split_mode(int mode);

// f(k) for every k in [0, nchunks), as run_chunks.
template <typename F>
inline void parallel_chunks(int64_t nchunks, int threads, F&& f) {
    if (threads <= 1 || nchunks <= 1) {
        for (int64_t k = 0; k < nchunks; ++k) f(k);
        return;
    }
    using Fn = std::remove_reference_t<F>;
    run_chunks(
        nchunks, threads, [](void* c, int64_t k) { (*static_cast<Fn*>(c))(k); },
        const_cast<void*>(static_cast<const void*>(&f)));
}

// Calls body(segment, begin, end) for the part [begin, end) of each segment that falls in
// [lo, hi) of the global range.
template <typename Body>
inline void for_range(const Batch& b, int64_t lo, int64_t hi, Body&& body) {
    if (lo >= hi) return;
    // First segment whose end lies beyond lo.
    const Segment* first = std::upper_bound(
        b.segs, b.segs + b.nsegs, lo,
        [](int64_t v, const Segment& s) { return v < s.offset + s.size; });
    for (const Segment* s = first; s != b.segs + b.nsegs && s->offset < hi; ++s) {
        const int64_t begin = std::max(lo, s->offset) - s->offset;
        const int64_t end = std::min(hi, s->offset + s->size) - s->offset;
        if (begin < end) body(*s, begin, end);
    }
}

// body(segment, lo, hi) over the whole batch, chunk by chunk on the threads of threads_for.
template <typename Body>
inline void parallel_for_elements(const Batch& b, Body&& body) {
    const int nt = threads_for(b.total);
    const int64_t nchunks = (b.total + kChunk - 1) / kChunk;
    if (nt <= 1 || nchunks <= 1) {
        for_range(b, 0, b.total, body);
        return;
    }
    parallel_chunks(nchunks, nt, [&](int64_t k) {
        for_range(b, k * kChunk, std::min(b.total, (k + 1) * kChunk), body);
    });
}

}  // namespace cpu
}  // namespace fusedopt
