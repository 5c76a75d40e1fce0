// Scoring compatible with llama.cpp and saved base logits:
// - `--scoring llama.cpp` against a straightforward reimplementation of llama-perplexity's
//   loop (BOS once at the start of the text and first in every chunk, chunks = tokens / ctx,
//   the second half of each chunk scored, its ± formula) on the bundled model, one full Forward
//   per chunk, log-softmax in double;
// - base-logits records decode to log-probabilities within ε = R/65535 of the exact ones;
// - `kld --save-base-logits` then `kld --base-logits` reproduces the direct two-model run: base
//   PPL, other PPL and top-1 agreement exactly, mean/max KLD within the format's bound
//   (e^ε − 1)(D + √(2D)) + (e^ε − 1)² (base_logits.h); a model against its own saved logits
//   gives KLD ≤ (e^ε − 1)² per token;
// - files for another ctx / scoring / text / more windows, truncated, corrupted or foreign
//   files are refused with one line; bad flag combinations exit with 2.
// None of it depends on the text: it runs on a local one (test_util's LocalText), without
// ../shared.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/mmap.h"
#include "eval/base_logits.h"
#include "eval/perplexity.h"
#include "model/model.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace qf {
namespace {

namespace fs = std::filesystem;
using qf::testing::Bundled;
using qf::testing::Local;
using qf::testing::Q;
using qf::testing::RunCommand;

const double kEps = double(eval::kBaseLogitsRange) / 65535.0;

// The format's bound on |KLD(file) − KLD(direct)| for a (mean) divergence D, plus the floor's
// share V·e^−R·(|log ratio| ≤ 64) and float rounding of the stored per-token values.
double KldBound(double d) {
  const double a = std::expm1(kEps);
  return a * (d + std::sqrt(2 * d)) + a * a + 8192 * std::exp(-32.0) * 64 + 1e-7 * d + 1e-9;
}

std::string ReadPrefix(const fs::path& p, size_t bytes) {
  std::ifstream in(p, std::ios::binary);
  std::string s(bytes, '\0');
  in.read(s.data(), std::streamsize(bytes));
  s.resize(size_t(in.gcount()));
  return s;
}

struct RefPpl {
  double ppl = 0, stderr_ = 0;
  int64_t scored = 0;
};

// llama-perplexity's loop, written out: `stream` already holds BOS first; bos < 0: the vocabulary
// adds none and chunks are fed as they are.
RefPpl ReferenceLlamaCpp(const model::Model& m, const std::vector<int32_t>& stream, int32_t bos,
                         int64_t ctx, int64_t max_chunks) {
  const int64_t V = m.config().vocab_size;
  const int64_t chunks = std::min<int64_t>(int64_t(stream.size()) / ctx, max_chunks);
  const int64_t first = ctx / 2;
  double nll = 0, nll2 = 0;
  int64_t count = 0;
  std::vector<float> logits(static_cast<size_t>(ctx * V));
  for (int64_t c = 0; c < chunks; ++c) {
    std::vector<int32_t> w(stream.begin() + c * ctx, stream.begin() + (c + 1) * ctx);
    if (bos >= 0) w[0] = bos;
    model::KVCache cache = m.NewCache(ctx);
    EXPECT_TRUE(m.Forward(w, cache, logits.data(), true).ok());
    for (int64_t i = first; i < ctx - 1; ++i) {
      const float* row = logits.data() + i * V;
      double mx = row[0];
      for (int64_t j = 1; j < V; ++j) mx = std::max(mx, double(row[j]));
      double s = 0;
      for (int64_t j = 0; j < V; ++j) s += std::exp(double(row[j]) - mx);
      const double v = mx + std::log(s) - double(row[w[size_t(i + 1)]]);
      nll += v;
      nll2 += v * v;
      ++count;
    }
  }
  RefPpl r;
  r.scored = count;
  const double mean = nll / double(count), var = nll2 / double(count) - mean * mean;
  r.ppl = std::exp(mean);
  r.stderr_ = r.ppl * std::sqrt(var / double(count - 1));
  return r;
}

class EvalScoring : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = model::Model::Load(Bundled());
    ASSERT_TRUE(m.ok()) << m.error().message();
    model_ = new model::Model(std::move(*m));
    auto t = text::LoadTokenizer(Bundled());
    ASSERT_TRUE(t.ok()) << t.error().message();
    tok_ = t->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tok_;
  }
  static model::Model* model_;
  static text::Tokenizer* tok_;
};
model::Model* EvalScoring::model_ = nullptr;
text::Tokenizer* EvalScoring::tok_ = nullptr;

TEST_F(EvalScoring, LlamaCppTokenStreamAndBos) {
  auto add = eval::LlamaCppAddsBos(Bundled(), *tok_);
  ASSERT_TRUE(add.ok()) << add.error().message();
  EXPECT_TRUE(*add);  // tokenizer_config.json: add_bos_token true
  const std::string text = "Hello world.\nSecond line\n";
  const auto q = eval::TokenizeForScoring(*tok_, text, eval::Scoring::kQforge, true);
  EXPECT_EQ(q, tok_->Encode(text, false));  // qforge: never BOS, text as it is
  const auto l = eval::TokenizeForScoring(*tok_, text, eval::Scoring::kLlamaCpp, true);
  std::vector<int32_t> want = {tok_->bos_id()};
  for (int32_t id : tok_->Encode(text.substr(0, text.size() - 1), false)) want.push_back(id);
  EXPECT_EQ(l, want);  // BOS once, one trailing '\n' dropped (llama.cpp's -f)

  eval::WindowOptions opt;
  opt.scoring = eval::Scoring::kLlamaCpp;
  opt.ctx = 512;
  EXPECT_EQ(eval::FirstScored(opt), 256);
  EXPECT_EQ(eval::ScoredPerWindow(opt), 255);
  opt.ctx = 65;
  EXPECT_EQ(eval::FirstScored(opt), 32);
  EXPECT_EQ(eval::ScoredPerWindow(opt), 32);
  // chunks = tokens / ctx, and llama.cpp's 2·ctx minimum.
  opt.ctx = 64;
  auto n = eval::CountWindows(200, opt, 512);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 3);
  auto short_text = eval::CountWindows(127, opt, 512);
  ASSERT_FALSE(short_text.ok());
  EXPECT_NE(short_text.error().message().find("at least 2·ctx = 128"), std::string::npos);
}

TEST_F(EvalScoring, LlamaCppPerplexityMatchesReimplementation) {
  const std::string text = ReadPrefix(Local(), 40000);
  std::vector<int32_t> stream = {tok_->bos_id()};
  for (int32_t id : tok_->Encode(text, false)) stream.push_back(id);
  for (int64_t ctx : {64, 65}) {
    eval::WindowOptions opt;
    opt.ctx = ctx;
    opt.max_windows = 3;
    opt.scoring = eval::Scoring::kLlamaCpp;
    opt.bos_id = tok_->bos_id();
    auto r = eval::Perplexity(*model_, stream, opt);
    ASSERT_TRUE(r.ok()) << r.error().message();
    const RefPpl ref = ReferenceLlamaCpp(*model_, stream, tok_->bos_id(), ctx, 3);
    EXPECT_EQ(r->scored_tokens, ref.scored);
    EXPECT_EQ(r->scored_tokens, 3 * (ctx - 1 - ctx / 2));
    EXPECT_EQ(r->windows, 3);
    // The library runs the context half and the scored half as two Forward calls: fp32
    // rounding of the logits differs at ~1e-6.
    EXPECT_NEAR(r->ppl, ref.ppl, ref.ppl * 2e-5) << "ctx " << ctx;
    EXPECT_NEAR(r->ppl_stderr, ref.stderr_, ref.stderr_ * 1e-4) << "ctx " << ctx;
    std::printf("ctx %lld: llama.cpp scoring PPL %.6f (reference %.6f) +/- %.6f\n", (long long)ctx,
                r->ppl, ref.ppl, r->ppl_stderr);
  }
  // Without BOS (a vocabulary that adds none) the chunks are fed as they are.
  eval::WindowOptions opt;
  opt.ctx = 64;
  opt.max_windows = 2;
  opt.scoring = eval::Scoring::kLlamaCpp;
  std::vector<int32_t> plain(stream.begin() + 1, stream.end());
  auto r = eval::Perplexity(*model_, plain, opt);
  ASSERT_TRUE(r.ok());
  const RefPpl ref = ReferenceLlamaCpp(*model_, plain, -1, 64, 2);
  EXPECT_NEAR(r->ppl, ref.ppl, ref.ppl * 2e-5);
}

TEST_F(EvalScoring, CliLlamaCppScoringMatchesReimplementation) {
  std::string out;
  ASSERT_EQ(RunCommand(Q() + " ppl " + Bundled() + " --text " + Local() +
                           " --ctx 64 --max-windows 3 --scoring llama.cpp --json -t 2",
                       &out),
            0)
      << out;
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["scoring"], "llama.cpp");
  EXPECT_EQ(j["add_bos"], true);
  EXPECT_EQ(j["scored_tokens"], 3 * 31);
  // The first chunks of the whole file are those of a long enough prefix.
  std::vector<int32_t> stream = {tok_->bos_id()};
  for (int32_t id : tok_->Encode(ReadPrefix(Local(), 40000), false)) stream.push_back(id);
  const RefPpl ref = ReferenceLlamaCpp(*model_, stream, tok_->bos_id(), 64, 3);
  EXPECT_NEAR(j["ppl"].get<double>(), ref.ppl, ref.ppl * 2e-5) << out;
  EXPECT_NEAR(j["ppl_stderr"].get<double>(), ref.stderr_, ref.stderr_ * 1e-4) << out;
}

TEST(BaseLogitsRecord, DecodesWithinStep) {
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd(0.0f, 6.0f);
  const int64_t V = 3000;
  std::vector<float> logits(V);
  for (float& x : logits) x = nd(rng);
  logits[1234] = 30.0f;  // a peaked distribution with a tail far below the floor
  logits[17] = -60.0f;
  double mx = -1e30;
  for (float x : logits) mx = std::max(mx, double(x));
  double s = 0;
  for (float x : logits) s += std::exp(double(x) - mx);
  const double lse = mx + std::log(s);
  std::vector<std::byte> rec(eval::BaseLogitsRecordBytes(V));
  eval::EncodeBaseRecord(logits.data(), V, 1.25, rec.data());
  std::vector<double> logp(V), p(V);
  const eval::DecodedRecord d = eval::DecodeBaseRecord(rec.data(), V, logp.data(), p.data());
  EXPECT_EQ(d.argmax, 1234);
  EXPECT_EQ(d.nll, 1.25);
  double psum = 0, worst = 0;
  for (int64_t j = 0; j < V; ++j) {
    psum += p[j];
    if (logits[j] >= mx - eval::kBaseLogitsRange)
      worst = std::max(worst, std::fabs(logp[j] - (double(logits[j]) - lse)));
    else  // floored: stored at the floor, above the true value but below e^-R of the top
      EXPECT_TRUE(logp[j] >= double(logits[j]) - lse - kEps &&
                  logp[j] <= mx - eval::kBaseLogitsRange - lse + 2 * kEps)
          << j;
  }
  EXPECT_NEAR(psum, 1.0, 1e-12);
  EXPECT_LE(worst, kEps);
  std::printf("worst |log p' - log p| = %.3g (bound %.3g)\n", worst, kEps);
}

// The CLI round trip: direct run + save, then from the file, on the bundled model and its RTN
// W4A16 quantization, with llama.cpp scoring at ctx 128 over 4 chunks.
class BaseLogitsCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(qf::testing::TempDir() / "base_logits");
    fs::create_directories(*dir_);
    std::string out;
    ASSERT_EQ(RunCommand(Q() + " quantize " + Bundled() + " -o " + Quant() +
                             " --scheme W4A16 --quiet -t 2",
                         &out),
              0)
        << out;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string Quant() { return (*dir_ / "w4a16").string(); }
  static std::string File(const std::string& name) { return (*dir_ / name).string(); }
  static std::string Flags() {
    return " --text " + Local() + " --ctx 128 --max-windows 4 --scoring llama.cpp -t 2 --json";
  }
  static nlohmann::json Run(const std::string& args) {
    std::string out;
    const int rc = RunCommand(Q() + " kld " + args, &out);
    EXPECT_EQ(rc, 0) << args << "\n" << out;
    return rc == 0 ? nlohmann::json::parse(out) : nlohmann::json::object();
  }
  static fs::path* dir_;
};
fs::path* BaseLogitsCli::dir_ = nullptr;

void ExpectOneLineError(const std::string& cmd, const std::string& want, int code = 1) {
  std::string out;
  const int rc = RunCommand(cmd, &out);
  EXPECT_EQ(rc, code) << cmd << "\n" << out;
  EXPECT_NE(out.find(want), std::string::npos) << cmd << "\n" << out;
  EXPECT_EQ(out.find("qforge: error:"), 0u) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

TEST_F(BaseLogitsCli, SavedLogitsReproduceDirectRun) {
  const std::string f = File("base.qfbl");
  const auto direct = Run(Bundled() + " " + Quant() + Flags() + " --save-base-logits " + f);
  const auto saved = Run("--base-logits " + f + " " + Quant() + Flags());
  ASSERT_TRUE(direct.contains("kld_mean") && saved.contains("kld_mean"));
  EXPECT_EQ(fs::file_size(f), uintmax_t(96 + 4 * 63 * (24 + 2 * 8192) + 8 * 4));
  // Exact: the base NLLs and top-1 ids are stored as computed; OTHER runs the same windows.
  EXPECT_EQ(saved["base_ppl"]["ppl"], direct["base_ppl"]["ppl"]);
  EXPECT_EQ(saved["base_ppl"]["ppl_stderr"], direct["base_ppl"]["ppl_stderr"]);
  EXPECT_EQ(saved["other_ppl"]["ppl"], direct["other_ppl"]["ppl"]);
  EXPECT_EQ(saved["top1_agreement"], direct["top1_agreement"]);
  EXPECT_EQ(saved["base_ppl"]["scored_tokens"], 4 * 63);
  // KLD: within the stored format's error bound (base_logits.h).
  const double d = direct["kld_mean"].get<double>(), s = saved["kld_mean"].get<double>();
  EXPECT_GT(d, 1e-3);  // W4A16 differs measurably
  EXPECT_LE(std::fabs(s - d), KldBound(d)) << "direct " << d << " saved " << s;
  const double dmax = direct["kld_max"].get<double>();
  EXPECT_LE(std::fabs(saved["kld_max"].get<double>() - dmax), KldBound(dmax));
  std::printf("KLD mean direct %.9f, from file %.9f (|diff| %.3g, bound %.3g); top-1 %.4f\n", d, s,
              std::fabs(s - d), KldBound(d), direct["top1_agreement"].get<double>());

  // BASE alone writes the same bytes as the two-model run.
  const std::string f2 = File("base_only.qfbl");
  const auto only = Run(Bundled() + Flags() + " --save-base-logits " + f2);
  EXPECT_EQ(only["base_ppl"]["ppl"], direct["base_ppl"]["ppl"]);
  auto a = ReadTextFile(f), b = ReadTextFile(f2);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(*a == *b) << "save-only and two-model files differ";

  // The base model against its own saved logits: only the renormalised rounding remains.
  const auto self = Run("--base-logits " + f + " " + Bundled() + Flags());
  EXPECT_LE(self["kld_max"].get<double>(), std::pow(std::expm1(kEps), 2) + 1e-9);
  EXPECT_EQ(self["top1_agreement"], 1.0);
  EXPECT_EQ(self["other_ppl"]["ppl"], self["base_ppl"]["ppl"]);

  // Fewer windows than saved are fine (the first ones).
  const auto fewer = Run("--base-logits " + f + " " + Quant() + " --text " + Local() +
                         " --ctx 128 --max-windows 2 --scoring llama.cpp -t 2 --json");
  EXPECT_EQ(fewer["base_ppl"]["scored_tokens"], 2 * 63);
}

TEST_F(BaseLogitsCli, MismatchedCorruptAndTruncatedFilesAreRefused) {
  const std::string f = File("ref.qfbl");
  Run(Bundled() + Flags() + " --save-base-logits " + f);
  ASSERT_TRUE(fs::exists(f));
  for (const auto& e : fs::directory_iterator(*dir_))  // temporaries renamed or removed
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  const std::string use = Q() + " kld --base-logits ";
  const std::string rest = " --max-windows 4 --scoring llama.cpp -t 2";
  ExpectOneLineError(use + f + " " + Quant() + " --text " + Local() + " --ctx 64" + rest,
                     "saved with --ctx 128, not 64");
  ExpectOneLineError(
      use + f + " " + Quant() + " --text " + Local() + " --ctx 128 --max-windows 4 -t 2",
      "saved with --scoring llama.cpp, not qforge");
  ExpectOneLineError(use + f + " " + Quant() + " --text " + Local() + " --ctx 128" +
                         " --max-windows 5 --scoring llama.cpp -t 2",
                     "holds 4 windows, 5 needed");
  const std::string other_text = File("other.txt");
  { std::ofstream(other_text, std::ios::binary) << ReadPrefix(Local(), 30000); }
  ExpectOneLineError(use + f + " " + Quant() + " --text " + other_text + " --ctx 128" + rest,
                     "saved for another text or tokenizer");

  const std::string bytes = *ReadTextFile(f);
  const std::string trunc = File("trunc.qfbl");
  { std::ofstream(trunc, std::ios::binary) << bytes.substr(0, bytes.size() - 100); }
  ExpectOneLineError(use + trunc + " " + Quant() + " --text " + Local() + " --ctx 128" + rest,
                     "truncated or damaged");
  const std::string corrupt = File("corrupt.qfbl");
  {
    std::string c = bytes;
    c[96 + 2 * 63 * (24 + 2 * 8192) + 5000] ^= 0x10;  // inside window 2
    std::ofstream(corrupt, std::ios::binary) << c;
  }
  ExpectOneLineError(use + corrupt + " " + Quant() + " --text " + Local() + " --ctx 128" + rest,
                     "corrupt data in window 2");
  const std::string header = File("header.qfbl");
  {
    std::string c = bytes;
    c[24] ^= 0x01;  // ctx field: the header checksum catches it
    std::ofstream(header, std::ios::binary) << c;
  }
  ExpectOneLineError(use + header + " " + Quant() + " --text " + Local() + rest,
                     "corrupt base-logits header");
  ExpectOneLineError(use + Local() + " " + Quant() + " --text " + Local() + rest,
                     "not a qforge base-logits file");
  ExpectOneLineError(use + File("missing.qfbl") + " " + Quant() + " --text " + Local() + rest,
                     "no such base-logits file");

  // Flag combinations.
  ExpectOneLineError(use + f + " " + Bundled() + " " + Quant() + " --text " + Local(),
                     "give only OTHER", 2);
  ExpectOneLineError(Q() + " kld " + Bundled() + " --text " + Local(), "kld needs BASE and OTHER",
                     2);
  ExpectOneLineError(use + f + " " + Quant() + " --save-base-logits x --text " + Local(),
                     "exclude each other", 2);
}

// Library level, qforge scoring: the same agreement, and a same-length different token stream
// is refused by the token hash.
TEST_F(EvalScoring, SavedLogitsQforgeScoringAndTokenHash) {
  const fs::path dir = qf::testing::TempDir() / "base_logits_lib";
  fs::create_directories(dir);
  std::vector<int32_t> tokens = tok_->Encode(ReadPrefix(Local(), 20000), false);
  eval::WindowOptions opt;
  opt.ctx = 64;
  opt.max_windows = 3;
  const fs::path f = dir / "q.qfbl";
  auto saved = eval::SaveBaseLogits(*model_, tokens, opt, f);
  ASSERT_TRUE(saved.ok()) << saved.error().message();
  EXPECT_EQ(saved->scored_tokens, 3 * 63);
  auto reader = eval::BaseLogitsReader::Open(f);
  ASSERT_TRUE(reader.ok()) << reader.error().message();
  auto self = eval::KlDivergence(*reader, *model_, tokens, opt);
  ASSERT_TRUE(self.ok()) << self.error().message();
  EXPECT_EQ(self->base.ppl, saved->ppl);
  EXPECT_EQ(self->other.ppl, saved->ppl);
  EXPECT_EQ(self->top1_agreement, 1.0);
  EXPECT_LE(self->kld_max, std::pow(std::expm1(kEps), 2) + 1e-9);

  std::vector<int32_t> changed = tokens;
  changed[10] = changed[10] == 5 ? 6 : 5;
  auto bad = eval::KlDivergence(*reader, *model_, changed, opt);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("different tokens"), std::string::npos)
      << bad.error().message();
  opt.scoring = eval::Scoring::kLlamaCpp;
  auto mode = eval::KlDivergence(*reader, *model_, tokens, opt);
  ASSERT_FALSE(mode.ok());
  EXPECT_NE(mode.error().message().find("saved with --scoring qforge, not llama.cpp"),
            std::string::npos)
      << mode.error().message();
}

}  // namespace
}  // namespace qf
