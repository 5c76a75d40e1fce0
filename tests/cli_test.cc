// End-to-end tests of the qforge CLI: outputs on the bundled model and one-line errors with a
// non-zero exit for bad input (missing/corrupt/truncated files, NaN weights, wrong shapes,
// short texts, bad flags). Only the full WikiText-2 figure needs ../shared; the rest run on the
// bundled model (copied when damaged) and a local text.
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
using qf::testing::Local;
using qf::testing::Q;
using qf::testing::Wiki;

// The bundled model in a scratch folder the test may damage: config and tokenizer copied,
// model.safetensors copied when the test writes into it, else linked.
fs::path ScratchModel(const std::string& name, bool copy_weights = false) {
  const fs::path dir = qf::testing::TempDir() / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(qf::testing::BundledModel())) {
    if (!e.is_regular_file()) continue;
    const fs::path to = dir / e.path().filename();
    if (e.path().filename() == "model.safetensors" && !copy_weights) {
      fs::create_symlink(fs::absolute(e.path()), to);
    } else {
      fs::copy_file(e.path(), to);
      fs::permissions(to, fs::perms::owner_read | fs::perms::owner_write);
    }
  }
  return dir;
}

// Rewrites `count` values of tensor `name` of dir/model.safetensors (in its own dtype) from
// flat index `first`: each value v becomes f(v).
void EditTensor(const fs::path& dir, const std::string& name, int64_t first, int64_t count,
                float (*f)(float)) {
  MappedFile orig = std::move(MappedFile::Open(dir / "model.safetensors").value());
  auto header = io::ParseSafetensors(orig.bytes(), "model.safetensors");
  ASSERT_TRUE(header.ok());
  const io::TensorInfo* t = nullptr;
  for (const auto& ti : header->tensors)
    if (ti.name == name) t = &ti;
  ASSERT_NE(t, nullptr) << name;
  if (count < 0) count = t->numel() - first;
  const size_t elem = Info(t->dtype).bytes;
  std::vector<float> w(static_cast<size_t>(count));
  ASSERT_TRUE(ConvertToF32(t->dtype, t->data.data() + first * elem, w.size(), w.data()));
  for (float& v : w) v = f(v);
  std::vector<std::byte> bytes(w.size() * elem);
  ASSERT_TRUE(ConvertFromF32(t->dtype, w.data(), w.size(), bytes.data()));
  const auto offset = t->data.data() - orig.bytes().data() + first * int64_t(elem);
  std::fstream out(dir / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  out.seekp(offset);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
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
  ASSERT_EQ(RunCommand(Q() + " ppl " + Bundled() + " --text " + Local() +
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
  QF_NEED_SHARED("data/wikitext-2/wiki.test.raw");
  std::ifstream in(qf::testing::BundledModel() / "reference/reference.json");
  const auto ref = nlohmann::json::parse(in)["wikitext2_test"];
  std::string out;
  ASSERT_EQ(RunCommand(Q() + " ppl " + Bundled() + " --text " + Wiki() + " --ctx 512 --json", &out),
            0)
      << out;
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
  ASSERT_EQ(RunCommand(Q() + " kld " + Bundled() + " " + Bundled() + " --text " + Local() +
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
  const fs::path dir = ScratchModel("kld_perturbed", /*copy_weights=*/true);
  ASSERT_NO_FATAL_FAILURE(EditTensor(dir, "model.layers.2.mlp.down_proj.weight", 0, -1,
                                     [](float v) { return v * 0.5f; }));
  std::string out;
  ASSERT_EQ(RunCommand(Q() + " kld " + Bundled() + " " + dir.string() + " --text " + Local() +
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
  const std::string cmd =
      Q() + " generate " + Bundled() + " -p 'The city council' -n 16 --temp 0 --json";
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
    EXPECT_EQ(RunCommand(Q() + " generate " + Bundled() +
                             " -p 'Once upon a time' -n 24 --temp 1.0 --json --seed " +
                             std::to_string(seed),
                         &out),
              0);
    return nlohmann::json::parse(out.substr(out.find('{')))["generated_ids"];
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(CliErrors, MissingModel) {
  ExpectOneLineError(Q() + " ppl /nonexistent/model --text " + Local(), "/nonexistent/model");
}

TEST(CliErrors, MissingText) {
  ExpectOneLineError(Q() + " ppl " + Bundled() + " --text /nonexistent.txt", "/nonexistent.txt");
}

TEST(CliErrors, TextShorterThanOneWindow) {
  const fs::path p = qf::testing::TempDir() / "short.txt";
  WriteFile(p, "Just a few words.");
  ExpectOneLineError(Q() + " ppl " + Bundled() + " --text " + p.string(),
                     "shorter than one window");
}

TEST(CliErrors, CtxLongerThanModel) {
  ExpectOneLineError(Q() + " ppl " + Bundled() + " --text " + Local() + " --ctx 4096",
                     "exceeds the model's context length 512");
}

TEST(CliErrors, BadFlags) {
  ExpectOneLineError(Q() + " ppl " + Bundled() + " --text " + Local() + " --bogus", "--bogus");
  ExpectOneLineError(Q() + " ppl " + Bundled() + " --text " + Local() + " --ctx abc", "abc");
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
  cfg.replace(cfg.find("\"intermediate_size\": 1536"), 25, "\"intermediate_size\": 1540");
  WriteFile(dir / "config.json", cfg);
  ExpectOneLineError(
      Q() + " generate " + dir.string() + " -p hi -n 2",
      "model.layers.0.mlp.gate_proj.weight' has shape [1536, 512], expected [1540, 512]");
}

TEST(CliErrors, NanWeight) {
  const fs::path dir = ScratchModel("nan_weight", /*copy_weights=*/true);
  ASSERT_NO_FATAL_FAILURE(
      EditTensor(dir, "model.layers.1.self_attn.v_proj.weight", 10, 1,
                 [](float) { return std::numeric_limits<float>::quiet_NaN(); }));
  ExpectOneLineError(
      Q() + " ppl " + dir.string() + " --text " + Local(),
      "'model.layers.1.self_attn.v_proj.weight' has a non-finite value (nan) at flat index 10");
}

TEST(CliErrors, TruncatedSafetensors) {
  const fs::path dir = ScratchModel("truncated", /*copy_weights=*/true);
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
