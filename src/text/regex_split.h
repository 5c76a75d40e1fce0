// PCRE2-backed pattern (UTF + Unicode properties, JIT when available) that lists the matches of
// a pre-tokenizer split in a text; subjects may hold invalid UTF-8 (it never matches there).
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"

namespace qf::text {

class SplitPattern {
 public:
  // `literal`: the pattern is a plain string (HF Split with {"String": ...}).
  static Result<std::unique_ptr<SplitPattern>> Compile(std::string_view pattern, bool literal);
  ~SplitPattern();
  SplitPattern(const SplitPattern&) = delete;
  SplitPattern& operator=(const SplitPattern&) = delete;

  // Byte ranges [begin, end) of the successive non-empty, non-overlapping matches, leftmost
  // first, each search resuming where the previous match ended. Thread-safe.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

 private:
  SplitPattern() = default;
  void* code_ = nullptr;  // pcre2_code_8*, kept out of the header
};

}  // namespace qf::text
