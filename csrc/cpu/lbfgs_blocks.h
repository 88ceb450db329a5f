// csrc/cpu/lbfgs_blocks.h -- the block machinery shared by the L-BFGS loops (lbfgs.cpp,
// lbfgs_compact.cpp): the fixed partition of a vector into kReduceBlock blocks, the thread count,
// per-block results written in parallel and added in block order on the calling thread.
// Internal to csrc/cpu (not a kernel interface).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "fusedopt/blocked_sum.h"
#include "kernels.h"
#include "parallel.h"

namespace fusedopt {
namespace cpu {
namespace lbfgs {
namespace blocks {

// Threads for a vector of n elements. Below kParallelMin elements the loops run on one thread:
// the two-loop direction is 2m + 1 short passes, each a job of the pool, and at these sizes
// waking the workers 2m + 1 times saves little (measured with the former OpenMP barriers: 0.65
// ms serial vs 0.41 ms on 2 threads for the direction at n = 1e5, m = 10, idle).
constexpr int64_t kParallelMin = int64_t(1) << 18;
inline int lbfgs_threads(int64_t n) { return n < kParallelMin ? 1 : threads_for(n); }

inline int64_t num_blocks(int64_t n) { return (n + kReduceBlock - 1) / kReduceBlock; }

// The float64 blocked dot of a and b over [lo, hi).
template <typename T>
double dot_block(const T* __restrict a, const T* __restrict b, int64_t lo, int64_t hi) {
    return block_sum(lo, hi,
                     [&](int64_t i) { return static_cast<double>(a[i]) * static_cast<double>(b[i]); });
}

// Lane accumulation of a blocked sum over a piece [lo, hi) of a block, for loops that visit a
// block in pieces: acc holds the eight lanes of blocked_sum.h, the piece starts a multiple of 8
// elements after the block's start and only the block's last piece may have a length that is
// not a multiple of 8, so every element goes to the lane and the place in that lane's order
// that block_sum gives it (combine_lanes(acc) after the last piece: the bits of block_sum).
// term(i) returns a double and may store element i.
template <typename Term>
inline void lanes_add(double* __restrict acc, int64_t lo, int64_t hi, Term&& term) {
    double l[kSumLanes];
    for (int j = 0; j < kSumLanes; ++j) l[j] = acc[j];
    int64_t i = lo;
    for (; i + kSumLanes <= hi; i += kSumLanes)
        for (int j = 0; j < kSumLanes; ++j) l[j] = l[j] + term(i + j);
    for (int j = 0; i < hi; ++i, ++j) l[j] = l[j] + term(i);
    for (int j = 0; j < kSumLanes; ++j) acc[j] = l[j];
}

// f(i, j) for each i of [lo, hi) with j = (i - lo) % kSumLanes, the lanes advancing together as
// in block_sum (each lane's elements in increasing order), so that the compiler may vectorize
// across them: for loops that keep per-lane state of their own (a sum's lanes and a minimum's).
template <typename F>
inline void lanes_each(int64_t lo, int64_t hi, F&& f) {
    int64_t i = lo;
    for (; i + kSumLanes <= hi; i += kSumLanes)
        for (int j = 0; j < kSumLanes; ++j) f(i + j, j);
    for (int j = 0; i < hi; ++i, ++j) f(i, j);
}

// combine_lanes of the kSumLanes lanes that start at `lanes` (a sum's row in a buffer of many).
inline double combine_lanes_at(const double* lanes) {
    double l[kSumLanes];
    for (int j = 0; j < kSumLanes; ++j) l[j] = lanes[j];
    return combine_lanes(l);
}

inline double sum_in_order(const double* part, int64_t nb, int64_t stride) {
    double t = 0.0;
    for (int64_t b = 0; b < nb; ++b) t = t + part[b * stride];
    return t;
}

// out[j] = the sum in block order of result j of every block (k per block).
inline void sums_in_order(double* out, const double* part, int64_t nb, int64_t k) {
    for (int64_t j = 0; j < k; ++j) out[j] = sum_in_order(part + j, nb, k);
}

// Blocks per run, for loops over many rows of the history: a thread takes a run of kRunBlocks
// consecutive blocks and sweeps it row (or pair) by row, so that each row is read from memory in
// one sequential stretch of kRunBlocks * kReduceBlock elements (512 KiB in float64) while the
// run of the vector it meets stays in L2. Short stretches (every row's piece of a few KiB in
// turn, as before) leave the hardware prefetchers re-learning each stream. Measured on Zen 4
// (2 threads, m = 10, float64, against lbfgs_dot's read of the history in the same process): the
// compact direction went from 65-70% to 80-86% of that read at n = 1e6 and to 91% at 1e7;
// runs of 2 blocks did as well at 1e6 and worse at 1e7 (85%), runs of 8 worse at 1e6 (77%).
// A block's results stay the block's own: no bit depends on the runs.
constexpr int64_t kRunBlocks = 4;

// run(b0, b1, part + k * b0) for each run [b0, b1) of per_run consecutive blocks of [0, n), in
// parallel, each writing k results per block; returns part (thread-local storage, valid until
// the next call on this thread).
template <typename Run>
const double* run_results_k(int64_t n, int64_t k, int64_t per_run, Run&& run) {
    const int64_t nb = num_blocks(n);
    thread_local std::vector<double> part_store;
    part_store.assign(static_cast<size_t>(k * nb), 0.0);
    double* part = part_store.data();
    parallel_chunks((nb + per_run - 1) / per_run, lbfgs_threads(n), [&](int64_t r) {
        const int64_t b0 = r * per_run;
        run(b0, std::min(nb, b0 + per_run), part + k * b0);
    });
    return part;
}

// block(lo, hi, part + k * b) for each block [lo, hi) of [0, n), in parallel, each writing k
// results; returns part (as run_results_k).
template <typename Block>
const double* block_results_k(int64_t n, int64_t k, Block&& block) {
    return run_results_k(n, k, 1, [&](int64_t b, int64_t, double* pb) {
        block(b * kReduceBlock, std::min(n, (b + 1) * kReduceBlock), pb);
    });
}

template <int K, typename Block>
const double* block_results(int64_t n, Block&& block) {
    return block_results_k(n, K, block);
}

}  // namespace blocks
}  // namespace lbfgs
}  // namespace cpu
}  // namespace fusedopt
