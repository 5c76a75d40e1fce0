// The decoder walk (model/decoder_walk.h) against a frozen copy of the block code it replaced
// (model.cc's RunLayer and ForwardBatchStep as of commit 5e1aeb1): byte-equal outputs, KV rows
// and observed inputs on every family feature (q/k norms, biases, GQA with one KV head, sliding
// window, Llama-3 RoPE), prefill and decode shapes, batched decoding, quantized linears with
// activation quantization; true-sequential spans equal one whole walk; hooks see each group's
// input and can substitute a linear.
#include "model/decoder_walk.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "formats/activation.h"
#include "formats/quantize.h"
#include "formats/scheme.h"
#include "kernels/ops.h"

namespace qf::model {
namespace {

// ---- The frozen oracle: the block as model.cc wrote it before the walk existed. ----
namespace legacy {

void Attend(const ModelConfig& c, const Layer& L, const float* h, float* q, float* att, int64_t m,
            int64_t pos0, float* k_cache, float* v_cache, const float* cos, const float* sin) {
  const int64_t D = c.head_dim, kvd = c.kv_dim();
  const float eps = float(c.rms_eps);
  float* kc = k_cache + pos0 * kvd;
  float* vc = v_cache + pos0 * kvd;
  L.q.Apply(h, q, m);
  L.k.Apply(h, kc, m);
  L.v.Apply(h, vc, m);
  if (!L.q_norm.empty()) {
    kernels::RmsNorm(q, L.q_norm.data(), q, m * c.heads, D, eps);
    kernels::RmsNorm(kc, L.k_norm.data(), kc, m * c.kv_heads, D, eps);
  }
  kernels::Rope(q, m, c.heads, D, pos0, cos, sin);
  kernels::Rope(kc, m, c.kv_heads, D, pos0, cos, sin);
  kernels::Attention(q, k_cache, v_cache, att, m, pos0, c.heads, c.kv_heads, D, c.sliding_window);
}

void AddProjection(const Linear& lin, const float* in, float* tmp, float* x, int64_t m) {
  lin.Apply(in, tmp, m);
  const int64_t n = m * lin.n;
  for (int64_t i = 0; i < n; ++i) x[i] += tmp[i];
}

void SwiGlu(const ModelConfig& c, const Layer& L, const float* h, float* g, float* u, int64_t m) {
  L.gate.Apply(h, g, m);
  L.up.Apply(h, u, m);
  kernels::SiluMul(g, u, m, c.intermediate);
}

// RunLayer, with the four observation points of the old imatrix/calibration drivers.
void RunLayer(const ModelConfig& c, const Layer& L, float* x, int64_t m, int64_t pos0, float* kc,
              float* vc, const float* cos, const float* sin,
              std::vector<std::vector<float>>* seen) {
  const int64_t H = c.hidden, F = c.intermediate, qd = c.q_dim();
  std::vector<float> h(size_t(m * H)), q(size_t(m * qd)), att(size_t(m * qd)), g(size_t(m * F)),
      u(size_t(m * F));
  auto keep = [&](const float* p, int64_t n) {
    if (seen) seen->emplace_back(p, p + m * n);
  };
  kernels::RmsNorm(x, L.attn_norm.data(), h.data(), m, H, float(c.rms_eps));
  keep(h.data(), H);
  legacy::Attend(c, L, h.data(), q.data(), att.data(), m, pos0, kc, vc, cos, sin);
  keep(att.data(), qd);
  legacy::AddProjection(L.o, att.data(), h.data(), x, m);
  kernels::RmsNorm(x, L.ffn_norm.data(), h.data(), m, H, float(c.rms_eps));
  keep(h.data(), H);
  legacy::SwiGlu(c, L, h.data(), g.data(), u.data(), m);
  keep(g.data(), F);
  legacy::AddProjection(L.down, g.data(), h.data(), x, m);
}

// ForwardBatchStep's layer body: B sequences of one token at position pos.
void BatchLayer(const ModelConfig& c, const Layer& L, float* x, int64_t B, int64_t pos,
                std::vector<KVCache>& caches, size_t li) {
  const int64_t H = c.hidden, F = c.intermediate, D = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim();
  std::vector<float> h(size_t(B * H)), q(size_t(B * qd)), att(size_t(B * qd)), k(size_t(B * kvd)),
      v(size_t(B * kvd)), g(size_t(B * F)), u(size_t(B * F));
  const float eps = float(c.rms_eps);
  kernels::RmsNorm(x, L.attn_norm.data(), h.data(), B, H, eps);
  L.q.Apply(h.data(), q.data(), B);
  L.k.Apply(h.data(), k.data(), B);
  L.v.Apply(h.data(), v.data(), B);
  if (!L.q_norm.empty()) {
    kernels::RmsNorm(q.data(), L.q_norm.data(), q.data(), B * c.heads, D, eps);
    kernels::RmsNorm(k.data(), L.k_norm.data(), k.data(), B * c.kv_heads, D, eps);
  }
  for (int64_t b = 0; b < B; ++b) {
    KVCache& kv = caches[size_t(b)];
    float* kc = kv.k[li].data() + pos * kvd;
    std::copy_n(k.data() + b * kvd, kvd, kc);
    std::copy_n(v.data() + b * kvd, kvd, kv.v[li].data() + pos * kvd);
    kernels::Rope(q.data() + b * qd, 1, c.heads, D, pos, kv.cos.data(), kv.sin.data());
    kernels::Rope(kc, 1, c.kv_heads, D, pos, kv.cos.data(), kv.sin.data());
    kernels::Attention(q.data() + b * qd, kv.k[li].data(), kv.v[li].data(), att.data() + b * qd, 1,
                       pos, c.heads, c.kv_heads, D, c.sliding_window);
  }
  legacy::AddProjection(L.o, att.data(), h.data(), x, B);
  kernels::RmsNorm(x, L.ffn_norm.data(), h.data(), B, H, eps);
  legacy::SwiGlu(c, L, h.data(), g.data(), u.data(), B);
  legacy::AddProjection(L.down, g.data(), h.data(), x, B);
}

}  // namespace legacy

// ---- Random blocks of each family's shape. ----
struct Case {
  const char* arch;
  int64_t heads = 4, kv_heads = 2, head_dim = 8, hidden = 32, inter = 48;
  bool bias = false, qk_norm = false, llama3 = false, quantized = false;
  int64_t window = 0;
};

struct Block {
  ModelConfig c;
  std::vector<Layer> layers;
};

Block MakeBlock(const Case& k, uint64_t seed) {
  Block b;
  ModelConfig& c = b.c;
  c.family = FindFamily(k.arch);
  EXPECT_NE(c.family, nullptr) << k.arch;
  c.vocab_size = 50;
  c.hidden = k.hidden;
  c.intermediate = k.inter;
  c.layers = 2;
  c.heads = k.heads;
  c.kv_heads = k.kv_heads;
  c.head_dim = k.head_dim;
  c.max_position = 128;
  c.rms_eps = 1e-5;
  c.rope_theta = 500.0;
  c.sliding_window = k.window;
  c.qkv_bias = k.bias;
  if (k.llama3) {
    c.rope_scaling.type = RopeScaling::Type::kLlama3;
    c.rope_scaling.factor = 8.0;
    c.rope_scaling.original_max_position = 16;
  }
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  auto vec = [&](int64_t n, float center) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = center + nd(rng);
    return v;
  };
  const QuantScheme w8 = *ParseScheme("int8-channel");
  const ActScheme a8 = *ParseActScheme("int8-token");
  auto linear = [&](int64_t n, int64_t kk, bool bias, bool quant) {
    Linear lin;
    lin.n = n;
    lin.k = kk;
    const std::vector<float> w = vec(n * kk, 0.0f);
    lin.weight.assign(w.begin(), w.end());
    if (bias) lin.bias = vec(n, 0.0f);
    if (quant) {
      auto q = Quantize(lin.weight, n, kk, w8, {});
      EXPECT_TRUE(q.ok());
      lin.weight.clear();
      lin.act.scheme = a8;
      lin.quant =
          std::make_shared<const kernels::QuantMatrix>(kernels::ToKernelLayout(*q, lin.act));
    }
    return lin;
  };
  for (int64_t l = 0; l < c.layers; ++l) {
    Layer L;
    const bool qz = k.quantized && l == 1;  // one fp layer, one quantized with int8 activations
    L.attn_norm = vec(c.hidden, 1.0f);
    L.ffn_norm = vec(c.hidden, 1.0f);
    L.q = linear(c.q_dim(), c.hidden, k.bias, qz);
    L.k = linear(c.kv_dim(), c.hidden, k.bias, qz);
    L.v = linear(c.kv_dim(), c.hidden, k.bias, false);
    L.o = linear(c.hidden, c.q_dim(), false, qz);
    if (k.qk_norm) {
      L.q_norm = vec(c.head_dim, 1.0f);
      L.k_norm = vec(c.head_dim, 1.0f);
    }
    L.gate = linear(c.intermediate, c.hidden, false, qz);
    L.up = linear(c.intermediate, c.hidden, false, false);
    L.down = linear(c.hidden, c.intermediate, false, qz);
    b.layers.push_back(std::move(L));
  }
  return b;
}

KVCache NewCache(const ModelConfig& c, int64_t capacity) {
  KVCache kv;
  kv.capacity = capacity;
  kv.k.assign(size_t(c.layers), std::vector<float>(size_t(capacity * c.kv_dim()), 0.0f));
  kv.v.assign(size_t(c.layers), std::vector<float>(size_t(capacity * c.kv_dim()), 0.0f));
  RopeTables(c, capacity, &kv.cos, &kv.sin);
  return kv;
}

std::vector<float> Input(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = nd(rng);
  return v;
}

bool SameBytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Buffers of one walk over m rows; attn_in/proj/mlp_in one buffer (as the forward pass) or three.
struct Buffers {
  std::vector<float> h, h2, h3, q, att, g, u, k_rows, v_rows;
  BlockBuffers Get(float* x, bool aliased) {
    return {x,
            h.data(),
            q.data(),
            att.data(),
            aliased ? h.data() : h2.data(),
            aliased ? h.data() : h3.data(),
            g.data(),
            u.data(),
            k_rows.data(),
            v_rows.data()};
  }
  Buffers(const ModelConfig& c, int64_t m)
      : h(size_t(m * c.hidden)),
        h2(h.size()),
        h3(h.size()),
        q(size_t(m * c.q_dim())),
        att(q.size()),
        g(size_t(m * c.intermediate)),
        u(g.size()),
        k_rows(size_t(m * c.kv_dim())),
        v_rows(k_rows.size()) {}
};

// Keeps a copy of every input shown to it.
struct Keeper final : WalkHooks {
  std::vector<std::vector<float>> seen;
  std::vector<WalkPoint> at;
  void OnInput(const WalkPoint& p, const float* x, int64_t rows, int64_t cols) override {
    seen.emplace_back(x, x + rows * cols);
    at.push_back(p);
  }
};

class Walk : public ::testing::TestWithParam<Case> {};

// One sequence: the stack over a prompt and then more tokens (pos0 > 0) equals the legacy layer
// loop in the residual stream, the KV cache and the four observed inputs, byte for byte.
TEST_P(Walk, OneSequenceEqualsTheLegacyBlock) {
  const Block blk = MakeBlock(GetParam(), 7);
  const ModelConfig& c = blk.c;
  for (const int64_t m : {1, 2, 3, 17, 70}) {
    for (const int64_t pos0 : {0, 5}) {
      for (const bool aliased : {true, false}) {
        SCOPED_TRACE(testing::Message() << "m=" << m << " pos0=" << pos0 << " aliased=" << aliased);
        KVCache a = NewCache(c, 96), b = NewCache(c, 96);
        const std::vector<float> pre = Input(pos0 * c.hidden, 11);
        std::vector<float> xa = Input(m * c.hidden, 3 + uint64_t(m)), xb = xa;
        std::vector<std::vector<float>> seen_a;
        // Both caches first hold the same pos0 tokens (run the legacy way).
        if (pos0 > 0) {
          for (KVCache* kv : {&a, &b}) {
            std::vector<float> x = pre;
            for (size_t l = 0; l < blk.layers.size(); ++l)
              legacy::RunLayer(c, blk.layers[l], x.data(), pos0, 0, kv->k[l].data(),
                               kv->v[l].data(), kv->cos.data(), kv->sin.data(), nullptr);
            kv->len = pos0;
          }
        }
        for (size_t l = 0; l < blk.layers.size(); ++l)
          legacy::RunLayer(c, blk.layers[l], xa.data(), m, pos0, a.k[l].data(), a.v[l].data(),
                           a.cos.data(), a.sin.data(), &seen_a);
        Buffers buf(c, m);
        Keeper keep;
        keep.stages = kLinearInputs;
        const SeqKv seq{&b, {}};
        WalkStack(c, blk.layers, buf.Get(xb.data(), aliased), m, {&seq, 1}, &keep);
        EXPECT_TRUE(SameBytes(xa, xb));
        for (size_t l = 0; l < blk.layers.size(); ++l) {
          EXPECT_TRUE(SameBytes(a.k[l], b.k[l])) << "layer " << l;
          EXPECT_TRUE(SameBytes(a.v[l], b.v[l])) << "layer " << l;
        }
        ASSERT_EQ(keep.seen.size(), seen_a.size());
        for (size_t i = 0; i < seen_a.size(); ++i) {
          EXPECT_TRUE(SameBytes(keep.seen[i], seen_a[i])) << "input " << i;
          EXPECT_EQ(keep.at[i].layer, int64_t(i / 4));
          EXPECT_EQ(int(keep.at[i].stage), int(i % 4));
        }
      }
    }
  }
}

// Several sequences of one token each (batched decoding) equal ForwardBatchStep's old body.
TEST_P(Walk, BatchedDecodingEqualsTheLegacyBatchStep) {
  const Block blk = MakeBlock(GetParam(), 9);
  const ModelConfig& c = blk.c;
  for (const int64_t B : {1, 2, 3}) {
    SCOPED_TRACE(testing::Message() << "B=" << B);
    const int64_t pos = 6;
    std::vector<KVCache> ca, cb;
    for (int64_t s = 0; s < B; ++s) {
      // Each sequence has its own history of pos tokens.
      KVCache kv = NewCache(c, 32);
      std::vector<float> x = Input(pos * c.hidden, 100 + uint64_t(s));
      for (size_t l = 0; l < blk.layers.size(); ++l)
        legacy::RunLayer(c, blk.layers[l], x.data(), pos, 0, kv.k[l].data(), kv.v[l].data(),
                         kv.cos.data(), kv.sin.data(), nullptr);
      kv.len = pos;
      ca.push_back(kv);
      cb.push_back(kv);
    }
    std::vector<float> xa = Input(B * c.hidden, 200), xb = xa;
    for (size_t l = 0; l < blk.layers.size(); ++l)
      legacy::BatchLayer(c, blk.layers[l], xa.data(), B, pos, ca, l);
    Buffers buf(c, B);
    std::vector<SeqKv> seqs;
    for (KVCache& kv : cb) seqs.push_back({&kv, {}});
    WalkStack(c, blk.layers, buf.Get(xb.data(), true), B, seqs);
    EXPECT_TRUE(SameBytes(xa, xb));
    for (int64_t s = 0; s < B; ++s)
      for (size_t l = 0; l < blk.layers.size(); ++l) {
        EXPECT_TRUE(SameBytes(ca[size_t(s)].k[l], cb[size_t(s)].k[l]));
        EXPECT_TRUE(SameBytes(ca[size_t(s)].v[l], cb[size_t(s)].v[l]));
      }
  }
}

// True-sequential calibration walks a block in parts (stopping at each group's input, resuming
// from the stored attention output or SwiGLU output); the parts give the bytes of one walk.
TEST_P(Walk, SpansInARowEqualOneWalk) {
  const Block blk = MakeBlock(GetParam(), 13);
  const ModelConfig& c = blk.c;
  const Layer& L = blk.layers[1];
  const int64_t m = 40;
  std::vector<float> kc(size_t(m * c.kv_dim())), vc(kc.size()), cos, sin;
  RopeTables(c, m, &cos, &sin);
  const KvSlot slot{kc.data(), vc.data(), cos.data(), sin.data(), 0};
  const std::vector<float> x0 = Input(m * c.hidden, 21);

  std::vector<float> whole = x0;
  Buffers bw(c, m);
  Keeper kw;
  kw.stages = kLinearInputs | StageBit(BlockStage::kBlockOut);
  WalkBlock(c, L, 1, bw.Get(whole.data(), true), m, {&slot, 1}, {}, &kw);
  ASSERT_EQ(kw.seen.size(), 5u);
  EXPECT_TRUE(SameBytes(kw.seen[4], whole));

  using S = BlockStage;
  for (const bool keep_g : {true, false}) {
    std::vector<float> x = x0;
    Buffers b(c, m);
    Keeper k;
    k.stages = kLinearInputs;
    const BlockBuffers bb = b.Get(x.data(), false);
    WalkBlock(c, L, 1, bb, m, {&slot, 1}, {S::kAttnIn, S::kAttnIn}, &k);
    WalkBlock(c, L, 1, bb, m, {&slot, 1}, {S::kAttnIn, S::kAttnOut}, &k);
    WalkBlock(c, L, 1, bb, m, {&slot, 1}, {S::kAttnOut, S::kMlpIn}, &k);
    WalkBlock(c, L, 1, bb, m, {&slot, 1}, {S::kMlpIn, S::kMlpOut}, &k);
    if (!keep_g) std::fill(b.g.begin(), b.g.end(), 0.0f);
    WalkBlock(c, L, 1, bb, m, {&slot, 1}, {keep_g ? S::kMlpOut : S::kMlpIn, S::kBlockOut}, nullptr);
    EXPECT_TRUE(SameBytes(x, whole)) << "keep_g " << keep_g;
    // Shown: attn_in | attn_in, att | att, mlp_in | mlp_in, g.
    const S shown[] = {S::kAttnIn, S::kAttnIn, S::kAttnOut, S::kAttnOut,
                       S::kMlpIn,  S::kMlpIn,  S::kMlpOut};
    ASSERT_EQ(k.seen.size(), std::size(shown));
    for (size_t i = 0; i < std::size(shown); ++i) EXPECT_EQ(int(k.at[i].stage), int(shown[i]));
    EXPECT_TRUE(SameBytes(k.seen[0], kw.seen[0]));
    EXPECT_TRUE(SameBytes(k.seen[2], kw.seen[1]));
    EXPECT_TRUE(SameBytes(k.seen[4], kw.seen[2]));
    EXPECT_TRUE(SameBytes(k.seen[6], kw.seen[3]));
  }
}

// Resolve substitutes a linear for the walk only: an identity resolver changes nothing; a
// resolver returning a zero o projection removes attention from the residual stream.
TEST_P(Walk, ResolveSubstitutesALinear) {
  const Block blk = MakeBlock(GetParam(), 17);
  const ModelConfig& c = blk.c;
  const Layer& L = blk.layers[0];
  const int64_t m = 9;
  std::vector<float> kc(size_t(m * c.kv_dim())), vc(kc.size()), cos, sin;
  RopeTables(c, m, &cos, &sin);
  const KvSlot slot{kc.data(), vc.data(), cos.data(), sin.data(), 0};
  const std::vector<float> x0 = Input(m * c.hidden, 5);
  struct Same final : WalkHooks {
    int calls = 0;
    const Linear& Resolve(int64_t, LinearId, const Linear& own) override {
      ++calls;
      return own;
    }
  } same;
  same.resolves = true;
  Linear zero_o;
  zero_o.n = c.hidden;
  zero_o.k = c.q_dim();
  zero_o.weight.assign(size_t(zero_o.n * zero_o.k), 0.0f);
  struct NoAttention final : WalkHooks {
    const Linear* zero = nullptr;
    const Linear& Resolve(int64_t, LinearId id, const Linear& own) override {
      return id == LinearId::kO ? *zero : own;
    }
  } no_attention;
  no_attention.resolves = true;
  no_attention.zero = &zero_o;

  std::vector<float> plain = x0, resolved = x0, skipped = x0, mlp_only = x0;
  Buffers b(c, m);
  WalkBlock(c, L, 0, b.Get(plain.data(), true), m, {&slot, 1});
  WalkBlock(c, L, 0, b.Get(resolved.data(), true), m, {&slot, 1}, {}, &same);
  EXPECT_EQ(same.calls, 7);
  EXPECT_TRUE(SameBytes(plain, resolved));
  WalkBlock(c, L, 0, b.Get(skipped.data(), true), m, {&slot, 1}, {}, &no_attention);
  // Without attention, the block is x + mlp(x): the same as a walk from kMlpIn on x0.
  WalkBlock(c, L, 0, b.Get(mlp_only.data(), true), m, {&slot, 1},
            {BlockStage::kMlpIn, BlockStage::kBlockOut});
  EXPECT_TRUE(SameBytes(skipped, mlp_only));
  EXPECT_FALSE(SameBytes(skipped, plain));
}

// The head: RmsNorm·final_norm shown as kHeadIn at layer = cfg.layers, then lm_head.
TEST(WalkHead, NormShownThenProjected) {
  const Block blk = MakeBlock({.arch = "LlamaForCausalLM"}, 3);
  const ModelConfig& c = blk.c;
  const int64_t rows = 4;
  const std::vector<float> x = Input(rows * c.hidden, 8), norm = Input(c.hidden, 9);
  Linear head;
  head.n = c.vocab_size;
  head.k = c.hidden;
  const std::vector<float> head_w = Input(head.n * head.k, 10);
  head.weight.assign(head_w.begin(), head_w.end());
  std::vector<float> h(x.size()), logits(size_t(rows * head.n)), h_ref(x.size()),
      ref(logits.size());
  Keeper k;
  k.stages = StageBit(BlockStage::kHeadIn);
  WalkHead(c, norm, &head, x.data(), h.data(), rows, logits.data(), &k);
  kernels::RmsNorm(x.data(), norm.data(), h_ref.data(), rows, c.hidden, float(c.rms_eps));
  head.Apply(h_ref.data(), ref.data(), rows);
  EXPECT_TRUE(SameBytes(h, h_ref));
  EXPECT_TRUE(SameBytes(logits, ref));
  ASSERT_EQ(k.seen.size(), 1u);
  EXPECT_EQ(k.at[0].layer, c.layers);
  EXPECT_TRUE(SameBytes(k.seen[0], h_ref));
}

INSTANTIATE_TEST_SUITE_P(
    Families, Walk,
    ::testing::Values(Case{.arch = "LlamaForCausalLM"},
                      Case{.arch = "LlamaForCausalLM", .llama3 = true, .quantized = true},
                      Case{.arch = "MistralForCausalLM", .window = 4},
                      Case{.arch = "Qwen2ForCausalLM", .bias = true},
                      Case{.arch = "Qwen3ForCausalLM", .kv_heads = 1, .qk_norm = true},
                      Case{.arch = "Qwen3ForCausalLM",
                           .heads = 4,
                           .kv_heads = 4,
                           .qk_norm = true,
                           .quantized = true}));

}  // namespace
}  // namespace qf::model
