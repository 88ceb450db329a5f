// csrc/cpu/parallel.h -- split the global element range of a multi-tensor batch over threads.
//
// One parallel region per call, whatever the number of tensors: thread k gets one contiguous
// slice of the concatenated index space (static schedule) and walks the tensors that overlap it.
// Elementwise rules give the same bits whatever the slicing, so the thread count never matters.
#pragma once
#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels.h"

namespace fusedopt {
namespace cpu {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kSerialCutoff = 1 << 15;

inline int threads_for(int64_t work) {
#ifdef _OPENMP
    if (work < kSerialCutoff) return 1;
    const int64_t most = std::max<int64_t>(1, work / (kSerialCutoff / 2));
    return static_cast<int>(std::min<int64_t>(omp_get_max_threads(), most));
#else
    (void)work;
    return 1;
#endif
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

template <typename Body>
inline void parallel_for_elements(const Batch& b, Body&& body) {
    const int nt = threads_for(b.total);
    if (nt <= 1) {
        for_range(b, 0, b.total, body);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        const int64_t t = omp_get_thread_num();
        const int64_t n = omp_get_num_threads();
        // Slices rounded to 64 elements so that no two threads share a cache line.
        int64_t chunk = (b.total + n - 1) / n;
        chunk = (chunk + 63) / 64 * 64;
        const int64_t lo = std::min(b.total, t * chunk);
        const int64_t hi = std::min(b.total, lo + chunk);
        for_range(b, lo, hi, body);
    }
#endif
}

// Number of reduction blocks of a batch (each segment is cut into blocks of kReduceBlock).
inline int64_t count_blocks(const Batch& b) {
    int64_t nb = 0;
    for (int64_t i = 0; i < b.nsegs; ++i) nb += (b.segs[i].size + kReduceBlock - 1) / kReduceBlock;
    return nb;
}

}  // namespace cpu
}  // namespace fusedopt
