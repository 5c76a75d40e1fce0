// `qforge compare`: one table for a base and its quantized models (size, bits/weight, PPL, KLD,
// top-1, speed, memory), written as Markdown, JSON and gnuplot plots; and its rendering.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "eval/compare.h"
#include "test_util.h"

namespace qf {
namespace {

namespace fs = std::filesystem;
using qf::testing::Bundled;
using qf::testing::Q;
using qf::testing::RunCommand;

std::string Quantized(const std::string& scheme) {
  const fs::path out = qf::testing::TempDir() / ("compare_" + scheme);
  if (!fs::exists(out / "config.json")) {
    std::string log;
    EXPECT_EQ(RunCommand(Q() + " quantize " + Bundled() + " -o " + out.string() + " --scheme " +
                             scheme + " -q",
                         &log),
              0)
        << log;
  }
  return out.string();
}

TEST(CompareCli, OneRowPerModelWithQualitySpeedAndFiles) {
  const std::string w4 = Quantized("W4A16"), w8 = Quantized("W8A8");
  const std::string prefix = (qf::testing::TempDir() / "cmp").string();
  std::string log;
  ASSERT_EQ(RunCommand(Q() + " compare " + Bundled() + " " + w4 + " " + w8 + " --text " +
                           qf::testing::LocalText().string() +
                           " --ctx 128 --max-windows 3 -p 16 -n 4 -r 1 -q -o " + prefix + " --json",
                       &log),
            0)
      << log;
  const auto j = nlohmann::json::parse(log.substr(log.find('{')));
  const auto& rows = j["models"];
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_TRUE(rows[0]["base"].get<bool>());
  EXPECT_EQ(rows[0]["kld_mean"].get<double>(), 0.0);
  EXPECT_EQ(rows[0]["top1_agreement"].get<double>(), 1.0);
  EXPECT_NEAR(rows[0]["bits_per_weight"].get<double>(), 16.0, 0.1);  // the bf16 checkpoint
  for (int i = 1; i < 3; ++i) {
    EXPECT_GT(rows[i]["kld_mean"].get<double>(), 0.0) << i;
    EXPECT_GT(rows[i]["top1_agreement"].get<double>(), 0.5) << i;
    EXPECT_LE(rows[i]["top1_agreement"].get<double>(), 1.0) << i;
    EXPECT_GT(rows[i]["ppl"].get<double>(), 1.0) << i;
    EXPECT_GT(rows[i]["decode_tokens_per_second"].get<double>(), 0.0) << i;
    EXPECT_GT(rows[i]["memory_bytes"].get<int64_t>(), 0) << i;
  }
  // W4A16 below 8 bits per weight (codes, scales, and the fp32-kept embeddings), W8A8 above it.
  EXPECT_LT(rows[1]["bits_per_weight"].get<double>(), rows[2]["bits_per_weight"].get<double>());
  EXPECT_LT(rows[2]["bits_per_weight"].get<double>(), 16.0);
  EXPECT_TRUE(fs::exists(prefix + ".md"));
  EXPECT_TRUE(fs::exists(prefix + ".json"));
  std::ifstream md(prefix + ".md");
  const std::string table((std::istreambuf_iterator<char>(md)), std::istreambuf_iterator<char>());
  EXPECT_NE(table.find("| compare_W4A16 |"), std::string::npos) << table;
  if (std::system("command -v gnuplot > /dev/null 2>&1") == 0) {
    EXPECT_TRUE(fs::exists(prefix + "-quality.svg"));
    EXPECT_TRUE(fs::exists(prefix + "-speed.svg"));
  }
  EXPECT_FALSE(fs::exists(prefix + "-quality.svg.tmp"));
}

TEST(CompareCli, BadInputIsOneLineAndWritesNothing) {
  const std::string prefix = (qf::testing::TempDir() / "cmp_bad").string();
  std::string log;
  // One model only: a flag error (2).
  EXPECT_EQ(
      RunCommand(Q() + " compare " + Bundled() + " --text " + qf::testing::LocalText().string(),
                 &log),
      2)
      << log;
  // A missing model: a file error (1), no output files.
  EXPECT_EQ(RunCommand(Q() + " compare " + Bundled() + " /nonexistent/model --text " +
                           qf::testing::LocalText().string() + " -p 0 -n 0 -q -o " + prefix,
                       &log),
            1)
      << log;
  EXPECT_NE(log.find("qforge: error:"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(prefix + ".md"));
  EXPECT_FALSE(fs::exists(prefix + ".json"));
}

TEST(CompareRender, MarkdownAndGnuplotCarryEveryRow) {
  std::vector<eval::CompareRow> rows(2);
  rows[0].label = "base";
  rows[0].ppl.ppl = 10.0;
  rows[0].bits_per_weight = 16;
  rows[1].label = "q\"4";
  rows[1].ppl.ppl = 10.5;
  rows[1].kld_mean = 0.01;
  rows[1].top1 = 0.9;
  rows[1].bits_per_weight = 4.5;
  rows[1].benched = true;
  rows[1].bench.prefill.mean = 100;
  rows[1].bench.decode.mean = 20;
  const std::string md = eval::CompareMarkdown(rows);
  EXPECT_NE(md.find("| base |"), std::string::npos) << md;
  EXPECT_NE(md.find("+0.500 (+5.00%)"), std::string::npos) << md;
  EXPECT_NE(md.find("90.00%"), std::string::npos) << md;
  EXPECT_NE(md.find("| – | – | – |"), std::string::npos) << md;  // the base was not benched
  const std::string gp = eval::CompareGnuplot(rows, "a.svg", "b.svg");
  EXPECT_NE(gp.find("set output \"a.svg\""), std::string::npos);
  EXPECT_NE(gp.find("set output \"b.svg\""), std::string::npos);
  EXPECT_NE(gp.find("4.5000 0.01 \"q\\\"4\""), std::string::npos) << gp;
  EXPECT_EQ(eval::CompareJson(rows).size(), 2u);
}

}  // namespace
}  // namespace qf
