// Error helpers: std::invalid_argument becomes ValueError in Python (pybind11).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace mce {

template <typename... Parts>
[[noreturn]] void fail_invalid(const Parts&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw std::invalid_argument(message.str());
}

template <typename... Parts>
void require(bool condition, const Parts&... parts) {
  if (!condition) fail_invalid(parts...);
}

}  // namespace mce
