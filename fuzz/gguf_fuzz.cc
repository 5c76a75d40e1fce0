// libFuzzer target for ParseGguf: arbitrary bytes must give ok or an Error, never a crash.
// Contract checked on success: every tensor's span lies inside the input, starts at the data
// section + its offset (a multiple of the alignment), has the size its type and shape imply,
// and no two non-empty tensors share a byte; violations trap. Values are printed once (ToString)
// so that every metadata accessor runs on fuzzed contents too.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const auto result = qf::io::ParseGguf(bytes, "fuzz.gguf");
  if (!result.ok()) {
    if (result.error().message().empty()) __builtin_trap();
    return 0;
  }
  const qf::io::GgufContents& c = *result;
  size_t sink = 0;
  for (const auto& kv : c.metadata) sink += kv.value.ToString().size() + kv.value.array_size();
  const std::byte* begin = bytes.data();
  const std::byte* end = bytes.data() + bytes.size();
  std::vector<std::pair<const std::byte*, const std::byte*>> spans;
  for (const auto& t : c.tensors) {
    const auto expected = qf::io::GgmlTensorBytes(t.type, t.shape);
    if (!expected.ok() || *expected != t.data.size()) __builtin_trap();
    if (t.offset % c.alignment != 0) __builtin_trap();
    if (t.data.size() > 0) {
      if (t.data.data() < begin || t.data.data() + t.data.size() > end) __builtin_trap();
      if (t.data.data() != begin + c.data_offset + t.offset) __builtin_trap();
      // Reading the first and last byte lets ASan catch a span that escapes the input.
      sink += size_t(t.data.front()) + size_t(t.data.back());
      spans.emplace_back(t.data.data(), t.data.data() + t.data.size());
    }
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second) __builtin_trap();
  }
  volatile size_t keep = sink;
  (void)keep;
  return 0;
}
