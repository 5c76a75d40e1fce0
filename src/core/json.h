// Strict integer reads from nlohmann::json for parsers of untrusted files.
// Contract: JsonInt<T>(v, what) returns v's value when v is a JSON integer that fits T, else
// throws nlohmann's type_error naming `what` and the value (the parsers already turn those into
// one-line Errors). nlohmann's own get<int>() would cast a float or an out-of-range integer,
// which for floats is undefined behaviour (found by the config and tokenizer_json fuzzers).
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string_view>
#include <type_traits>

namespace qf {

template <class T>
T JsonInt(const nlohmann::json& v, std::string_view what) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
  constexpr auto lo = std::numeric_limits<T>::min();
  constexpr auto hi = std::numeric_limits<T>::max();
  bool fits = false;
  if (v.is_number_unsigned()) {
    fits = v.get<uint64_t>() <= uint64_t(hi);
  } else if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    fits = i >= 0 ? uint64_t(i) <= uint64_t(hi) : std::is_signed_v<T> && i >= int64_t(lo);
  }
  if (!fits)
    throw nlohmann::json::type_error::create(
        302, fmt::format("{} must be an integer in [{}, {}], got {}", what, lo, hi, v.dump()), &v);
  return v.is_number_unsigned() ? T(v.get<uint64_t>()) : T(v.get<int64_t>());
}

}  // namespace qf
