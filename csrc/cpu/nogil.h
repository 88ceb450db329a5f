// csrc/cpu/nogil.h -- the GIL release around every kernel call of fusedopt._core.
//
// At interpreter exit, Python (3.11 to 3.13) ends a daemon thread that asks for the GIL back with
// pthread_exit(), whose forced unwinding runs the destructor of the guard: pybind11's
// gil_scoped_release has a noexcept destructor, so the process aborts ("terminate called without
// an active exception") when a daemon thread is inside a kernel at exit. This guard's destructor
// lets the unwinding pass (pybind11's dispatcher rethrows abi::__forced_unwind).
#pragma once
#include <Python.h>

namespace fusedopt {

class NoGil {
  public:
    NoGil() : state_(PyEval_SaveThread()) {}
    ~NoGil() noexcept(false) { PyEval_RestoreThread(state_); }
    NoGil(const NoGil&) = delete;
    NoGil& operator=(const NoGil&) = delete;

  private:
    PyThreadState* state_;
};

}  // namespace fusedopt
