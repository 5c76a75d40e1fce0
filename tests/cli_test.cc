// End-to-end tests of the qforge CLI: outputs on the bundled model and one-line errors with a
// non-zero exit for bad input (missing/corrupt/truncated files, NaN weights, wrong shapes,
// short texts, bad flags).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "test_util.h"

namespace qf {
namespace {

namespace fs = std::filesystem;
using qf::testing::RunCommand;

using qf::testing::Bundled;
using qf::testing::Q;
using qf::testing::Wiki;
fs::path Stories() { return qf::testing::SharedDir() / "models/stories260k"; }

// Copies stories260k (fp32, small) to a scratch folder the test may damage.
fs::path ScratchModel(const std::string& name) {
  const fs::path dir = qf::testing::TempDir() / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(Stories()))
    if (e.is_regular_file()) fs::copy_file(e.path(), dir / e.path().filename());
  fs::permissions(dir / "model.safetensors", fs::perms::owner_read | fs::perms::owner_write);
  fs::permissions(dir / "config.json", fs::perms::owner_read | fs::perms::owner_write);
  return dir;
}

void WriteFile(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

// Expects a failing command whose output is a single "qforge: error:" line containing `want`.
void ExpectOneLineError(const std::string& cmd, const std::string& want) {
  std::string out;
  const int rc = RunCommand(cmd, &out);
  EXPECT_NE(rc, 0) << cmd << "\n" << out;
  EXPECT_LT(rc, 128) << "crashed: " << cmd << "\n" << out;
  EXPECT_NE(out.find(want), std::string::npos) << cmd << "\n" << out;
  EXPECT_EQ(out.find("qforge: error:"), 0u) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

TEST(Cli, InfoJsonDescribesBundledModel) {
  std::string out;
  ASSERT_EQ(RunCommand(Q() + " info " + Bundled() + " --json", &out), 0) << out;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["architecture"], "LlamaForCausalLM");
  EXPECT_EQ(j["parameters"], 27269632);
  EXPECT_EQ(j["kv_heads"], 4);
  EXPECT_EQ(j["tensors"].size(), 57u);
  EXPECT_EQ(j["bytes"], 2 * 27269632);
}

TEST(Cli, PplJsonHasFieldsAndMatchesWindowRule) {
  std::string out;
  ASSERT_EQ(RunCommand(Q() + " ppl " + Bundled() + " --text " + Wiki() +
                           " --max-windows 2 --ctx 128 --json -t 2",
                       &out),
            0)
      << out;
  const auto j = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_EQ(j["windows"], 2);
  EXPECT_EQ(j["scored_tokens"], 2 * 127);
  EXPECT_GT(j["ppl"].get<double>(), 10.0);
  EXPECT_LT(j["ppl"].get<double>(), 2000.0);
  EXPECT_GT(j["tokens_per_second"].get<double>(), 0.0);
}

// The headline figure: the whole WikiText-2 test file at ctx 512 gives PyTorch's exact fp32
// perplexity (reference.json) within 0.05%. About 2-3 minutes on 2 cores.
TEST(Cli, PplFullWikitextMatchesReference) {
  std::ifstream in(qf::testing::BundledModel() / "reference/reference.json");
  const auto ref = nlohmann::json::parse(in)["wikitext2_test"];
  std::string out;
  ASSERT_EQ(RunCommand(Q() + " ppl " + Bundled() + " --text " + Wiki() + " --ctx 512 --json", &out), 0) << out;
  const auto j = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_EQ(j["windows"], ref["windows"]);
  EXPECT_EQ(j["scored_tokens"], ref["scored_tokens"]);
  const double want = ref["ppl"].get<double>();
  EXPECT_NEAR(j["ppl"].get<double>(), want, want * 5e-4) << out;
  std::printf("ppl %.4f (reference %.3f), %.0f tokens/s\n", j["ppl"].get<double>(), want,
              j["tokens_per_second"].get<double>());
}

TEST(Cli, KldOfAModelWithItselfIsZero) {
  std::string out;
  ASSERT_EQ(RunCommand(Q() + " kld " + Bundled() + " " + Bundled() + " --text " + Wiki() +
                           " --max-windows 1 --ctx 256 --json",
                       &out),
            0)
      << out;
  const auto j = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_EQ(j["kld_mean"].get<double>(), 0.0);
  EXPECT_EQ(j["kld_p99"].get<double>(), 0.0);
  EXPECT_EQ(j["top1_agreement"].get<double>(), 1.0);
  EXPECT_EQ(j["base_ppl"]["ppl"], j["other_ppl"]["ppl"]);
}

TEST(Cli, KldOfDifferentModelsIsPositive) {
  // The same checkpoint with one layer's down_proj halved: a real, small perturbation.
  const fs::path dir = ScratchModel("kld_perturbed");
  MappedFile orig = std::move(MappedFile::Open(Stories() / "model.safetensors").value());
  const io::TensorInfo* t = nullptr;
  auto header = io::ParseSafetensors(orig.bytes(), "stories260k");
  ASSERT_TRUE(header.ok());
  for (const auto& ti : header->tensors)
    if (ti.name == "model.layers.2.mlp.down_proj.weight") t = &ti;
  ASSERT_NE(t, nullptr);
  std::fstream f(dir / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  const auto offset = t->data.data() - orig.bytes().data();
  std::vector<float> w(size_t(t->numel()));
  std::memcpy(w.data(), t->data.data(), t->data.size());
  for (auto& v : w) v *= 0.5f;
  f.seekp(offset);
  f.write(reinterpret_cast<const char*>(w.data()), std::streamsize(t->data.size()));
  f.close();
  const std::string text = (qf::testing::SharedDir() / "data/tinystories/validation_head.txt").string();
  std::string out;
  ASSERT_EQ(RunCommand(Q() + " kld " + Stories().string() + " " + dir.string() + " --text " + text +
                           " --max-windows 4 --ctx 256 --json",
                       &out),
            0)
      << out;
  const auto j = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_GT(j["kld_mean"].get<double>(), 1e-4);
  EXPECT_LT(j["top1_agreement"].get<double>(), 1.0);
  EXPECT_GE(j["kld_p99"].get<double>(), j["kld_median"].get<double>());
}

TEST(Cli, GreedyGenerationIsDeterministic) {
  std::string a, b;
  const std::string cmd = Q() + " generate " + Bundled() + " -p 'The city council' -n 16 --temp 0 --json";
  ASSERT_EQ(RunCommand(cmd, &a), 0) << a;
  ASSERT_EQ(RunCommand(cmd + " -t 1", &b), 0) << b;
  const auto ja = nlohmann::json::parse(a.substr(a.find('{')));
  const auto jb = nlohmann::json::parse(b.substr(b.find('{')));
  EXPECT_EQ(ja["generated_ids"], jb["generated_ids"]);
  EXPECT_EQ(ja["generated_ids"].size(), 16u);
  EXPECT_EQ(ja["prompt_ids"][0], 1);  // BOS
}

TEST(Cli, SeededSamplingIsReproducibleAndSeedMatters) {
  auto run = [](int seed) {
    std::string out;
    EXPECT_EQ(RunCommand(Q() + " generate " + Bundled() + " -p 'Once upon a time' -n 24 --temp 1.0 --json --seed " +
                             std::to_string(seed),
                         &out),
              0);
    return nlohmann::json::parse(out.substr(out.find('{')))["generated_ids"];
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(CliErrors, MissingModel) {
  ExpectOneLineError(Q() + " ppl /nonexistent/model --text " + Wiki(), "/nonexistent/model");
}

TEST(CliErrors, MissingText) {
  ExpectOneLineError(Q() + " ppl " + Bundled() + " --text /nonexistent.txt", "/nonexistent.txt");
}

TEST(CliErrors, TextShorterThanOneWindow) {
  const fs::path p = qf::testing::TempDir() / "short.txt";
  WriteFile(p, "Just a few words.");
  ExpectOneLineError(Q() + " ppl " + Bundled() + " --text " + p.string(), "shorter than one window");
}

TEST(CliErrors, CtxLongerThanModel) {
  ExpectOneLineError(Q() + " ppl " + Bundled() + " --text " + Wiki() + " --ctx 4096",
                     "exceeds the model's context length 512");
}

TEST(CliErrors, BadFlags) {
  ExpectOneLineError(Q() + " ppl " + Bundled() + " --text " + Wiki() + " --bogus", "--bogus");
  ExpectOneLineError(Q() + " ppl " + Bundled() + " --text " + Wiki() + " --ctx abc", "abc");
  ExpectOneLineError(Q() + " generate " + Bundled() + " -p hi --top-p 2", "top-p");
  ExpectOneLineError(Q() + " frobnicate", "unknown command 'frobnicate'");
}

TEST(CliErrors, UnsupportedArchitecture) {
  const fs::path dir = ScratchModel("bad_arch");
  std::string cfg = std::move(ReadTextFile(dir / "config.json").value());
  cfg.replace(cfg.find("LlamaForCausalLM"), 16, "FalconForCausalLM");
  WriteFile(dir / "config.json", cfg);
  ExpectOneLineError(Q() + " info " + dir.string(), "unsupported architecture 'FalconForCausalLM'");
}

TEST(CliErrors, MismatchedShapes) {
  const fs::path dir = ScratchModel("bad_shape");
  std::string cfg = std::move(ReadTextFile(dir / "config.json").value());
  cfg.replace(cfg.find("\"intermediate_size\": 172"), 24, "\"intermediate_size\": 176");
  WriteFile(dir / "config.json", cfg);
  ExpectOneLineError(Q() + " generate " + dir.string() + " -p hi -n 2",
                     "model.layers.0.mlp.gate_proj.weight' has shape [172, 64], expected [176, 64]");
}

TEST(CliErrors, NanWeight) {
  const fs::path dir = ScratchModel("nan_weight");
  MappedFile orig = std::move(MappedFile::Open(Stories() / "model.safetensors").value());
  const io::TensorInfo* t = nullptr;
  auto header = io::ParseSafetensors(orig.bytes(), "stories260k");
  ASSERT_TRUE(header.ok());
  for (const auto& ti : header->tensors)
    if (ti.name == "model.layers.1.self_attn.v_proj.weight") t = &ti;
  ASSERT_NE(t, nullptr);
  std::fstream f(dir / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(t->data.data() - orig.bytes().data() + 4 * 10);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  f.write(reinterpret_cast<const char*>(&nan), 4);
  f.close();
  ExpectOneLineError(Q() + " ppl " + dir.string() + " --text " + Wiki(),
                     "'model.layers.1.self_attn.v_proj.weight' has a non-finite value (nan) at flat index 10");
}

TEST(CliErrors, TruncatedSafetensors) {
  const fs::path dir = ScratchModel("truncated");
  fs::resize_file(dir / "model.safetensors", fs::file_size(dir / "model.safetensors") / 2);
  std::string out;
  const int rc = RunCommand(Q() + " info " + dir.string(), &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("model.safetensors"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

TEST(CliErrors, CorruptConfig) {
  const fs::path dir = ScratchModel("corrupt_config");
  WriteFile(dir / "config.json", "{\"architectures\": [\"LlamaForCausalLM\"");
  ExpectOneLineError(Q() + " info " + dir.string(), "config.json: not valid JSON");
}

}  // namespace
}  // namespace qf
