// csrc/bindings.cpp -- the pybind11 module fusedopt._core.
//
// Only argument checks, the choice of instruction set and the GIL release live here; the math is
// in csrc/include/fusedopt/rules/, the loops in csrc/cpu/. Per-step scalars arrive as float64,
// already computed by fusedopt._scalars (the same numbers the NumPy reference uses), and are
// checked there too; this layer checks the arrays.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/arrays.h"
#include "cpu/kernels.h"
#include "cpu/nogil.h"
#include "fusedopt/rules/common.h"

namespace py = pybind11;
using namespace fusedopt::cpu;

void register_lbfgs(py::module_& m);  // csrc/cpu/lbfgs_bindings.cpp

namespace {

const KernelTable* g_kernels = nullptr;

bool cpu_has(const char* feature) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!std::strcmp(feature, "avx2")) return __builtin_cpu_supports("avx2");
    if (!std::strcmp(feature, "avx512"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    (void)feature;
    return false;
}

bool cpu_has_avx2() { return cpu_has("avx2"); }

const KernelTable& kernels() { return *g_kernels; }

// The kernel copies, best first; `auto` takes the first the CPU runs.
struct IsaEntry {
    const char* name;
    const KernelTable& (*table)();
};
constexpr IsaEntry kIsas[] = {
    {"avx512", &avx512::table}, {"avx2", &avx2::table}, {"generic", &generic::table}};

void set_isa(const std::string& name) {
    for (const IsaEntry& e : kIsas) {
        const bool runs = !std::strcmp(e.name, "generic") || cpu_has(e.name);
        if (name == e.name) {
            if (!runs) throw py::value_error("isa: this CPU cannot run '" + name + "'");
            g_kernels = &e.table();
            return;
        }
        if (name == "auto" && runs) {
            g_kernels = &e.table();
            return;
        }
    }
    throw py::value_error("isa must be 'auto', 'avx512', 'avx2' or 'generic', got '" + name + "'");
}

std::vector<std::string> available_isas() {
    std::vector<std::string> out;
    for (const IsaEntry& e : kIsas)
        if (!std::strcmp(e.name, "generic") || cpu_has(e.name)) out.push_back(e.name);
    return out;
}

// Runs `fn(batch)` for the float32 and the float64 tensors of a call, without the GIL.
template <typename Fn>
void run(const Batches& b, Fn&& fn) {
    const Batch b32 = b.batch(DType::kFloat32);
    const Batch b64 = b.batch(DType::kFloat64);
    if (b32.total == 0 && b64.total == 0) return;
    fusedopt::NoGil nogil;
    if (b32.total) fn(b32);
    if (b64.total) fn(b64);
}

int decay_mode(double weight_decay, bool decoupled) {
    if (weight_decay == 0.0) return fusedopt::rules::kNone;
    return decoupled ? fusedopt::rules::kDecoupled : fusedopt::rules::kL2;
}

// Reused between calls: no allocation once grown.
Batches& scratch() {
    thread_local Batches b;
    return b;
}

void sgd(py::handle params, py::handle grads, py::handle bufs, double lr, double momentum,
         double dampening_complement, double weight_decay, bool first_step, bool nesterov,
         bool maximize) {
    Batches& b = scratch();
    const bool mom = momentum != 0.0;
    ListArgs args{{"params", params, true, -1}, {"grads", grads, false, -2}};
    if (mom) args.add({"momentum_buffers", bufs, true, 0});
    collect(args, b);
    const SgdArgs a{lr,         momentum, dampening_complement, weight_decay, first_step,
                    nesterov,   maximize, mom, decay_mode(weight_decay, false)};
    run(b, [&](const Batch& x) { kernels().sgd(x, a); });
}

void adagrad(py::handle params, py::handle grads, py::handle sums, double clr, double eps,
             double eps_root, double weight_decay, bool maximize) {
    Batches& b = scratch();
    collect({{"params", params, true, -1},
             {"grads", grads, false, -2},
             {"state_sums", sums, true, 0}},
            b);
    const AdagradArgs a{clr, eps, eps_root, weight_decay, maximize,
                        decay_mode(weight_decay, false)};
    run(b, [&](const Batch& x) { kernels().adagrad(x, a); });
}

void rmsprop(py::handle params, py::handle grads, py::handle square_avgs, py::handle grad_avgs,
             py::handle bufs, double lr, double alpha, double one_minus_alpha, double eps,
             double eps_root, double weight_decay, double momentum, bool centered,
             bool maximize) {
    Batches& b = scratch();
    const bool mom = momentum != 0.0;
    ListArgs args{{"params", params, true, -1},
                              {"grads", grads, false, -2},
                              {"square_avgs", square_avgs, true, 0}};
    if (centered) args.add({"grad_avgs", grad_avgs, true, 1});
    if (mom) args.add({"momentum_buffers", bufs, true, 2});
    collect(args, b);
    const RmspropArgs a{lr,       alpha,    one_minus_alpha, eps, eps_root,
                        weight_decay, momentum, maximize, centered, mom,
                        decay_mode(weight_decay, false)};
    run(b, [&](const Batch& x) { kernels().rmsprop(x, a); });
}

void adam(py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs,
          py::handle max_exp_avg_sqs, double lr, double beta1, double one_minus_beta1,
          double beta2, double one_minus_beta2, double bias_correction1,
          double bias_correction2, double eps, double eps_root, double weight_decay,
          double decay, bool decoupled, bool amsgrad, bool maximize) {
    Batches& b = scratch();
    ListArgs args{{"params", params, true, -1},
                              {"grads", grads, false, -2},
                              {"exp_avgs", exp_avgs, true, 0},
                              {"exp_avg_sqs", exp_avg_sqs, true, 1}};
    if (amsgrad) args.add({"max_exp_avg_sqs", max_exp_avg_sqs, true, 2});
    collect(args, b);
    const AdamArgs a{lr,  beta1,    one_minus_beta1, beta2,        one_minus_beta2,
                     bias_correction1, bias_correction2, eps, eps_root, weight_decay,
                     decay, maximize, amsgrad, decay_mode(weight_decay, decoupled)};
    run(b, [&](const Batch& x) { kernels().adam(x, a); });
}

void adamax(py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_infs,
            double clr, double beta1, double one_minus_beta1, double beta2, double eps,
            double weight_decay, bool maximize) {
    Batches& b = scratch();
    collect({{"params", params, true, -1},
             {"grads", grads, false, -2},
             {"exp_avgs", exp_avgs, true, 0},
             {"exp_infs", exp_infs, true, 1}},
            b);
    const AdamaxArgs a{clr, beta1, one_minus_beta1, beta2, eps, weight_decay, maximize,
                       decay_mode(weight_decay, false)};
    run(b, [&](const Batch& x) { kernels().adamax(x, a); });
}

double sum_squares(py::handle arrays) {
    Batches& b = scratch();
    collect({{"arrays", arrays, false, -1}}, b);
    const Batch b32 = b.batch(DType::kFloat32);
    const Batch b64 = b.batch(DType::kFloat64);
    fusedopt::NoGil nogil;
    // float32 tensors first, then float64: a fixed order whatever the list order.
    return kernels().sum_squares(b32) + kernels().sum_squares(b64);
}

void scale(py::handle arrays, double factor) {
    Batches& b = scratch();
    collect({{"arrays", arrays, true, -1}}, b);
    run(b, [&](const Batch& x) { kernels().scale(x, factor); });
}

void stream(py::handle a, py::handle b_, py::handle c, py::handle d, py::handle e, int reads,
            int writes) {
    if (reads < 1 || reads > 5) throw py::value_error("reads must be in 1..5");
    if (writes < 0 || writes > std::max(1, reads - 1))
        throw py::value_error("writes must be in 0..max(1, reads - 1): a, c, d, e are writable");
    Batches& b = scratch();
    ListArgs args{{"a", a, writes >= 1, -1}};
    if (reads >= 2) args.add({"b", b_, false, -2});
    py::handle rest[3] = {c, d, e};
    for (int k = 0; k + 2 < reads; ++k)
        args.add({k == 0 ? "c" : (k == 1 ? "d" : "e"), rest[k], writes >= k + 2, k});
    collect(args, b);
    run(b, [&](const Batch& x) { kernels().stream(x, reads, writes); });
}

int get_num_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void set_num_threads(int n) {
    if (n < 1) throw py::value_error("n must be >= 1, got " + std::to_string(n));
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "fusedopt compiled kernels (OpenMP); use fusedopt.ops, not this module";
    const char* env = std::getenv("FUSEDOPT_ISA");
    set_isa(env && *env ? std::string(env) : std::string("auto"));

    m.def("sgd", &sgd, py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"),
          py::arg("lr"), py::arg("momentum"), py::arg("one_minus_dampening"),
          py::arg("weight_decay"), py::arg("first_step"), py::arg("nesterov"),
          py::arg("maximize"));
    m.def("adagrad", &adagrad, py::arg("params"), py::arg("grads"), py::arg("state_sums"),
          py::arg("clr"), py::arg("eps"), py::arg("eps_root"), py::arg("weight_decay"),
          py::arg("maximize"));
    m.def("rmsprop", &rmsprop, py::arg("params"), py::arg("grads"), py::arg("square_avgs"),
          py::arg("grad_avgs"), py::arg("momentum_buffers"), py::arg("lr"), py::arg("alpha"),
          py::arg("one_minus_alpha"), py::arg("eps"), py::arg("eps_root"),
          py::arg("weight_decay"), py::arg("momentum"), py::arg("centered"),
          py::arg("maximize"));
    m.def("adam", &adam, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
          py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"), py::arg("lr"), py::arg("beta1"),
          py::arg("one_minus_beta1"), py::arg("beta2"), py::arg("one_minus_beta2"),
          py::arg("bias_correction1"), py::arg("bias_correction2"), py::arg("eps"),
          py::arg("eps_root"), py::arg("weight_decay"), py::arg("decay"),
          py::arg("decoupled"), py::arg("amsgrad"), py::arg("maximize"));
    m.def("adamax", &adamax, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
          py::arg("exp_infs"), py::arg("clr"), py::arg("beta1"), py::arg("one_minus_beta1"),
          py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("maximize"));
    m.def("sum_squares", &sum_squares, py::arg("arrays"),
          "Sum of squares of every element of a list of arrays, float64, deterministic.");
    m.def("scale_", &scale, py::arg("arrays"), py::arg("factor"));
    m.def("stream", &stream, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("d"),
          py::arg("e"), py::arg("reads"), py::arg("writes"),
          "Bandwidth probe: reads `reads` lists elementwise, writes the first `writes`.");
    m.def("isa", []() { return std::string(kernels().name); },
          "The instruction set of the kernels in use ('avx512', 'avx2' or 'generic').");
    m.def("set_isa", &set_isa, py::arg("name"),
          "Select the kernel copy: 'auto', 'avx512', 'avx2' or 'generic' (same bits).");
    m.def("available_isas", &available_isas, "The kernel copies this CPU can run, best first.");
    m.def("cpu_has_avx2", &cpu_has_avx2);
    m.def("get_num_threads", &get_num_threads);
    m.def("set_num_threads", &set_num_threads, py::arg("n"));
    m.attr("reduce_block") = kReduceBlock;
    register_lbfgs(m);
}
