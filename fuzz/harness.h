// Fuzz harnesses: one function per parser of untrusted input, shared by the libFuzzer targets
// (fuzz/fuzz_main.cc, one binary per harness) and by tests/fuzz_replay_test.cc, which replays
// the seed corpus and every kept crasher in the ordinary test suite.
// Contract of every harness: arbitrary bytes give an ok result or a one-line Error, never a
// crash, hang or sanitizer report; on ok, the result's own invariants hold (spans inside the
// input, ids inside the vocabulary, values finite, re-encoding round-trips). A harness returns
// whether the parser accepted the input and, if a contract was broken, what (the fuzz target
// then traps; the replay test fails).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace qf::fuzz {

struct Outcome {
  Outcome(const char* v = "") : accepted(true), violated(v) {}  // accepted; "" = contract held
  Outcome(std::string v) : accepted(true), violated(std::move(v)) {}
  static Outcome Rejected(std::string violated = "") {
    Outcome o(std::move(violated));
    o.accepted = false;
    return o;
  }
  bool accepted;         // the parser returned ok (else an Error)
  std::string violated;  // empty when every contract held
};

using Harness = Outcome (*)(std::span<const uint8_t> input);

struct Target {
  std::string_view name;  // the libFuzzer binary is <name>_fuzz; seeds in fuzz/corpus/<name>/
  Harness run;
  std::string_view parses;  // what untrusted input the harness feeds, for the README table
};

std::span<const Target> Targets();
const Target* FindTarget(std::string_view name);

// Marker between config.json and model.safetensors in checkpoint inputs.
inline constexpr std::string_view kCheckpointSplit = "\n--qforge-fuzz-safetensors--\n";

}  // namespace qf::fuzz
