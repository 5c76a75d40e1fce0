// libFuzzer entry point of one harness (QF_FUZZ_TARGET names it; CMake builds one binary per
// row of fuzz::Targets()). A contract violation prints what broke and traps.
#include <cstdio>

#include "harness.h"

#ifndef QF_FUZZ_TARGET
#error "QF_FUZZ_TARGET must name a harness"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const qf::fuzz::Target* target = qf::fuzz::FindTarget(QF_FUZZ_TARGET);
  if (target == nullptr) __builtin_trap();
  const std::string violated = target->run({data, size}).violated;
  if (!violated.empty()) {
    std::fprintf(stderr, "%s_fuzz: contract violated: %s\n", QF_FUZZ_TARGET, violated.c_str());
    __builtin_trap();
  }
  return 0;
}
