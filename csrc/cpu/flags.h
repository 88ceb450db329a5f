// csrc/cpu/flags.h -- a flag known at run time as a template argument (loops.h, lbfgs.cpp).
#pragma once

#include <type_traits>

namespace fusedopt {
namespace cpu {

// f(std::integral_constant<bool, flag>), and what it returns: both copies of f's body compiled,
// each with the test out of its loops.
template <typename F>
inline decltype(auto) with_bool(bool flag, F&& f) {
    return flag ? f(std::true_type{}) : f(std::false_type{});
}

}  // namespace cpu
}  // namespace fusedopt
