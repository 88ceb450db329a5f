// csrc/cpu/tensor_bindings.cpp -- fusedopt._core.TensorPlan: a multi-tensor call given as data
// pointers, checked once (see tensors.h).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "tensors.h"

namespace py = pybind11;

namespace fusedopt {
namespace cpu {
namespace {

const char* const kSlotNames[kSlots] = {"params", "grads", "state0", "state1", "state2",
                                        "master_params"};

std::string item(int slot, size_t i) {
    return std::string(kSlotNames[slot]) + "[" + std::to_string(i) + "]";
}

// The bytes of one element of `slot` for a tensor of dtype d: params and grads the dtype's,
// states and master weights its math type's (float32 for 16-bit params).
int64_t slot_itemsize(int slot, DType d) {
    if (slot == kParam || slot == kGrad) return itemsize(d);
    return is_16bit(d) ? 4 : itemsize(d);
}

uintptr_t pointer(py::handle o, int slot, size_t i) {
    if (!PyLong_Check(o.ptr()))
        throw py::type_error(item(slot, i) + ": a data pointer (int) is expected, got " +
                             std::string(Py_TYPE(o.ptr())->tp_name));
    const unsigned long long v = PyLong_AsUnsignedLongLong(o.ptr());
    if (PyErr_Occurred()) {
        PyErr_Clear();
        throw py::value_error(item(slot, i) + ": not a data pointer (negative or too large)");
    }
    return static_cast<uintptr_t>(v);
}

struct Span {
    uintptr_t lo, hi;
    int slot;
    size_t index;
};

}  // namespace

class TensorPlan {
  public:
    TensorPlan(const py::sequence& dtypes, const py::sequence& sizes, const py::sequence& slots,
               py::object owners)
        : owners_(std::move(owners)) {
        const size_t n = static_cast<size_t>(py::len(dtypes));
        if (static_cast<size_t>(py::len(sizes)) != n)
            throw py::value_error("sizes has " + std::to_string(py::len(sizes)) +
                                  " items but dtypes has " + std::to_string(n));
        if (py::len(slots) != static_cast<size_t>(kSlots))
            throw py::value_error("slots must have " + std::to_string(kSlots) +
                                  " items (params, grads, state0-2, master_params), each a list of "
                                  "data pointers or None");
        dtype_.resize(n);
        size_.resize(n);
        for (size_t i = 0; i < n; ++i) {
            const long d = py::cast<long>(dtypes[i]);
            if (d < 0 || d >= kDTypes)
                throw py::value_error("dtypes[" + std::to_string(i) + "]: a dtype code in 0.." +
                                      std::to_string(kDTypes - 1) + " is expected, got " +
                                      std::to_string(d));
            dtype_[i] = static_cast<DType>(d);
            size_[i] = py::cast<int64_t>(sizes[i]);
            if (size_[i] < 0)
                throw py::value_error("sizes[" + std::to_string(i) + "] must be >= 0");
        }
        std::vector<uintptr_t> ptrs[kSlots];
        for (int s = 0; s < kSlots; ++s) {
            py::handle list = slots[s];
            if (list.is_none()) continue;
            if (s == kGrad)
                throw py::value_error("slots[1] (grads) must be None: grads are given at each "
                                      "step with set_grads()");
            if (static_cast<size_t>(py::len(list)) != n)
                throw py::value_error(std::string(kSlotNames[s]) + " has " +
                                      std::to_string(py::len(list)) + " pointers but dtypes has " +
                                      std::to_string(n));
            mask_ |= 1u << s;
            ptrs[s].resize(n);
            py::sequence seq = py::reinterpret_borrow<py::sequence>(list);
            for (size_t i = 0; i < n; ++i) {
                ptrs[s][i] = pointer(seq[i], s, i);
                if (s == kMaster && !is_16bit(dtype_[i]))
                    throw py::type_error(item(s, i) + ": master weights belong to float16 or "
                                         "bfloat16 params; " + item(kParam, i) + " has dtype " +
                                         dtype_name(dtype_[i]));
                check_aligned(ptrs[s][i], s, i);
            }
        }
        if (!(mask_ & (1u << kParam))) throw py::value_error("slots[0] (params) is required");
        mask_ |= 1u << kGrad;
        // No written array may overlap another.
        for (int s = 0; s < kSlots; ++s)
            for (size_t i = 0; s != kGrad && !ptrs[s].empty() && i < n; ++i)
                if (size_[i] > 0)
                    written_.push_back({ptrs[s][i],
                                        ptrs[s][i] + uintptr_t(size_[i] * slot_itemsize(s, dtype_[i])),
                                        s, i});
        std::sort(written_.begin(), written_.end(),
                  [](const Span& x, const Span& y) { return x.lo < y.lo; });
        for (size_t k = 1; k < written_.size(); ++k)
            if (written_[k].lo < written_[k - 1].hi)
                throw py::value_error(item(written_[k].slot, written_[k].index) +
                                      " shares memory with " +
                                      item(written_[k - 1].slot, written_[k - 1].index) +
                                      "; arrays that are updated in place must not alias");
        // The Segments, by dtype as collect() makes them; place_[i] finds tensor i's.
        int64_t offset[kDTypes] = {0, 0, 0, 0};
        place_.assign(n, -1);
        for (size_t i = 0; i < n; ++i) {
            if (size_[i] == 0) continue;
            Segment seg{nullptr, nullptr, {nullptr, nullptr, nullptr}, nullptr, size_[i], 0};
            for (int s = 0; s < kSlots; ++s)
                if (!ptrs[s].empty()) seg.set(static_cast<Slot>(s), reinterpret_cast<void*>(ptrs[s][i]));
            const int d = static_cast<int>(dtype_[i]);
            seg.offset = offset[d];
            offset[d] += size_[i];
            place_[i] = static_cast<int64_t>(segs_[d].size()) * kDTypes + d;
            segs_[d].push_back(seg);
        }
    }

    // The grads of the next kernel call: one data pointer per tensor (the param's dtype and
    // size, contiguous: checked by the caller), held through `owners` until that call ends.
    void set_grads(const py::sequence& ptrs, py::object owners) {
        grads_set_ = false;
        grads_owner_ = py::none();
        const size_t n = size_.size();
        if (static_cast<size_t>(py::len(ptrs)) != n)
            throw py::value_error("grads has " + std::to_string(py::len(ptrs)) +
                                  " pointers but the plan has " + std::to_string(n) + " tensors");
        for (size_t i = 0; i < n; ++i) {
            const uintptr_t g = pointer(ptrs[i], kGrad, i);
            if (place_[i] < 0) continue;
            check_aligned(g, kGrad, i);
            const uintptr_t hi = g + uintptr_t(size_[i] * itemsize(dtype_[i]));
            // The written spans are disjoint and sorted: the first whose end lies beyond g is
            // the only candidate for an overlap.
            const auto w = std::upper_bound(
                written_.begin(), written_.end(), g,
                [](uintptr_t v, const Span& sp) { return v < sp.hi; });
            if (w != written_.end() && w->lo < hi)
                throw py::value_error(item(kGrad, i) + " shares memory with " +
                                      item(w->slot, w->index) +
                                      "; arrays that are updated in place must not alias");
            const int64_t at = place_[i];
            segs_[at % kDTypes][static_cast<size_t>(at / kDTypes)].grad =
                reinterpret_cast<const void*>(g);
        }
        grads_owner_ = std::move(owners);
        grads_set_ = true;
    }

    size_t size() const { return size_.size(); }
    unsigned mask() const { return mask_; }

    // Fills `out` for one kernel call; the grads (and the reference to their owners) pass to it.
    void fill(Batches& out, py::handle self) {
        if (!grads_set_)
            throw py::value_error("grads: set_grads() has not been called since this plan's last "
                                  "kernel call");
        for (int d = 0; d < kDTypes; ++d) out.segs[d].assign(segs_[d].begin(), segs_[d].end());
        out.master = (mask_ & (1u << kMaster)) != 0;
        out.hold(self.ptr());
        out.hold(grads_owner_.ptr());
        grads_owner_ = py::none();
        grads_set_ = false;
    }

  private:
    void check_aligned(uintptr_t p, int slot, size_t i) const {
        if (size_[i] == 0) return;  // never read nor written
        if (p == 0) throw py::value_error(item(slot, i) + ": null data pointer");
        if (p % static_cast<uintptr_t>(slot_itemsize(slot, dtype_[i])))
            throw py::value_error(item(slot, i) + " must be aligned to its dtype");
    }

    std::vector<DType> dtype_;
    std::vector<int64_t> size_;
    unsigned mask_ = 0;            // bit s: the plan holds slot s (grads always)
    std::vector<Span> written_;    // the written arrays, sorted by address, disjoint
    std::vector<Segment> segs_[kDTypes];
    std::vector<int64_t> place_;   // tensor i's Segment: index * kDTypes + dtype, or -1 (empty)
    py::object owners_;            // keeps the params' and states' memory alive
    py::object grads_owner_ = py::none();
    bool grads_set_ = false;
};

bool collect_plan(const ListArgs& args, Batches& out) {
    const py::handle first = args.arg[0].list;
    if (!py::isinstance<TensorPlan>(first)) return false;
    TensorPlan& plan = first.cast<TensorPlan&>();
    unsigned named = 0;
    for (int k = 0; k < args.n; ++k) {
        if (!args.arg[k].list.is(first))
            throw py::type_error(std::string(args.arg[k].name) + ": must be the TensorPlan given "
                                 "as " + args.arg[0].name + " (a plan stands in for every list "
                                 "it holds)");
        named |= 1u << args.arg[k].slot;
    }
    if (named != plan.mask()) {
        std::string want, got;
        for (int s = 0; s < kSlots; ++s) {
            if (plan.mask() & (1u << s)) want += std::string(want.empty() ? "" : ", ") + kSlotNames[s];
            if (named & (1u << s)) got += std::string(got.empty() ? "" : ", ") + kSlotNames[s];
        }
        throw py::value_error("the TensorPlan holds " + want + "; this call takes " + got);
    }
    for (auto& v : out.segs) v.clear();
    out.release();
    plan.fill(out, first);
    return true;
}

}  // namespace cpu
}  // namespace fusedopt

void register_tensors(py::module_& m) {
    using fusedopt::cpu::TensorPlan;
    py::class_<TensorPlan>(m, "TensorPlan",
                           "The arrays of one multi-tensor call as data pointers, checked once "
                           "(fusedopt.torch's path to the kernels): pass it as every list "
                           "argument of a rule; set_grads() before each call.")
        .def(py::init<const py::sequence&, const py::sequence&, const py::sequence&, py::object>(),
             py::arg("dtypes"), py::arg("sizes"), py::arg("slots"), py::arg("owners"))
        .def("set_grads", &TensorPlan::set_grads, py::arg("ptrs"), py::arg("owners"))
        .def("__len__", &TensorPlan::size)
        .def_property_readonly_static("DTYPES", [](py::object) {
            return py::make_tuple("float32", "float64", "float16", "bfloat16");
        });
}
