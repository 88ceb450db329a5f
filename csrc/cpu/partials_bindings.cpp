// csrc/cpu/partials_bindings.cpp -- per-block partial dot products, for reductions that are
// finished elsewhere (fusedopt.lbfgs.mpi: the blocks of every rank gathered and added in block
// order, which gives the bits of the one-process kernels).
//
// block_dots(a, b) returns the (nb, P) float64 array part[blk, p] = the blocked sum (see
// fusedopt/blocked_sum.h) of a[p][i] * b[p][i] over block blk = [blk * 16384, ...) of the common
// length n. Adding part[:, p] in block order from 0.0 (t = t + part[blk, p]) is, bit for bit,
// lbfgs_dot(a[p], b[p]), and for the rows of a history lbfgsb_rows_dots: those kernels make the
// same block sums (dot_block in lbfgs.cpp) and add them in the same order. All P products of a
// block are taken while the block is in cache (one pass over the distinct arrays).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "arrays.h"
#include "fusedopt/blocked_sum.h"
#include "lbfgs.h"
#include "nogil.h"
#include "parallel.h"

namespace py = pybind11;

namespace {

using fusedopt::cpu::Array;
using fusedopt::cpu::DType;
using fusedopt::cpu::kReduceBlock;

template <typename T>
void block_dots_loop(double* part, const std::vector<const void*>& a,
                     const std::vector<const void*>& b, int64_t n) {
    const int64_t np = static_cast<int64_t>(a.size());
    const int64_t nb = (n + kReduceBlock - 1) / kReduceBlock;
    // One thread below the L-BFGS kernels' threshold, as they do (the bits do not depend on it).
    const int nt = n < fusedopt::cpu::lbfgs::parallel_min() ? 1 : fusedopt::cpu::threads_for(n);
    fusedopt::cpu::parallel_chunks(nb, nt, [&](int64_t blk) {
        const int64_t lo = blk * kReduceBlock, hi = std::min(n, lo + kReduceBlock);
        for (int64_t p = 0; p < np; ++p) {
            const T* __restrict x = static_cast<const T*>(a[p]);
            const T* __restrict y = static_cast<const T*>(b[p]);
            part[blk * np + p] = fusedopt::block_sum(lo, hi, [&](int64_t i) {
                return static_cast<double>(x[i]) * static_cast<double>(y[i]);
            });
        }
    });
}

py::array_t<double> block_dots(py::sequence a_h, py::sequence b_h) {
    const int64_t np = static_cast<int64_t>(py::len(a_h));
    if (np != static_cast<int64_t>(py::len(b_h)))
        throw py::value_error("a and b must have the same length, got " + std::to_string(np) +
                              " and " + std::to_string(py::len(b_h)));
    if (np == 0) throw py::value_error("a is empty: give at least one pair of arrays");
    std::vector<Array> arrays;
    arrays.reserve(static_cast<size_t>(2 * np));
    std::vector<py::object> keep;  // the items stay referenced while the GIL is released
    for (int64_t p = 0; p < np; ++p) {
        py::object x = a_h[p], y = b_h[p];
        const Array* like = arrays.empty() ? nullptr : &arrays.front();
        arrays.push_back(fusedopt::cpu::check_array(x.ptr(), "a", p, false, like));
        arrays.push_back(fusedopt::cpu::check_array(y.ptr(), "b", p, false, &arrays.front()));
        for (const Array* v : {&arrays[arrays.size() - 2], &arrays.back()})
            if (v->size != arrays.front().size)
                throw py::value_error(v->name() + " has " + std::to_string(v->size) +
                                      " elements but a[0] has " +
                                      std::to_string(arrays.front().size));
        keep.push_back(x);
        keep.push_back(y);
    }
    const int64_t n = arrays.front().size;
    const int64_t nb = (n + kReduceBlock - 1) / kReduceBlock;
    py::array_t<double> out({nb, np});
    std::vector<const void*> a, b;
    for (int64_t p = 0; p < np; ++p) {
        a.push_back(arrays[2 * p].data());
        b.push_back(arrays[2 * p + 1].data());
    }
    double* part = out.mutable_data();
    const bool f32 = arrays.front().dtype == DType::kFloat32;
    {
        fusedopt::NoGil nogil;
        if (f32)
            block_dots_loop<float>(part, a, b, n);
        else
            block_dots_loop<double>(part, a, b, n);
    }
    return out;
}

}  // namespace

void register_partials(py::module_& m) {
    m.def("block_dots", &block_dots, py::arg("a"), py::arg("b"),
          "Per-block partial dot products: a (nb, P) float64 array, part[k, p] = the blocked sum "
          "of a[p] * b[p] over the k-th block of reduce_block elements (a, b: sequences of P "
          "arrays of one length and dtype). Summed over k in order from 0.0, column p gives the "
          "bits of lbfgs_dot(a[p], b[p]).");
}
