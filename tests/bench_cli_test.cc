// `qforge bench`: runs, reports positive rates, counts the weight bytes each decoded token
// streams, and rejects runs beyond the context. (Speed itself is measured by scripts, not here.)
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace qf {
namespace {

using qf::testing::Bundled;
using qf::testing::Q;
using qf::testing::RunCommand;

TEST(BenchCli, ReportsRatesAndWeightBytes) {
  std::string log;
  ASSERT_EQ(RunCommand(Q() + " bench " + Bundled() + " -p 16 -n 4 -r 1 --json", &log), 0) << log;
  const auto j = nlohmann::json::parse(log.substr(log.find('{')));
  EXPECT_GT(j["prefill_tokens_per_second"].get<double>(), 0.0);
  EXPECT_GT(j["decode_tokens_per_second"].get<double>(), 0.0);
  EXPECT_GT(j["bandwidth_bytes_per_second"].get<double>(), 1e8);
  // The prefill kernel of each quantized kind on this CPU, by name.
  const std::string kernels = j["prefill_kernels"].get<std::string>();
  EXPECT_EQ(kernels.rfind("W8A8 ", 0), 0u) << kernels;
  for (const char* kind : {", FP8 ", ", W4A16/W8A16 ", ", ggml "})
    EXPECT_NE(kernels.find(kind), std::string::npos) << kernels;
  // llama-27m in fp32: lm_head [8192, 512] + 6 x (q, o [512, 512]; k, v [256, 512];
  // gate, up [1536, 512]; down [512, 1536]), 4 bytes each.
  const int64_t weights = 8192 * 512 + 6 * (2 * 512 * 512 + 2 * 256 * 512 + 3 * 1536 * 512);
  EXPECT_EQ(j["weight_bytes_per_token"].get<int64_t>(), 4 * weights);
  // A W4A16 folder streams codes (two per byte in the kernels' layout) + fp32 scales instead
  // (symmetric: no zeros), and its lm_head as the file stores it (bf16).
  const std::string q4 = (qf::testing::TempDir() / "bench_w4").string();
  ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " -o " + q4 + " --scheme W4A16 -q", &log),
            0)
      << log;
  ASSERT_EQ(RunCommand(Q() + " bench " + q4 + " -p 0 -n 2 -r 1 --json", &log), 0) << log;
  const auto k = nlohmann::json::parse(log.substr(log.find('{')));
  const int64_t linears = weights - 8192 * 512;
  EXPECT_EQ(k["weight_bytes_per_token"].get<int64_t>(),
            2 * 8192 * 512 + linears / 2 + linears / 128 * 4);
  EXPECT_EQ(k["prefill_tokens_per_second"].get<double>(), 0.0);
}

TEST(BenchCli, RejectsRunsBeyondTheContext) {
  std::string log;
  EXPECT_EQ(RunCommand(Q() + " bench " + Bundled() + " -p 4096 -n 1", &log), 1) << log;
  EXPECT_NE(log.find("beyond the model's context"), std::string::npos) << log;
  EXPECT_NE(RunCommand(Q() + " bench /nonexistent", &log), 0);
}

}  // namespace
}  // namespace qf
