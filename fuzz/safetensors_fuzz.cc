// libFuzzer target for ParseSafetensors: arbitrary bytes must give ok or an Error, never a crash.
// Contract checked on success: every tensor's span lies inside the input, matches numel x dtype
// size, and the spans are sorted and tile the data buffer; violations trap.
#include <cstddef>
#include <cstdint>
#include <span>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const auto result = qf::io::ParseSafetensors(bytes, "fuzz.safetensors");
  if (!result.ok()) {
    if (result.error().message().empty()) __builtin_trap();
    return 0;
  }
  const std::byte* end = bytes.data() + bytes.size();
  const std::byte* next = nullptr;  // where the previous tensor ended
  uint8_t sink = 0;
  for (const auto& t : result->tensors) {
    // Reading every byte lets ASan catch a span that escapes the input.
    for (std::byte b : t.data) sink ^= uint8_t(b);
    const uint64_t expected = uint64_t(t.numel()) * qf::Info(t.dtype).bytes;
    if (expected != t.data.size()) __builtin_trap();
    if (t.data.data() < bytes.data() || t.data.data() + t.data.size() > end) __builtin_trap();
    if (next != nullptr && t.data.data() != next) __builtin_trap();
    next = t.data.data() + t.data.size();
  }
  if (next != nullptr && next != end) __builtin_trap();
  volatile uint8_t keep = sink;
  (void)keep;
  return 0;
}
