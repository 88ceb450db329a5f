// fusedopt/blocked_sum.h -- the one float64 blocked sum of fusedopt: global_norm's sum of squares,
// every L-BFGS dot, on the CPU (csrc/cpu/kernels.cpp, csrc/cpu/lbfgs.cpp) and on CUDA
// (csrc/cuda/blocked_sum.cuh), compiled by g++ and by NVRTC alike.
//
// A vector is cut into blocks of a fixed number of elements (fusedopt._core.reduce_block; the
// partition depends on the length alone, never on the number of threads). Within a block
// [lo, hi), lane j (0 <= j < kSumLanes) adds the terms of elements lo + j, lo + j + 8, ... in
// increasing order, starting from 0.0: element i goes to lane (i - lo) % 8, the last
// (hi - lo) % 8 elements included, so there is no separate tail rule. The lanes are combined as
// ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)), and the block sums are added in block order.
// Every addition is one IEEE float64 operation in this fixed order, so any schedule, thread
// count, instruction set or device gives the same bits.
#pragma once

#include "hd.h"

namespace fusedopt {

constexpr int kSumLanes = 8;

// The lanes of one block, combined in the fixed pairwise order.
FUSEDOPT_HD double combine_lanes(const double (&a)[kSumLanes]) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// Lane (first - lo) % 8 of a block ending at hi: adds term(first), term(first + 8), ... to acc.
// For code that runs the lanes apart (one CUDA thread per lane); term(i) returns a double.
template <typename I, typename Term>
FUSEDOPT_HD double lane_sum(double acc, I first, I hi, Term&& term) {
    for (I i = first; i < hi; i += kSumLanes) acc = acc + term(i);
    return acc;
}

// The blocked sum of the block [lo, hi): sum of term(i), lanes and combination as above. The
// host form: the eight lanes advance together, so that the compiler may vectorize across them
// (it may not reorder any lane's additions). term(i) returns a double and may store element i.
template <typename I, typename Term>
FUSEDOPT_HD double block_sum(I lo, I hi, Term&& term) {
    double acc[kSumLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
    I i = lo;
    for (; i + kSumLanes <= hi; i += kSumLanes)
        for (int j = 0; j < kSumLanes; ++j) acc[j] = acc[j] + term(i + j);
    for (int j = 0; i < hi; ++i, ++j) acc[j] = acc[j] + term(i);
    return combine_lanes(acc);
}

}  // namespace fusedopt
