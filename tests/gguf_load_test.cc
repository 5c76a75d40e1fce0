// Running .gguf models: the config from GGUF metadata, weights (F32 equal to the safetensors
// model; ggml blocks through the tile kernel, equal to its reference and to the blocks of the
// source rows, q/k rows back in rotate-half order), the tokenizer from GGUF arrays (ids equal
// to the source folder's on the whole WikiText-2 file, llama.cpp's vocab vectors, byte-level
// vocabularies of synthetic Llama-3 / Qwen / GPT-2 checkpoints), the CLI (ppl, kld, generate on
// a .gguf) and one-line errors for broken files.
#include <gtest/gtest.h>

#include <omp.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "eval/perplexity.h"
#include "formats/ggml_blocks.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "kernels/qgemm.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "test_util.h"
#include "text/gguf_tokenizer.h"
#include "text/tokenizer.h"

namespace qf::model {
namespace {

namespace fs = std::filesystem;
using testing::Bundled;
using testing::Local;
using testing::Q;
using testing::RunCommand;
using testing::Wiki;

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Files shared by the tests of this binary (each test runs in its own process under ctest):
// made once in the build folder, again when the qforge binary is newer.
fs::path Cached(const std::string& name, const std::string& make_args) {
  const fs::path dir = fs::path(QF_BINARY_DIR) / "gguf_load_test_files";
  fs::create_directories(dir);
  const fs::path out = dir / name;
  std::error_code ec;
  if (fs::exists(out, ec) && fs::last_write_time(out, ec) >= fs::last_write_time(Q(), ec))
    return out;
  std::string log;
  const int rc = RunCommand(Q() + " " + make_args + " -o " + out.string() + " -q", &log);
  QF_CHECK(rc == 0, "{}: {}", make_args, log);
  return out;
}
fs::path F32Gguf() { return Cached("l27_f32.gguf", "convert " + Bundled() + " --outtype f32"); }
fs::path Q8Gguf() { return Cached("l27_q8_0.gguf", "quantize " + Bundled() + " --scheme Q8_0"); }
fs::path Q4kmGguf() {
  return Cached("l27_q4_k_m.gguf", "quantize " + Bundled() + " --scheme Q4_K_M");
}

Model MustLoad(const fs::path& p) {
  auto m = Model::Load(p);
  QF_CHECK(m.ok(), "{}", m.error().message());
  return std::move(m).value();
}

std::vector<float> Logits(const Model& m, const std::vector<int32_t>& ids) {
  KVCache kv = m.NewCache(int64_t(ids.size()));
  std::vector<float> out(ids.size() * size_t(m.config().vocab_size));
  const Status st = m.Forward(ids, kv, out.data(), /*all_logits=*/true);
  QF_CHECK(st.ok(), "{}", st.error().message());
  return out;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  QF_CHECK(a.size() == b.size(), "sizes {} {}", a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

std::vector<int32_t> SomeIds(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, int32_t(vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t& t : ids) t = d(rng);
  return ids;
}

nlohmann::json RunJson(const std::string& cmd) {
  std::string log;
  const int rc = RunCommand(cmd + " 2>/dev/null", &log);
  QF_CHECK(rc == 0, "{}: exit {}: {}", cmd, rc, log);
  return nlohmann::json::parse(log);
}

// Perplexity on the first windows of WikiText-2 (callers QF_NEED_SHARED it).
double Ppl(const std::string& model, int windows) {
  return RunJson(Q() + " ppl " + model + " --text " + Wiki() + " --max-windows " +
                 std::to_string(windows) + " --json -q")
      .at("ppl")
      .get<double>();
}

// ---- config and weights of the bundled model -------------------------------------------------

TEST(GgufLoad, ConfigOfTheConvertedBundledModel) {
  auto f = io::GgufFile::Open(F32Gguf());
  ASSERT_TRUE(f.ok()) << f.error().message();
  auto g = GgufModelConfig(*f);
  ASSERT_TRUE(g.ok()) << g.error().message();
  auto h = LoadHfConfig(Bundled());
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(g->family, h->family);
  EXPECT_EQ(g->family->architecture, "LlamaForCausalLM");
  EXPECT_EQ(g->vocab_size, h->vocab_size);
  EXPECT_EQ(g->hidden, h->hidden);
  EXPECT_EQ(g->intermediate, h->intermediate);
  EXPECT_EQ(g->layers, h->layers);
  EXPECT_EQ(g->heads, h->heads);
  EXPECT_EQ(g->kv_heads, h->kv_heads);
  EXPECT_EQ(g->head_dim, h->head_dim);
  EXPECT_EQ(g->max_position, h->max_position);
  EXPECT_EQ(g->rms_eps, double(float(h->rms_eps)));  // stored as f32
  EXPECT_EQ(g->rope_theta, h->rope_theta);
  EXPECT_EQ(g->tie_embeddings, h->tie_embeddings);
  EXPECT_EQ(g->qkv_bias, h->qkv_bias);
  EXPECT_EQ(g->bos_id, h->bos_id);
  EXPECT_EQ(g->eos_id, h->eos_id);
  EXPECT_TRUE(IsGgufFile(F32Gguf()));
  EXPECT_FALSE(IsGgufFile(Bundled()));
  EXPECT_FALSE(IsGgufFile(fs::path(Bundled()) / "config.json"));
}

TEST(GgufLoad, F32LogitsEqualTheSafetensorsModel) {
  const Model hf = MustLoad(Bundled());
  const Model gg = MustLoad(F32Gguf());
  EXPECT_EQ(gg.parameter_count(), hf.parameter_count());
  EXPECT_EQ(gg.embedding(), hf.embedding());
  for (const Layer& L : gg.layers()) {
    EXPECT_EQ(L.q.ggml, nullptr);  // F32 tensors load as fp32 weights
    EXPECT_FALSE(L.q.weight.empty());
  }
  // q/k rows back in rotate-half order: the weights are the safetensors ones exactly.
  EXPECT_EQ(gg.layers()[0].q.weight, hf.layers()[0].q.weight);
  EXPECT_EQ(gg.layers()[3].k.weight, hf.layers()[3].k.weight);
  const auto ref =
      nlohmann::json::parse(ReadFile(fs::path(Bundled()) / "reference/reference.json"));
  for (const auto& prompt : ref.at("prompts")) {
    const auto ids = prompt.at("ids").get<std::vector<int32_t>>();
    EXPECT_LE(MaxAbsDiff(Logits(gg, ids), Logits(hf, ids)), 1e-5);
  }
  const std::vector<int32_t> ids = SomeIds(100, hf.config().vocab_size, 3);
  EXPECT_LE(MaxAbsDiff(Logits(gg, ids), Logits(hf, ids)), 1e-5);
}

// The q rows of a quantized GGUF are the source rows quantized one by one: decoding the
// loaded (unpermuted) blocks gives QuantizeDequantizeGgml of the safetensors rows, exactly.
TEST(GgufLoad, QuantizedRowsAreTheSourceRowsInRotateHalfOrder) {
  const Model hf = MustLoad(Bundled());
  const Model gg = MustLoad(Q4kmGguf());
  size_t checked = 0;
  for (int l : {0, 5}) {
    for (const auto& [name, g, h] :
         {std::tuple{"q", &gg.layers()[l].q, &hf.layers()[l].q},
          std::tuple{"k", &gg.layers()[l].k, &hf.layers()[l].k},
          std::tuple{"v", &gg.layers()[l].v, &hf.layers()[l].v},
          std::tuple{"down", &gg.layers()[l].down, &hf.layers()[l].down}}) {
      SCOPED_TRACE(std::string(name) + " layer " + std::to_string(l));
      ASSERT_NE(g->ggml, nullptr);
      const GgmlTensor& t = *g->ggml;
      std::vector<float> got(static_cast<size_t>(t.rows * t.cols)), want(got.size());
      kernels::DequantizeRows(t, 0, t.rows, got.data());
      ASSERT_TRUE(
          QuantizeDequantizeGgml(*t.type, h->weight.data(), t.rows, t.cols, nullptr, want.data())
              .ok());
      EXPECT_EQ(got, want) << t.type->name;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 8u);
  EXPECT_NE(gg.layers()[0].q.ggml->owner, gg.layers()[0].v.ggml->owner);  // q: an owned copy
}

// ---- kernel ------------------------------------------------------------------------------

// y and ref ([m, n]) agree within MatMulGgmlNT's bound for w and m (testing::GgmlMatMulBound).
// dec: the decoded weights [n, k].
void ExpectWithinMatMulBound(const GgmlTensor& w, const std::vector<float>& y,
                             const std::vector<float>& ref, const std::vector<float>& dec,
                             const std::vector<float>& x, int64_t m, int64_t n, int64_t k) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < n; ++r)
      ASSERT_NEAR(y[size_t(i * n + r)], ref[size_t(i * n + r)],
                  testing::GgmlMatMulBound(w, m, &dec[size_t(r * k)], &x[size_t(i * k)], k) +
                      1e-6 * std::fabs(ref[size_t(i * n + r)]))
          << "token " << i << " row " << r;
}

TEST(GgufLoad, GgmlKernelEqualsReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const char* name : {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                           "Q6_K", "IQ4_NL", "IQ4_XS"}) {
    SCOPED_TRACE(name);
    const GgmlBlockType* bt = FindGgmlBlockType(name);
    ASSERT_NE(bt, nullptr);
    const int64_t n = 150, k = 512;  // rows not a multiple of the 64-row tile
    std::vector<float> w(static_cast<size_t>(n * k)), bias(static_cast<size_t>(n));
    for (float& v : w) v = nd(rng);
    for (float& v : bias) v = nd(rng);
    auto bytes = std::make_shared<std::vector<std::byte>>(*GgmlRowsBytes(*bt, n, k));
    ASSERT_TRUE(QuantizeRowsGgml(*bt, w.data(), n, k, nullptr, bytes->data()).ok());
    GgmlTensor t{bt, n, k, bytes->size() / size_t(n), bytes->data(), bytes};
    for (int64_t m : {1, 3, 70}) {
      std::vector<float> x(static_cast<size_t>(m * k));
      for (float& v : x) v = nd(rng);
      std::vector<float> y(static_cast<size_t>(m * n)), ref(y.size());
      const float* const biases[] = {nullptr, bias.data()};
      std::vector<float> dec(static_cast<size_t>(n * k));
      ASSERT_TRUE(DequantizeRowsGgml(*bt, bytes->data(), n, k, dec.data()).ok());
      for (const float* b : biases) {
        kernels::MatMulGgmlNT(x.data(), t, b, y.data(), m);
        kernels::MatMulGgmlNTRef(x.data(), t, b, ref.data(), m);
        ExpectWithinMatMulBound(t, y, ref, dec, x, m, n, k);
      }
    }
  }
}

TEST(GgufLoad, Q4KmLinearsKernelEqualsReference) {
  const Model gg = MustLoad(Q4kmGguf());
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::map<std::string, int> types;
  auto check = [&](const Linear& lin) {
    ASSERT_NE(lin.ggml, nullptr);
    ++types[std::string(lin.ggml->type->name)];
    // Loaded in the GEMV's compute layout (Q4_K and Q6_K have one; every row count here is a
    // multiple of 16).
    EXPECT_TRUE(lin.ggml->interleaved) << lin.ggml->type->name;
    const int64_t m = 5;
    std::vector<float> x(static_cast<size_t>(m * lin.k));
    for (float& v : x) v = nd(rng);
    std::vector<float> y(static_cast<size_t>(m * lin.n)), ref(y.size());
    lin.Apply(x.data(), y.data(), m);
    kernels::MatMulGgmlNTRef(x.data(), *lin.ggml, lin.bias.empty() ? nullptr : lin.bias.data(),
                             ref.data(), m);
    std::vector<float> dec(static_cast<size_t>(lin.n * lin.k));
    kernels::DequantizeRows(*lin.ggml, 0, lin.n, dec.data());
    ExpectWithinMatMulBound(*lin.ggml, y, ref, dec, x, m, lin.n, lin.k);
  };
  for (const Layer& L : gg.layers())
    for (const LinearId id : kBlockLinears) check(L[id]);
  EXPECT_GE(types["Q4_K"], 1);
  EXPECT_GE(types["Q6_K"], 1);  // Q4_K_M's attn_v / ffn_down rows
  // token_embd is a lookup table: decoded to fp32 once.
  EXPECT_EQ(gg.embedding().size(), size_t(8192 * 512));
}

// ---- CLI ---------------------------------------------------------------------------------

// The printed result line ("PPL = x +/- y  (4 windows of 512, N tokens scored)") is the same.
TEST(GgufLoad, PplOfF32GgufEqualsTheFolder) {
  auto ppl_line = [](const std::string& model) {
    std::string out;
    const int rc = RunCommand(
        Q() + " ppl " + model + " --text " + Local() + " --max-windows 4 -q 2>/dev/null", &out);
    EXPECT_EQ(rc, 0) << out;
    const size_t at = out.find("PPL = ");
    EXPECT_NE(at, std::string::npos) << out;
    return at == std::string::npos ? out : out.substr(at, out.find('\n', at) - at);
  };
  const std::string a = ppl_line(Bundled()), b = ppl_line(F32Gguf().string());
  std::printf("[ ppl ] folder: %s\n[ ppl ] f32 gguf: %s\n", a.c_str(), b.c_str());
  EXPECT_EQ(b, a);
}

TEST(GgufLoad, QuantizedGgufPplCloseToFp) {
  QF_NEED_SHARED("data/wikitext-2/wiki.test.raw");
  const double fp = Ppl(Bundled(), 4);
  const double q8 = Ppl(Q8Gguf().string(), 4);
  const double q4 = Ppl(Q4kmGguf().string(), 4);
  std::printf("[ ppl 4 windows ] fp %.4f  Q8_0 %.4f (%+.3f%%)  Q4_K_M %.4f (%+.3f%%)\n", fp, q8,
              100 * (q8 / fp - 1), q4, 100 * (q4 / fp - 1));
  EXPECT_LT(std::fabs(q8 / fp - 1), 0.005);
  EXPECT_LT(std::fabs(q4 / fp - 1), 0.05);
}

TEST(GgufLoad, KldAndGenerateOnGguf) {
  const nlohmann::json k = RunJson(Q() + " kld " + Bundled() + " " + F32Gguf().string() +
                                   " --text " + Local() + " --max-windows 1 --json -q");
  EXPECT_LT(std::fabs(k.at("kld_mean").get<double>()), 1e-6) << k.dump();
  EXPECT_EQ(k.at("top1_agreement").get<double>(), 1.0);
  const std::string gen = " generate {} -p \"Once upon a time\" -n 12 --temp 0 --json -q";
  const nlohmann::json a = RunJson(Q() + fmt::format(fmt::runtime(gen), Bundled()));
  const nlohmann::json b = RunJson(Q() + fmt::format(fmt::runtime(gen), F32Gguf().string()));
  EXPECT_EQ(a.at("prompt_ids"), b.at("prompt_ids"));
  EXPECT_EQ(a.at("generated_ids"), b.at("generated_ids"));
  EXPECT_EQ(a.at("text"), b.at("text"));
  const nlohmann::json c = RunJson(Q() + fmt::format(fmt::runtime(gen), Q8Gguf().string()));
  EXPECT_EQ(c.at("prompt_ids"), a.at("prompt_ids"));
  EXPECT_EQ(c.at("generated_ids").size(), 12u);
}

void ExpectOneLineError(const std::string& cmd, const std::string& needle) {
  std::string log;
  EXPECT_EQ(RunCommand(cmd, &log), 1) << cmd << "\n" << log;
  EXPECT_EQ(log.rfind("qforge: error: ", 0), 0u) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  EXPECT_NE(log.find(needle), std::string::npos) << "want '" << needle << "' in " << log;
}

TEST(GgufLoad, BrokenFilesAreOneLineErrors) {
  const std::string bytes = ReadFile(Q8Gguf());
  const fs::path dir = testing::TempDir();
  auto write = [&](const std::string& name, const std::string& data) {
    std::ofstream(dir / name, std::ios::binary) << data;
    return (dir / name).string();
  };
  const std::string tail = " --text " + Local() + " --max-windows 1 -q";
  ExpectOneLineError(Q() + " ppl " + write("trunc.gguf", bytes.substr(0, bytes.size() / 2)) + tail,
                     "trunc.gguf");
  ExpectOneLineError(Q() + " ppl " + write("head.gguf", bytes.substr(0, 100)) + tail, "head.gguf");
  ExpectOneLineError(Q() + " ppl " + write("junk.gguf", "not a gguf file at all") + tail,
                     "junk.gguf");
  std::string flipped = bytes;
  flipped[4] = 9;  // version 9
  ExpectOneLineError(Q() + " ppl " + write("version.gguf", flipped) + tail, "version");

  // A valid file of an architecture qforge does not run, and one with a tensor missing.
  io::GgufWriter w;
  ASSERT_TRUE(w.Set("general.architecture", io::GgufValue("gptneox")).ok());
  ASSERT_TRUE(w.Write(dir / "arch.gguf").ok());
  auto m = Model::Load(dir / "arch.gguf");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message().find("'gptneox' is not supported"), std::string::npos)
      << m.error().message();
  auto f = io::GgufFile::Open(F32Gguf());
  ASSERT_TRUE(f.ok());
  io::GgufWriter w2;
  for (const io::GgufKv& kv : f->metadata()) {
    if (kv.key != "general.alignment") {
      ASSERT_TRUE(w2.Set(kv.key, kv.value).ok());
    }
  }
  for (const io::GgufTensorInfo& t : f->tensors()) {
    if (t.name != "blk.2.ffn_up.weight") {
      ASSERT_TRUE(w2.AddTensor(t.name, t.type, t.shape, t.data).ok());
    }
  }
  ASSERT_TRUE(w2.Write(dir / "missing.gguf").ok());
  auto m2 = Model::Load(dir / "missing.gguf");
  ASSERT_FALSE(m2.ok());
  EXPECT_NE(m2.error().message().find("missing tensor 'blk.2.ffn_up.weight'"), std::string::npos)
      << m2.error().message();
}

// ---- tokenizers --------------------------------------------------------------------------

TEST(GgufTokenizer, SentencePieceIdsEqualTheFolderOnWikitext) {
  QF_NEED_SHARED("data/wikitext-2/wiki.test.raw");
  auto sp = text::LoadTokenizer(Bundled());
  auto gg = text::LoadTokenizer(F32Gguf());
  ASSERT_TRUE(sp.ok() && gg.ok()) << (gg.ok() ? "" : gg.error().message());
  EXPECT_EQ((*gg)->kind(), "sentencepiece");
  EXPECT_EQ((*gg)->vocab_size(), (*sp)->vocab_size());
  EXPECT_EQ((*gg)->bos_id(), (*sp)->bos_id());
  EXPECT_EQ((*gg)->eos_id(), (*sp)->eos_id());
  const std::string text = ReadFile(Wiki());
  ASSERT_GT(text.size(), 1000000u);
  const std::vector<int32_t> want = (*sp)->Encode(text, false);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> got = (*gg)->Encode(text, false);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ wikitext ] %zu tokens, GGUF tokenizer %.2f s\n", got.size(), secs);
  ASSERT_EQ(got.size(), want.size());
  size_t first_diff = 0;
  while (first_diff < got.size() && got[first_diff] == want[first_diff]) ++first_diff;
  EXPECT_EQ(first_diff, got.size()) << "first difference at token " << first_diff;

  // Odd inputs: leading/trailing/multiple spaces, control bytes, invalid UTF-8, emoji.
  const std::vector<std::string> odd = {"",
                                        " ",
                                        "  x  ",
                                        "a\tb\n\nc",
                                        "\xff\xfe bad \xc3",
                                        "caf\xc3\xa9 \xf0\x9f\xa6\x99.cpp",
                                        "<s> </s> <unk> <0x41>",
                                        "\xe2\x96\x81"
                                        "already",
                                        std::string("nul\0byte", 8)};
  for (const std::string& s : odd) {
    EXPECT_EQ((*gg)->Encode(s, true), (*sp)->Encode(s, true)) << "'" << s << "'";
    const auto ids = (*sp)->Encode(s, false);
    EXPECT_EQ((*gg)->Decode(ids), (*sp)->Decode(ids)) << "'" << s << "'";
    for (int32_t id : ids) EXPECT_EQ((*gg)->DecodeToken(id), (*sp)->DecodeToken(id)) << id;
  }
  for (int32_t id : {0, 1, 2, 3 + 10, 282, 2251, 8191}) {
    EXPECT_EQ((*gg)->DecodeToken(id), (*sp)->DecodeToken(id)) << id;
  }
}

// llama.cpp's tokenizer vectors through the vocab-only GGUF files it ships.
struct Vectors {
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
};

Vectors ReadVectors(const fs::path& base) {
  Vectors v;
  const std::string raw = ReadFile(base.string() + ".inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      v.texts.push_back(raw.substr(pos));
      break;
    }
    v.texts.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream lines(base.string() + ".out");
  for (std::string line; std::getline(lines, line);) {
    std::istringstream ss(line);
    std::vector<int32_t> ids;
    for (int32_t id; ss >> id;) ids.push_back(id);
    v.ids.push_back(std::move(ids));
  }
  return v;
}

// The copies in ../shared were damaged in storage (non-UTF-8 bytes replaced by U+FFFD, see
// gguf_test.cc): such a file must give a one-line error; an intact one its vectors.
TEST(GgufTokenizer, LlamaCppVocabFiles) {
  QF_NEED_SHARED("data/tokenizers/ggml-vocab");
  const fs::path dir = testing::SharedDir() / "data/tokenizers/ggml-vocab";
  for (const char* name : {"llama-spm", "gpt-2", "phi-3"}) {
    SCOPED_TRACE(name);
    const fs::path base = dir / (std::string("ggml-vocab-") + name + ".gguf");
    auto tok = text::LoadTokenizer(base);
    if (!tok.ok() && ReadFile(base).find("\xEF\xBF\xBD") != std::string::npos) {
      EXPECT_EQ(tok.error().message().find('\n'), std::string::npos);
      EXPECT_NE(tok.error().message().find("truncated"), std::string::npos)
          << tok.error().message();
      continue;
    }
    ASSERT_TRUE(tok.ok()) << tok.error().message();
    if (!fs::exists(base.string() + ".inp")) continue;
    const Vectors v = ReadVectors(base);
    ASSERT_EQ(v.texts.size(), v.ids.size());
    ASSERT_GE(v.texts.size(), 40u);
    for (size_t i = 0; i < v.texts.size(); ++i) {
      const std::vector<int32_t> got = (*tok)->Encode(v.texts[i], false);
      EXPECT_EQ(got, v.ids[i]) << "#" << i << " '" << v.texts[i] << "'";
      EXPECT_EQ((*tok)->Decode(got), v.texts[i]) << "#" << i;
    }
  }
}

// A tiny Hugging Face checkpoint with a real tokenizer (as in gguf_test.cc), converted to an
// F32 GGUF m.gguf beside it: NAME.tokenizer.model (SentencePiece) or NAME.tokenizer.json.
struct Synthetic {
  std::string arch;
  int64_t vocab, hidden = 16, inter = 24, heads = 4, kv_heads = 2, head_dim = 4;
  bool bias = false, qk_norm = false, tied = false, llama3_rope = false;
  std::string tokenizer;  // NAME of the files under shared/data/tokenizers
};

fs::path WriteSynthetic(const Synthetic& s, const std::string& name) {
  const fs::path dir = testing::TempDir() / name;
  fs::create_directories(dir);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"model.embed_tokens.weight", {s.vocab, s.hidden}}, {"model.norm.weight", {s.hidden}}};
  if (!s.tied) shapes.push_back({"lm_head.weight", {s.vocab, s.hidden}});
  const int64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (auto& [n, sh] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
             {"input_layernorm.weight", {s.hidden}},
             {"post_attention_layernorm.weight", {s.hidden}},
             {"self_attn.q_proj.weight", {q, s.hidden}},
             {"self_attn.k_proj.weight", {kv, s.hidden}},
             {"self_attn.v_proj.weight", {kv, s.hidden}},
             {"self_attn.o_proj.weight", {s.hidden, q}},
             {"mlp.gate_proj.weight", {s.inter, s.hidden}},
             {"mlp.up_proj.weight", {s.inter, s.hidden}},
             {"mlp.down_proj.weight", {s.hidden, s.inter}}})
      shapes.push_back({p + n, sh});
    if (s.bias) {
      shapes.push_back({p + "self_attn.q_proj.bias", {q}});
      shapes.push_back({p + "self_attn.k_proj.bias", {kv}});
      shapes.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    if (s.qk_norm) {
      shapes.push_back({p + "self_attn.q_norm.weight", {s.head_dim}});
      shapes.push_back({p + "self_attn.k_norm.weight", {s.head_dim}});
    }
  }
  std::vector<std::vector<float>> data;
  std::vector<io::TensorToWrite> tensors;
  data.reserve(shapes.size());
  for (const auto& [n, sh] : shapes) {
    int64_t numel = 1;
    for (int64_t d : sh) numel *= d;
    std::vector<float> v(static_cast<size_t>(numel));
    for (float& x : v) x = nd(rng);
    data.push_back(std::move(v));
    tensors.push_back({n, DType::kF32, sh, std::as_bytes(std::span(data.back()))});
  }
  EXPECT_TRUE(io::WriteSafetensors(dir / "model.safetensors", tensors).ok());
  nlohmann::json cfg = {{"architectures", {s.arch}},
                        {"vocab_size", s.vocab},
                        {"hidden_size", s.hidden},
                        {"intermediate_size", s.inter},
                        {"num_hidden_layers", 2},
                        {"num_attention_heads", s.heads},
                        {"num_key_value_heads", s.kv_heads},
                        {"head_dim", s.head_dim},
                        {"max_position_embeddings", 4096},
                        {"rms_norm_eps", 1e-6},
                        {"rope_theta", 1000000.0},
                        {"tie_word_embeddings", s.tied}};
  if (s.llama3_rope)
    cfg["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", 8.0},
                           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 512}};
  std::ofstream(dir / "config.json") << cfg.dump(2);
  const fs::path tok = testing::SharedDir() / "data/tokenizers";
  if (fs::exists(tok / (s.tokenizer + ".tokenizer.model"))) {
    fs::copy_file(tok / (s.tokenizer + ".tokenizer.model"), dir / "tokenizer.model",
                  fs::copy_options::overwrite_existing);
  } else {
    fs::copy_file(tok / (s.tokenizer + ".tokenizer.json"), dir / "tokenizer.json",
                  fs::copy_options::overwrite_existing);
  }
  if (fs::exists(tok / (s.tokenizer + ".tokenizer_config.json"))) {
    fs::copy_file(tok / (s.tokenizer + ".tokenizer_config.json"), dir / "tokenizer_config.json",
                  fs::copy_options::overwrite_existing);
  }
  std::string log;
  EXPECT_EQ(RunCommand(Q() + " convert " + dir.string() + " -o " + (dir / "m.gguf").string() +
                           " --outtype f32 -q",
                       &log),
            0)
      << log;
  return dir;
}

struct SyntheticCase {
  Synthetic s;
  const char* vectors;  // ggml-vocab-NAME.gguf.inp
};

class GgufSynthetic : public ::testing::TestWithParam<SyntheticCase> {};

TEST_P(GgufSynthetic, TokenizerAndLogitsMatchTheFolder) {
  QF_NEED_SHARED("data/tokenizers");
  QF_NEED_SHARED("data/tokenizers/ggml-vocab");
  QF_NEED_SHARED("data/wikitext-2/wiki.test.raw");
  const SyntheticCase& c = GetParam();
  const fs::path dir = WriteSynthetic(c.s, c.s.arch + "_" + c.s.tokenizer);
  auto hf_tok = text::LoadTokenizer(dir);
  auto gg_tok = text::LoadTokenizer(dir / "m.gguf");
  ASSERT_TRUE(hf_tok.ok()) << hf_tok.error().message();
  ASSERT_TRUE(gg_tok.ok()) << gg_tok.error().message();
  EXPECT_EQ((*gg_tok)->kind(), (*hf_tok)->kind());
  EXPECT_EQ((*gg_tok)->eos_id(), (*hf_tok)->eos_id());
  EXPECT_EQ((*gg_tok)->bos_id(), (*hf_tok)->bos_id());
  {  // llama.cpp scoring adds BOS for the GGUF exactly when it does for the folder
    auto from_gguf = eval::LlamaCppAddsBos(dir / "m.gguf", **gg_tok);
    auto from_dir = eval::LlamaCppAddsBos(dir, **hf_tok);
    ASSERT_TRUE(from_gguf.ok()) << from_gguf.error().message();
    ASSERT_TRUE(from_dir.ok()) << from_dir.error().message();
    EXPECT_EQ(*from_gguf, *from_dir) << c.vectors;
  }
  const Vectors v = ReadVectors(testing::SharedDir() / "data/tokenizers/ggml-vocab" /
                                (std::string("ggml-vocab-") + c.vectors + ".gguf"));
  ASSERT_GE(v.texts.size(), 40u);
  std::vector<std::string> texts = v.texts;
  texts.push_back(ReadFile(Wiki()).substr(0, 300000));
  texts.push_back("<|im_start|>user\nhi <|endoftext|><|begin_of_text|> x<think>y</think>");
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto want = (*hf_tok)->Encode(texts[i], false);
    const auto got = (*gg_tok)->Encode(texts[i], false);
    EXPECT_EQ(got, want) << c.vectors << " #" << i << " '" << texts[i].substr(0, 80) << "'";
    if (i < v.ids.size()) {  // llama.cpp's own ids
      EXPECT_EQ(got, v.ids[i]) << c.vectors << " #" << i;
    }
    EXPECT_EQ((*gg_tok)->Decode(got), (*hf_tok)->Decode(want)) << i;
  }

  const Model hf = MustLoad(dir);
  const Model gg = MustLoad(dir / "m.gguf");
  EXPECT_EQ(gg.config().family->gguf_arch, hf.config().family->gguf_arch);  // Mistral: llama
  EXPECT_EQ(gg.config().qkv_bias, hf.config().qkv_bias);
  EXPECT_EQ(gg.config().tie_embeddings, hf.config().tie_embeddings);
  EXPECT_EQ(gg.config().head_dim, hf.config().head_dim);
  if (c.s.llama3_rope) {
    EXPECT_EQ(gg.config().rope_scaling.type, RopeScaling::Type::kFactors);
  }
  // Positions past the Llama-3 original context (512), where the scaling matters.
  const std::vector<int32_t> ids = SomeIds(700, hf.config().vocab_size, 4);
  const std::vector<float> a = Logits(hf, ids), b = Logits(gg, ids);
  double scale = 0;
  for (float x : a) scale = std::max(scale, double(std::fabs(x)));
  EXPECT_LE(MaxAbsDiff(a, b), 1e-5 * std::max(1.0, scale));
}

INSTANTIATE_TEST_SUITE_P(
    Families, GgufSynthetic,
    ::testing::Values(
        SyntheticCase{{.arch = "LlamaForCausalLM", .vocab = 32000, .tokenizer = "llama2"},
                      "llama-spm"},
        SyntheticCase{{.arch = "LlamaForCausalLM",
                       .vocab = 128256,
                       .head_dim = 8,
                       .llama3_rope = true,
                       .tokenizer = "llama3"},
                      "llama-bpe"},
        SyntheticCase{{.arch = "Qwen2ForCausalLM",
                       .vocab = 151936,
                       .bias = true,
                       .tied = true,
                       .tokenizer = "qwen3"},
                      "qwen2"},
        SyntheticCase{{.arch = "Qwen3ForCausalLM",
                       .vocab = 151936,
                       .head_dim = 8,
                       .qk_norm = true,
                       .tokenizer = "qwen3"},
                      "qwen2"},
        SyntheticCase{{.arch = "MistralForCausalLM", .vocab = 50257, .tokenizer = "gpt2"},
                      "gpt-2"}),
    [](const auto& info) {
      std::string n = info.param.s.arch + "_" + info.param.s.tokenizer;
      return n;
    });

}  // namespace
}  // namespace qf::model
