// Every supported family on small random checkpoints written here (F32/BF16/F16, single and
// sharded files): qforge's forward pass against an independent double-precision reference
// written from the Hugging Face modeling code (q/k/v bias, q/k RMSNorm, sliding window,
// Llama-3 RoPE scaling, tied embeddings, GQA).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numbers>
#include <random>

#include "core/mmap.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "kernels/ops.h"
#include "formats/activation.h"
#include "pipeline/quantize_model.h"
#include "model/model.h"
#include "test_util.h"

namespace qf::model {
namespace {

namespace fs = std::filesystem;
using Vec = std::vector<double>;

struct Spec {
  std::string arch;
  int64_t vocab = 40, hidden = 24, inter = 36, layers = 2, heads = 4, kv_heads = 2, head_dim = 6;
  bool bias = false, qk_norm = false, tied = false, llama3_rope = false;
  int64_t window = 0;
  DType dtype = DType::kF32;
  bool sharded = false;
};

struct Weights {
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> t;
  const std::vector<float>& operator()(const std::string& n) const { return t.at(n).second; }
};

uint16_t ToHalfBits(float f, DType dt) {
  if (dt == DType::kBF16) return uint16_t(BitsFromF32(f) >> 16);  // exact: values pre-rounded
  // f16 of a value that Representable() made exact: no rounding needed.
  const uint32_t b = BitsFromF32(f);
  const uint32_t sign = (b >> 16) & 0x8000;
  const int exp = int((b >> 23) & 0xff) - 127 + 15;
  if ((b & 0x7fffffff) == 0) return uint16_t(sign);
  return uint16_t(sign | (uint32_t(exp) << 10) | ((b >> 13) & 0x3ff));
}

// Rounds to what the storage dtype can hold, so the reference sees the same weights:
// bf16 by truncation; f16 to multiples of 2^-8 below 4 in magnitude (exact in f16).
float Representable(float v, DType dt) {
  if (dt == DType::kBF16) return BF16ToF32(uint16_t(BitsFromF32(v) >> 16));
  if (dt == DType::kF16)
    return std::ldexp(std::round(std::ldexp(std::clamp(v, -3.9f, 3.9f), 8)), -8);
  return v;
}

fs::path WriteModel(const Spec& s, const std::string& name, Weights* w) {
  std::mt19937_64 rng(std::hash<std::string>{}(name));
  std::normal_distribution<float> nd(0.0f, 0.3f);
  auto add = [&](const std::string& n, std::vector<int64_t> shape, float center = 0.0f) {
    int64_t numel = 1;
    for (auto d : shape) numel *= d;
    std::vector<float> v(static_cast<size_t>(numel));
    for (auto& x : v) x = Representable(center + nd(rng), s.dtype);
    w->t[n] = {shape, v};
  };
  const int64_t qd = s.heads * s.head_dim, kvd = s.kv_heads * s.head_dim;
  add("model.embed_tokens.weight", {s.vocab, s.hidden});
  add("model.norm.weight", {s.hidden}, 1.0f);
  if (!s.tied) add("lm_head.weight", {s.vocab, s.hidden});
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {s.hidden}, 1.0f);
    add(p + "post_attention_layernorm.weight", {s.hidden}, 1.0f);
    add(p + "self_attn.q_proj.weight", {qd, s.hidden});
    add(p + "self_attn.k_proj.weight", {kvd, s.hidden});
    add(p + "self_attn.v_proj.weight", {kvd, s.hidden});
    add(p + "self_attn.o_proj.weight", {s.hidden, qd});
    if (s.bias) {
      add(p + "self_attn.q_proj.bias", {qd});
      add(p + "self_attn.k_proj.bias", {kvd});
      add(p + "self_attn.v_proj.bias", {kvd});
    }
    if (s.qk_norm) {
      add(p + "self_attn.q_norm.weight", {s.head_dim}, 1.0f);
      add(p + "self_attn.k_norm.weight", {s.head_dim}, 1.0f);
    }
    add(p + "mlp.gate_proj.weight", {s.inter, s.hidden});
    add(p + "mlp.up_proj.weight", {s.inter, s.hidden});
    add(p + "mlp.down_proj.weight", {s.hidden, s.inter});
  }
  const fs::path dir = qf::testing::TempDir() / name;
  fs::create_directories(dir);
  nlohmann::json cfg = {{"architectures", {s.arch}},
                        {"vocab_size", s.vocab},
                        {"hidden_size", s.hidden},
                        {"intermediate_size", s.inter},
                        {"num_hidden_layers", s.layers},
                        {"num_attention_heads", s.heads},
                        {"num_key_value_heads", s.kv_heads},
                        {"head_dim", s.head_dim},
                        {"max_position_embeddings", 64},
                        {"rms_norm_eps", 1e-5},
                        {"rope_theta", 500.0},
                        {"tie_word_embeddings", s.tied},
                        {"hidden_act", "silu"},
                        {"bos_token_id", 1}};
  if (s.window) cfg["sliding_window"] = s.window;
  if (s.llama3_rope)
    cfg["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", 8.0},
                           {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 16}};
  std::ofstream(dir / "config.json") << cfg.dump(2);

  // Encode in the storage dtype; split across two shards when asked.
  std::vector<std::vector<std::byte>> bufs;
  std::vector<io::TensorToWrite> shard[2];
  nlohmann::json weight_map;
  int i = 0;
  for (const auto& [n, sv] : w->t) {
    const auto& v = sv.second;
    std::vector<std::byte> b;
    if (s.dtype == DType::kF32) {
      b.resize(v.size() * 4);
      std::memcpy(b.data(), v.data(), b.size());
    } else {
      b.resize(v.size() * 2);
      for (size_t k = 0; k < v.size(); ++k) {
        const uint16_t h = ToHalfBits(v[k], s.dtype);
        std::memcpy(b.data() + 2 * k, &h, 2);
      }
    }
    bufs.push_back(std::move(b));
    const int which = s.sharded ? (i++ % 2) : 0;
    shard[which].push_back({n, s.dtype, sv.first, bufs.back()});
    weight_map[n] = which ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
  }
  if (s.sharded) {
    EXPECT_TRUE(io::WriteSafetensors(dir / "model-00001-of-00002.safetensors", shard[0]).ok());
    EXPECT_TRUE(io::WriteSafetensors(dir / "model-00002-of-00002.safetensors", shard[1]).ok());
    std::ofstream(dir / "model.safetensors.index.json")
        << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump();
  } else {
    EXPECT_TRUE(io::WriteSafetensors(dir / "model.safetensors", shard[0]).ok());
  }
  return dir;
}

// ---- independent reference forward (double precision, no cache) ----

Vec MatVec(const std::vector<float>& w, const Vec& x, int64_t n, const std::vector<float>* b) {
  const int64_t k = int64_t(x.size());
  Vec y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double acc = b ? (*b)[size_t(i)] : 0.0;
    for (int64_t j = 0; j < k; ++j) acc += double(w[size_t(i * k + j)]) * x[size_t(j)];
    y[size_t(i)] = acc;
  }
  return y;
}

Vec Rms(const Vec& x, const std::vector<float>& w, size_t off = 0, size_t n = 0) {
  if (!n) n = x.size();
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += x[off + i] * x[off + i];
  const double inv = 1.0 / std::sqrt(ss / double(n) + 1e-5);
  Vec y(n);
  for (size_t i = 0; i < n; ++i) y[i] = x[off + i] * inv * w[i];
  return y;
}

double InvFreq(const Spec& s, int64_t i) {
  double f = std::pow(500.0, -double(2 * i) / double(s.head_dim));
  if (!s.llama3_rope) return f;
  const double wavelen = 2 * std::numbers::pi / f, lo = 16.0 / 1.0, hi = 16.0 / 4.0;
  if (wavelen < hi) return f;
  if (wavelen > lo) return f / 8.0;
  const double smooth = (16.0 / wavelen - 1.0) / (4.0 - 1.0);
  return (1 - smooth) * f / 8.0 + smooth * f;
}

void RopeRef(const Spec& s, Vec& v, int64_t heads, int64_t pos) {
  const int64_t half = s.head_dim / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i) {
      const double a = double(float(pos) * float(InvFreq(s, i)));
      double& x1 = v[size_t(h * s.head_dim + i)];
      double& x2 = v[size_t(h * s.head_dim + i + half)];
      const double r1 = x1 * std::cos(a) - x2 * std::sin(a),
                   r2 = x2 * std::cos(a) + x1 * std::sin(a);
      x1 = r1, x2 = r2;
    }
}

std::vector<Vec> ReferenceLogits(const Spec& s, const Weights& W, const std::vector<int32_t>& ids) {
  const int64_t T = int64_t(ids.size()), H = s.hidden, D = s.head_dim;
  std::vector<Vec> x(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    const auto& e = W("model.embed_tokens.weight");
    x[size_t(t)].assign(e.begin() + ids[size_t(t)] * H, e.begin() + (ids[size_t(t)] + 1) * H);
  }
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto opt = [&](const std::string& n) { return s.bias ? &W(p + n) : nullptr; };
    std::vector<Vec> q(static_cast<size_t>(T)), k(static_cast<size_t>(T)),
        v(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      const Vec h = Rms(x[size_t(t)], W(p + "input_layernorm.weight"));
      q[size_t(t)] =
          MatVec(W(p + "self_attn.q_proj.weight"), h, s.heads * D, opt("self_attn.q_proj.bias"));
      k[size_t(t)] =
          MatVec(W(p + "self_attn.k_proj.weight"), h, s.kv_heads * D, opt("self_attn.k_proj.bias"));
      v[size_t(t)] =
          MatVec(W(p + "self_attn.v_proj.weight"), h, s.kv_heads * D, opt("self_attn.v_proj.bias"));
      if (s.qk_norm) {
        for (int64_t hh = 0; hh < s.heads; ++hh) {
          const Vec r =
              Rms(q[size_t(t)], W(p + "self_attn.q_norm.weight"), size_t(hh * D), size_t(D));
          std::copy(r.begin(), r.end(), q[size_t(t)].begin() + hh * D);
        }
        for (int64_t hh = 0; hh < s.kv_heads; ++hh) {
          const Vec r =
              Rms(k[size_t(t)], W(p + "self_attn.k_norm.weight"), size_t(hh * D), size_t(D));
          std::copy(r.begin(), r.end(), k[size_t(t)].begin() + hh * D);
        }
      }
      RopeRef(s, q[size_t(t)], s.heads, t);
      RopeRef(s, k[size_t(t)], s.kv_heads, t);
    }
    for (int64_t t = 0; t < T; ++t) {
      Vec att(size_t(s.heads * D), 0.0);
      for (int64_t hh = 0; hh < s.heads; ++hh) {
        const int64_t kh = hh / (s.heads / s.kv_heads);
        const int64_t first = s.window ? std::max<int64_t>(0, t - s.window + 1) : 0;
        Vec sc;
        double mx = -1e300;
        for (int64_t j = first; j <= t; ++j) {
          double d = 0;
          for (int64_t c = 0; c < D; ++c)
            d += q[size_t(t)][size_t(hh * D + c)] * k[size_t(j)][size_t(kh * D + c)];
          sc.push_back(d / std::sqrt(double(D)));
          mx = std::max(mx, sc.back());
        }
        double sum = 0;
        for (auto& e : sc) sum += (e = std::exp(e - mx));
        for (int64_t j = first; j <= t; ++j)
          for (int64_t c = 0; c < D; ++c)
            att[size_t(hh * D + c)] +=
                sc[size_t(j - first)] / sum * v[size_t(j)][size_t(kh * D + c)];
      }
      const Vec o = MatVec(W(p + "self_attn.o_proj.weight"), att, H, nullptr);
      for (int64_t i = 0; i < H; ++i) x[size_t(t)][size_t(i)] += o[size_t(i)];
    }
    for (int64_t t = 0; t < T; ++t) {
      const Vec h = Rms(x[size_t(t)], W(p + "post_attention_layernorm.weight"));
      Vec g = MatVec(W(p + "mlp.gate_proj.weight"), h, s.inter, nullptr);
      const Vec u = MatVec(W(p + "mlp.up_proj.weight"), h, s.inter, nullptr);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const Vec d = MatVec(W(p + "mlp.down_proj.weight"), g, H, nullptr);
      for (int64_t i = 0; i < H; ++i) x[size_t(t)][size_t(i)] += d[size_t(i)];
    }
  }
  std::vector<Vec> logits;
  const auto& head = W(s.tied ? "model.embed_tokens.weight" : "lm_head.weight");
  for (int64_t t = 0; t < T; ++t)
    logits.push_back(MatVec(head, Rms(x[size_t(t)], W("model.norm.weight")), s.vocab, nullptr));
  return logits;
}

class Families : public ::testing::TestWithParam<Spec> {};

TEST_P(Families, ForwardMatchesIndependentReference) {
  const Spec& s = GetParam();
  kernels::SetThreads(2);
  Weights w;
  const std::string name = s.arch + (s.sharded ? "_sharded" : "") + "_" +
                           std::string(Name(s.dtype)) + (s.window ? "_window" : "") +
                           (s.llama3_rope ? "_llama3" : "");
  const fs::path dir = WriteModel(s, name, &w);
  auto m = Model::Load(dir);
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->config().family->architecture, s.arch);
  const std::vector<int32_t> ids = {1, 5, 9, 33, 2, 17, 8, 8, 39, 0, 21, 4, 11, 30};
  const auto ref = ReferenceLogits(s, w, ids);
  std::vector<float> got(ids.size() * size_t(s.vocab));
  KVCache cache = m->NewCache(int64_t(ids.size()));
  ASSERT_TRUE(m->Forward(ids, cache, got.data(), true).ok());
  double worst = 0;
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t j = 0; j < s.vocab; ++j)
      worst = std::max(worst,
                       std::abs(double(got[t * size_t(s.vocab) + size_t(j)]) - ref[t][size_t(j)]));
  EXPECT_LT(worst, 2e-4) << name;
}

INSTANTIATE_TEST_SUITE_P(
    All, Families,
    ::testing::Values(
        Spec{.arch = "LlamaForCausalLM"},
        Spec{.arch = "LlamaForCausalLM",
             .llama3_rope = true,
             .dtype = DType::kBF16,
             .sharded = true},
        Spec{.arch = "MistralForCausalLM", .window = 4, .dtype = DType::kF16},
        Spec{.arch = "Qwen2ForCausalLM", .bias = true, .tied = true},
        Spec{.arch = "Qwen3ForCausalLM", .kv_heads = 1, .qk_norm = true, .dtype = DType::kBF16},
        Spec{.arch = "LlamaForCausalLM", .dtype = DType::kBF16},
        Spec{.arch = "LlamaForCausalLM", .llama3_rope = true},
        Spec{.arch = "LlamaForCausalLM", .sharded = true},
        Spec{.arch = "Qwen3ForCausalLM", .kv_heads = 1, .qk_norm = true}));

// Every row of the family table, as its columns describe it: a new row is tested here with
// nothing else to add (the window of window_always rows is exercised; others ignore it).
std::vector<Spec> TableRows() {
  std::vector<Spec> rows;
  for (const FamilyInfo& f : FamilyTable())
    rows.push_back(Spec{.arch = std::string(f.architecture),
                        .bias = f.qkv_bias,
                        .qk_norm = f.qk_norm,
                        .window = f.window_always ? 4 : 0});
  return rows;
}
INSTANTIATE_TEST_SUITE_P(TableRow, Families, ::testing::ValuesIn(TableRows()));

// Logits [14, vocab] of every position of a fixed prompt (ids below the Specs' vocabulary).
std::vector<float> PromptLogits(const Model& m, int64_t vocab) {
  const std::vector<int32_t> ids = {1, 5, 9, 33, 2, 17, 8, 8, 39, 0, 21, 4, 11, 30};
  std::vector<float> out(ids.size() * size_t(vocab));
  KVCache cache = m.NewCache(int64_t(ids.size()));
  EXPECT_TRUE(m.Forward(ids, cache, out.data(), true).ok());
  return out;
}
// mean |got − base| / mean |base|.
double RelativeDiff(const std::vector<float>& got, const std::vector<float>& base) {
  double diff = 0, mean = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff += std::abs(double(got[i]) - base[i]);
    mean += std::abs(double(base[i]));
  }
  return diff / mean;
}

// The calibrated methods, QAT included (block-wise and end to end, weight-only and with quantized
// activations), run unchanged on every family
// (biases, q/k norms, sliding window, GQA and MHA, f16/bf16 storage, tied embeddings): the output
// loads and stays close to the fp model.
class FamiliesQuantize : public ::testing::TestWithParam<Spec> {};

TEST_P(FamiliesQuantize, CalibratedMethodsRunOnEveryFamily) {
  const Spec& s = GetParam();
  kernels::SetThreads(2);
  Weights w;
  const std::string name =
      "q_" + s.arch + "_" + std::string(Name(s.dtype)) + "_kv" + std::to_string(s.kv_heads);
  const fs::path dir = WriteModel(s, name, &w);
  auto fp = Model::Load(dir);
  ASSERT_TRUE(fp.ok()) << fp.error().message();
  const std::vector<float> base = PromptLogits(*fp, s.vocab);
  struct Case {
    std::string scheme, method;
    double max_rel;  // mean |Δlogit| / mean |logit|; a wrong fold gives O(1) (W8A8-static's
                     // per-tensor int8 inputs alone reach 0.05-0.07 on these random blocks)
    int e2e_epochs = 0;
    bool norms = false;  // QAT trains the norms too (block-wise and end to end)
  };
  for (const Case& c :
       {Case{"W8A8", "smoothquant", 0.06}, Case{"int4-channel-asym", "awq", 0.5},
        Case{"int4-channel-asym", "awq+gptq", 0.5}, Case{"FP8", "smoothquant+gptq", 0.25},
        Case{"int4-channel-asym", "gptq+qat", 0.5, 1},
        Case{"int4-channel-asym", "gptq+qat", 0.5, 1, true}, Case{"W8A8", "gptq+qat", 0.06, 1},
        Case{"W8A8-static", "gptq+qat", 0.1, 1}}) {
    SCOPED_TRACE(c.scheme + " " + c.method);
    pipeline::QuantizeOptions opt;
    opt.scheme = *ParseScheme(c.scheme);
    auto act = PresetActivations(c.scheme);
    ASSERT_TRUE(act.ok());
    opt.act = *act;
    opt.method = c.method;
    opt.clip = c.method != "smoothquant";
    opt.calib.nsamples = 4;
    opt.calib.seqlen = 16;
    opt.e2e_epochs = c.e2e_epochs;
    opt.qat.block_norms = opt.qat.e2e_norms = opt.qat.e2e_final_norm = c.norms;
    if (c.norms) opt.qat.lr_q = 0.01;  // steps that show after rounding to the norms' dtype
    const fs::path out = qf::testing::TempDir() /
                         (name + "_" + c.method + "_" + c.scheme + (c.norms ? "_norms" : ""));
    auto r = pipeline::QuantizeModel(dir, out, opt);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_TRUE(r->calib_from_model);
    EXPECT_EQ(int64_t(r->linears.size()), 7 * s.layers);
    const auto method = pipeline::ParseMethod(c.method);
    ASSERT_TRUE(method.ok());
    // AWQ folds v into o only without GQA.
    const bool v_to_o = method->transform == pipeline::Transform::kAwq && s.kv_heads == s.heads;
    EXPECT_EQ(int64_t(r->transforms.size()),
              method->transform != pipeline::Transform::kNone ? (v_to_o ? 4 : 3) * s.layers : 0);
    if (method->qat) {  // block-wise, then end to end
      ASSERT_EQ(int64_t(r->qat.size()), s.layers);
      for (const methods::QatBlockReport& b : r->qat) EXPECT_GT(b.steps, 0);
      ASSERT_TRUE(r->qat_e2e.has_value());
      EXPECT_GT(r->qat_e2e->steps, 0);
    }
    // Trained norms (a pass that reverts keeps its start): every block's two and the final
    // norm after the end-to-end pass, else the block-wise ones; written in the source's dtype
    // (the report holds the written values).
    int64_t want_norms = 0;
    if (c.norms) {
      for (const methods::QatBlockReport& b : r->qat) want_norms += b.reverted ? 0 : 2;
      if (!r->qat_e2e->reverted) want_norms = 2 * s.layers + 1;
    }
    EXPECT_EQ(int64_t(r->trained_norms.size()), want_norms);
    if (c.norms) {
      auto src = io::TensorStore::Open(dir), got = io::TensorStore::Open(out);
      ASSERT_TRUE(src.ok() && got.ok());
      int moved = 0;
      for (const auto& [tname, v] : r->trained_norms) {
        auto before = ReadTensorF32(*src, tname, {int64_t(v.size())});
        auto after = ReadTensorF32(*got, tname, {int64_t(v.size())});
        ASSERT_TRUE(before.ok() && after.ok()) << tname;
        EXPECT_EQ(*after, v) << tname;
        moved += *before != v;
      }
      EXPECT_EQ(moved, want_norms);
      EXPECT_GT(want_norms, 0) << "every pass reverted: nothing checked";
    }
    if (method->qat && act->has_value()) {  // with quantized activations: same bytes on 1 thread
      kernels::SetThreads(1);
      auto r1 = pipeline::QuantizeModel(dir, out.string() + "_t1", opt);
      kernels::SetThreads(2);
      ASSERT_TRUE(r1.ok()) << r1.error().message();
      const auto a = ReadTextFile(out / "model.safetensors"),
                 b = ReadTextFile(out.string() + "_t1/model.safetensors");
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_FALSE(a->empty());
      EXPECT_TRUE(*a == *b);
    }
    auto q = Model::Load(out);
    ASSERT_TRUE(q.ok()) << q.error().message();
    ASSERT_TRUE(q->layers()[0].q.quant);
    EXPECT_EQ(q->layers()[0].q.act.enabled(), act->has_value());
    const double rel = RelativeDiff(PromptLogits(*q, s.vocab), base);
    std::printf("%s %s %s: mean |dlogit| / mean |logit| = %.4f\n", name.c_str(), c.scheme.c_str(),
                c.method.c_str(), rel);
    EXPECT_GT(rel, 0.0);
    EXPECT_LT(rel, c.max_rel);
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, FamiliesQuantize,
    ::testing::Values(
        Spec{.arch = "LlamaForCausalLM", .kv_heads = 4, .dtype = DType::kBF16},
        Spec{.arch = "MistralForCausalLM", .window = 4, .dtype = DType::kF16},
        Spec{.arch = "Qwen2ForCausalLM", .bias = true, .tied = true},
        Spec{.arch = "Qwen3ForCausalLM", .kv_heads = 1, .qk_norm = true, .dtype = DType::kBF16}));

// --rotate (pipeline/rotate): on every family (biases, q/k norms, GQA and MHA, 16-bit storage,
// tied embeddings, head and hidden sizes that are not powers of two) the rotated checkpoint
// computes the fp model's logits, with its norms folded to ones, the linears in fp32 and tied
// embeddings untied; the same seed gives the same bytes; quantize with opt.rotate is quantizing
// that checkpoint, and leaves no scratch folder behind.
class FamiliesRotate : public ::testing::TestWithParam<Spec> {};

TEST_P(FamiliesRotate, RotatedCheckpointComputesTheSameLogits) {
  const Spec& s = GetParam();
  kernels::SetThreads(2);
  Weights w;
  const std::string name =
      "rot_" + s.arch + "_" + std::string(Name(s.dtype)) + "_kv" + std::to_string(s.kv_heads);
  const fs::path dir = WriteModel(s, name, &w);
  auto fp = Model::Load(dir);
  ASSERT_TRUE(fp.ok()) << fp.error().message();
  const std::vector<float> base = PromptLogits(*fp, s.vocab);
  // fp32 rounding only; 16-bit sources also round the rotated embedding and lm_head to 16 bits.
  const double tol = s.dtype == DType::kF32 ? 1e-5 : s.dtype == DType::kF16 ? 2e-3 : 1e-2;
  for (const bool heads : {false, true}) {
    SCOPED_TRACE(heads ? "hadamard+heads" : "hadamard");
    const pipeline::RotateOptions ropt{.heads = heads, .seed = 5};
    const fs::path out = qf::testing::TempDir() / (name + (heads ? "_heads" : "_r1"));
    auto r = pipeline::RotateModel(dir, out, ropt);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->untied, s.tied);
    auto m = Model::Load(out);
    ASSERT_TRUE(m.ok()) << m.error().message();
    const double rel = RelativeDiff(PromptLogits(*m, s.vocab), base);
    std::printf("%s %s: mean |dlogit| / mean |logit| = %.2e\n", name.c_str(),
                heads ? "hadamard+heads" : "hadamard", rel);
    EXPECT_LT(rel, tol);
    // What was written: norms as ones, linears fp32 and changed, lm_head its own tensor.
    auto store = io::TensorStore::Open(out);
    ASSERT_TRUE(store.ok());
    for (const std::string n : {"model.norm.weight", "model.layers.1.input_layernorm.weight",
                                "model.layers.0.post_attention_layernorm.weight"}) {
      auto v = ReadTensorF32(*store, n, {s.hidden});
      ASSERT_TRUE(v.ok()) << n;
      EXPECT_EQ(*v, std::vector<float>(size_t(s.hidden), 1.0f)) << n;
    }
    const io::TensorInfo* q = store->Find("model.layers.0.self_attn.q_proj.weight");
    ASSERT_TRUE(q);
    EXPECT_EQ(q->dtype, DType::kF32);
    auto qv = ReadTensorF32(*store, q->name, q->shape);
    ASSERT_TRUE(qv.ok());
    EXPECT_NE(*qv, w(q->name));
    EXPECT_TRUE(store->Find("lm_head.weight"));
    EXPECT_EQ(store->Find("model.embed_tokens.weight")->dtype, s.dtype);
    auto cfg = model::LoadHfConfig(out);
    ASSERT_TRUE(cfg.ok());
    EXPECT_FALSE(cfg->tie_embeddings);
    // Same seed, same bytes.
    const fs::path again = out.string() + "_again";
    ASSERT_TRUE(pipeline::RotateModel(dir, again, ropt).ok());
    const auto a = ReadTextFile(out / "model.safetensors"),
               b = ReadTextFile(again / "model.safetensors");
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_TRUE(*a == *b);

    // quantize with rotate = quantizing the rotated checkpoint (RTN: no calibration).
    pipeline::QuantizeOptions opt;
    opt.scheme = *ParseScheme("int4-channel-asym");
    opt.method = "rtn";
    const fs::path plain = out.string() + "_q_plain", via = out.string() + "_q_rotate";
    ASSERT_TRUE(pipeline::QuantizeModel(out, plain, opt).ok());
    opt.rotate = ropt;
    auto rq = pipeline::QuantizeModel(dir, via, opt);
    ASSERT_TRUE(rq.ok()) << rq.error().message();
    EXPECT_GT(rq->seconds_rotate, 0.0);
    const auto qa = ReadTextFile(plain / "model.safetensors"),
               qb = ReadTextFile(via / "model.safetensors");
    ASSERT_TRUE(qa.ok() && qb.ok());
    EXPECT_FALSE(qa->empty());
    EXPECT_TRUE(*qa == *qb);
    for (const auto& e : fs::directory_iterator(qf::testing::TempDir()))
      EXPECT_EQ(e.path().filename().string().find(".rotated-"), std::string::npos)
          << e.path() << " left behind";
    auto mq = Model::Load(via);
    ASSERT_TRUE(mq.ok()) << mq.error().message();
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, FamiliesRotate,
    ::testing::Values(
        Spec{.arch = "LlamaForCausalLM", .kv_heads = 4, .dtype = DType::kBF16},
        Spec{.arch = "LlamaForCausalLM", .hidden = 32, .head_dim = 8},
        Spec{.arch = "MistralForCausalLM", .window = 4, .dtype = DType::kF16},
        Spec{.arch = "Qwen2ForCausalLM", .bias = true, .tied = true},
        Spec{.arch = "Qwen3ForCausalLM", .kv_heads = 1, .qk_norm = true, .dtype = DType::kBF16}));

}  // namespace
}  // namespace qf::model
