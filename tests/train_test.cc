// Training passes (train/, methods/qat): every backward op and a whole decoder block's backward
// against central finite differences of the forward kernels; the training forward is the
// inference walk; fake quantization, its straight-through gradients and the frozen codes;
// block-wise QAT lowers the block's output error and gives the same codes on 1 and 2 threads.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "formats/activation.h"
#include "formats/quantize.h"
#include "formats/scheme.h"
#include "kernels/ops.h"
#include "methods/qat.h"
#include "test_util.h"
#include "model/config.h"
#include "model/decoder_walk.h"
#include "train/backward_ops.h"
#include "train/block_backward.h"

namespace qf {
namespace {

double Dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

// Checks grad[i] = ∂L/∂p[i] by central differences of L at every `stride`-th entry of p.
void CheckGradient(std::vector<float>& p, const std::vector<float>& grad,
                   const std::function<double()>& loss, const char* what, float h = 1e-2f,
                   size_t stride = 1) {
  ASSERT_EQ(p.size(), grad.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < p.size(); i += stride) {
    const float keep = p[i];
    p[i] = keep + h;
    const double up = loss();
    p[i] = keep - h;
    const double down = loss();
    p[i] = keep;
    const double fd = (up - down) / (2.0 * double(h));
    const double err = std::abs(fd - grad[i]) / std::max(1.0, std::abs(fd));
    worst = std::max(worst, err);
    EXPECT_LT(err, 2e-2) << what << " [" << i << "]: finite difference " << fd << ", backward "
                         << grad[i];
  }
  EXPECT_GT(worst, 0.0) << what << ": no entry checked";
}

TEST(TrainOps, RmsNormBackwardMatchesFiniteDifferences) {
  const int64_t m = 3, d = 12;
  std::vector<float> x = testing::RandomNormal(m * d, 1),
                     w = testing::RandomNormal(d, 2, 0.3f, 1.0f),
                     r = testing::RandomNormal(m * d, 3);
  std::vector<float> y(x.size()), dx(x.size(), 5.0f);
  auto loss = [&] {
    kernels::RmsNorm(x.data(), w.data(), y.data(), m, d, 1e-5f);
    return Dot(r, y);
  };
  train::RmsNormBackward(x.data(), w.data(), r.data(), dx.data(), m, d, 1e-5f, false);
  CheckGradient(x, dx, loss, "rmsnorm dx");
  // accumulate adds to what is there
  std::vector<float> acc(x.size(), 1.0f);
  train::RmsNormBackward(x.data(), w.data(), r.data(), acc.data(), m, d, 1e-5f, true);
  for (size_t i = 0; i < acc.size(); ++i) EXPECT_FLOAT_EQ(acc[i], dx[i] + 1.0f);
  // The weight's gradient, added to what is there.
  std::vector<float> dw(w.size(), 0.0f);
  train::RmsNormWeightBackward(x.data(), r.data(), dw.data(), m, d, 1e-5f);
  CheckGradient(w, dw, loss, "rmsnorm dweight");
  std::vector<float> dw2(w.size(), 2.0f);
  train::RmsNormWeightBackward(x.data(), r.data(), dw2.data(), m, d, 1e-5f);
  for (size_t i = 0; i < dw.size(); ++i) EXPECT_FLOAT_EQ(dw2[i], dw[i] + 2.0f);
}

TEST(TrainOps, RopeBackwardMatchesFiniteDifferences) {
  const int64_t m = 4, heads = 2, D = 8, pos0 = 3;
  model::ModelConfig c;
  c.head_dim = D;
  c.rope_theta = 100.0;
  std::vector<float> cos, sin;
  model::RopeTables(c, pos0 + m, &cos, &sin);
  std::vector<float> x = testing::RandomNormal(m * heads * D, 4),
                     r = testing::RandomNormal(x.size(), 5);
  auto loss = [&] {
    std::vector<float> y = x;
    kernels::Rope(y.data(), m, heads, D, pos0, cos.data(), sin.data());
    return Dot(r, y);
  };
  std::vector<float> g = r;
  kernels::RopeInverse(g.data(), m, heads, D, pos0, cos.data(), sin.data());
  CheckGradient(x, g, loss, "rope dx");
}

TEST(TrainOps, SiluMulBackwardMatchesFiniteDifferences) {
  const int64_t m = 2, f = 9;
  std::vector<float> gate = testing::RandomNormal(m * f, 6, 2.0f),
                     up = testing::RandomNormal(m * f, 7), r = testing::RandomNormal(m * f, 8);
  auto loss = [&] {
    std::vector<float> h = gate;
    kernels::SiluMul(h.data(), up.data(), m, f);
    return Dot(r, h);
  };
  std::vector<float> dgate(gate.size()), dup(up.size());
  train::SiluMulBackward(gate.data(), up.data(), r.data(), dgate.data(), dup.data(), m, f);
  CheckGradient(gate, dgate, loss, "silu dgate");
  CheckGradient(up, dup, loss, "silu dup");
}

TEST(TrainOps, AttentionBackwardMatchesFiniteDifferences) {
  for (const int64_t window : {int64_t{0}, int64_t{3}}) {
    SCOPED_TRACE(window);
    const int64_t t = 6, heads = 4, kvh = 2, D = 8;
    std::vector<float> q = testing::RandomNormal(t * heads * D, 9),
                       k = testing::RandomNormal(t * kvh * D, 10),
                       v = testing::RandomNormal(t * kvh * D, 11),
                       r = testing::RandomNormal(q.size(), 12);
    auto loss = [&] {
      std::vector<float> out(q.size());
      kernels::Attention(q.data(), k.data(), v.data(), out.data(), t, 0, heads, kvh, D, window);
      return Dot(r, out);
    };
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    train::AttentionBackward(q.data(), k.data(), v.data(), r.data(), dq.data(), dk.data(),
                             dv.data(), t, heads, kvh, D, window);
    CheckGradient(q, dq, loss, "attention dq");
    CheckGradient(k, dk, loss, "attention dk");
    CheckGradient(v, dv, loss, "attention dv");
  }
}

TEST(TrainOps, LinearBackwardMatchesFiniteDifferences) {
  const int64_t m = 5, n = 7, k = 6;
  std::vector<float> x = testing::RandomNormal(m * k, 13), w = testing::RandomNormal(n * k, 14),
                     r = testing::RandomNormal(m * n, 15);
  auto loss = [&] {
    std::vector<float> y(size_t(m * n));
    kernels::MatMulNT(x.data(), w.data(), nullptr, y.data(), m, n, k);
    return Dot(r, y);
  };
  std::vector<float> dx(x.size()), dw(w.size(), 0.0f), dyt(size_t(n * m)),
      tmp(size_t(std::max(m, n) * k));
  train::LinearBackward(x.data(), w.data(), r.data(), dx.data(), dw.data(), m, n, k, false,
                        dyt.data(), tmp.data());
  CheckGradient(x, dx, loss, "linear dx");
  CheckGradient(w, dw, loss, "linear dw");
}

// A small Llama block (GQA, optional sliding window) with random weights.
struct SmallBlock {
  model::ModelConfig c;
  model::Layer layer;
  std::vector<float> cos, sin;
};

SmallBlock MakeSmallBlock(int64_t t, int64_t window, uint64_t seed, bool qk_norm = false) {
  SmallBlock b;
  model::ModelConfig& c = b.c;
  c.family = model::FindFamily(qk_norm ? "Qwen3ForCausalLM" : "LlamaForCausalLM");
  c.hidden = 32;
  c.intermediate = 48;
  c.heads = 4;
  c.kv_heads = 2;
  c.head_dim = 8;
  c.layers = 1;
  c.vocab_size = 16;
  c.max_position = 64;
  c.rms_eps = 1e-5;
  c.rope_theta = 500.0;
  c.sliding_window = window;
  uint64_t s = seed;
  auto lin = [&](int64_t n, int64_t k) {
    model::Linear L;
    L.n = n;
    L.k = k;
    const std::vector<float> w = testing::RandomNormal(size_t(n * k), ++s, 0.2f);
    L.weight.assign(w.begin(), w.end());
    return L;
  };
  b.layer.attn_norm = testing::RandomNormal(size_t(c.hidden), ++s, 0.2f, 1.0f);
  b.layer.ffn_norm = testing::RandomNormal(size_t(c.hidden), ++s, 0.2f, 1.0f);
  if (qk_norm) {
    b.layer.q_norm = testing::RandomNormal(size_t(c.head_dim), ++s, 0.2f, 1.0f);
    b.layer.k_norm = testing::RandomNormal(size_t(c.head_dim), ++s, 0.2f, 1.0f);
  }
  b.layer.q = lin(c.q_dim(), c.hidden);
  b.layer.k = lin(c.kv_dim(), c.hidden);
  b.layer.v = lin(c.kv_dim(), c.hidden);
  b.layer.o = lin(c.hidden, c.q_dim());
  b.layer.gate = lin(c.intermediate, c.hidden);
  b.layer.up = lin(c.intermediate, c.hidden);
  b.layer.down = lin(c.hidden, c.intermediate);
  model::RopeTables(c, t, &b.cos, &b.sin);
  return b;
}

train::BlockLinears Own(const model::Layer& L) {
  train::BlockLinears lin{};
  for (size_t i = 0; i < 7; ++i) lin[i] = &L[model::kBlockLinears[i]];
  return lin;
}

TEST(TrainBlock, ForwardIsTheInferenceWalk) {
  for (const bool qk_norm : {false, true}) {
    SCOPED_TRACE(qk_norm);
    const int64_t t = 9;
    SmallBlock b = MakeSmallBlock(t, 0, 20, qk_norm);
    const std::vector<float> x0 = testing::RandomNormal(size_t(t * b.c.hidden), 21);
    train::BlockTape tape(b.c, t);
    train::ForwardBlock(b.c, b.layer, 0, Own(b.layer), x0.data(), b.cos.data(), b.sin.data(), tape);
    model::WalkScratch sc(b.c, t);
    std::vector<float> x = x0;
    const model::KvSlot kv = sc.Slot(b.cos.data(), b.sin.data());
    model::WalkBlock(b.c, b.layer, 0, sc.Buffers(x.data()), t, {&kv, 1});
    ASSERT_EQ(x.size(), tape.x.size());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], tape.x[i]) << i;
    for (size_t i = 0; i < sc.k.size(); ++i) ASSERT_EQ(sc.k[i], tape.k[i]) << i;
  }
}

// The activation rows the training tests run: dynamic int8 per token, and static fp8 per tensor
// with the given scale.
std::array<ActQuant, 2> ActRows(float static_scale) {
  std::array<ActQuant, 2> rows;
  rows[0].scheme = *ParseActScheme("int8-token");
  rows[1].scheme = *ParseActScheme("fp8-tensor");
  rows[1].scale = static_scale;
  return rows;
}

// With activation quantization (W8A8-style schemes) the forward is still the inference walk, and
// each linear's weight gradient is taken at its input as quantized: for the down projection
// (nothing quantized after it, so the loss is smooth in its weights) the gradient is central
// differences' and equals doutᵀ · QuantizeActivationsRef(its input), which differs from the
// product with the unquantized input by more than the tolerance.
TEST(TrainBlock, ActivationQuantizedLinearsTakeTheirWeightGradientAtTheQuantizedInput) {
  for (const ActQuant& act : ActRows(0.01f)) {
    SCOPED_TRACE(act.scheme->name);
    const int64_t t = 7;
    SmallBlock b = MakeSmallBlock(t, 0, 40);
    const model::ModelConfig& c = b.c;
    for (const model::LinearId id : model::kBlockLinears) b.layer[id].act = act;
    std::vector<float> x0 = testing::RandomNormal(size_t(t * c.hidden), 41);
    const std::vector<float> r = testing::RandomNormal(x0.size(), 42);
    train::BlockTape tape(c, t);
    train::ForwardBlock(c, b.layer, 0, Own(b.layer), x0.data(), b.cos.data(), b.sin.data(), tape);
    {
      model::WalkScratch sc(c, t);
      std::vector<float> x = x0;
      const model::KvSlot kv = sc.Slot(b.cos.data(), b.sin.data());
      model::WalkBlock(c, b.layer, 0, sc.Buffers(x.data()), t, {&kv, 1});
      for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], tape.x[i]) << i;
    }
    std::array<std::vector<float>, 7> dw;
    std::array<float*, 7> dwp{};
    for (size_t i = 0; i < 7; ++i) {
      dw[i].assign(b.layer[model::kBlockLinears[i]].weight.size(), 0.0f);
      dwp[i] = dw[i].data();
    }
    train::BackwardScratch scratch(c, t);
    train::BackwardBlock(c, b.layer, Own(b.layer), tape, x0.data(), r.data(), b.cos.data(),
                         b.sin.data(), dwp, nullptr, scratch);
    model::Linear& down = b.layer.down;
    const std::vector<float>& got = dw[size_t(model::LinearId::kDown)];
    std::vector<float> gq(tape.g.size());
    QuantizeActivationsRef(act, tape.g.data(), gq.data(), t, down.k);
    double worst = 0, quantization = 0, scale = 0;
    for (int64_t n = 0; n < down.n; ++n)
      for (int64_t k = 0; k < down.k; ++k) {
        double want = 0, plain = 0;
        for (int64_t i = 0; i < t; ++i) {
          want += double(r[size_t(i * c.hidden + n)]) * gq[size_t(i * down.k + k)];
          plain += double(r[size_t(i * c.hidden + n)]) * tape.g[size_t(i * down.k + k)];
        }
        worst = std::max(worst, std::abs(want - got[size_t(n * down.k + k)]));
        quantization = std::max(quantization, std::abs(want - plain));
        scale = std::max(scale, std::abs(want));
      }
    EXPECT_LT(worst, 1e-5 * scale);
    EXPECT_GT(quantization, 1e-3 * scale);  // the check can tell the two inputs apart
    std::vector<float> w(down.weight.begin(), down.weight.end());
    auto loss_w = [&] {
      down.weight.assign(w.begin(), w.end());
      train::ForwardBlock(c, b.layer, 0, Own(b.layer), x0.data(), b.cos.data(), b.sin.data(), tape);
      return Dot(r, tape.x);
    };
    CheckGradient(w, got, loss_w, "down", 1e-2f, 5);
  }
}

TEST(TrainBlock, BackwardMatchesFiniteDifferences) {
  // Llama without and with a sliding window; Qwen3's q/k norms.
  for (const auto& [window, qk_norm] :
       {std::pair<int64_t, bool>{0, false}, {4, false}, {0, true}}) {
    SCOPED_TRACE(window);
    SCOPED_TRACE(qk_norm);
    const int64_t t = 7;
    SmallBlock b = MakeSmallBlock(t, window, 30, qk_norm);
    const model::ModelConfig& c = b.c;
    std::vector<float> x0 = testing::RandomNormal(size_t(t * c.hidden), 31);
    const std::vector<float> r = testing::RandomNormal(x0.size(), 32);
    train::BlockTape tape(c, t);
    auto loss = [&] {
      train::ForwardBlock(c, b.layer, 0, Own(b.layer), x0.data(), b.cos.data(), b.sin.data(), tape);
      return Dot(r, tape.x);
    };
    loss();
    std::array<std::vector<float>, 7> dw;
    std::array<float*, 7> dwp{};
    for (size_t i = 0; i < 7; ++i) {
      dw[i].assign(b.layer[model::kBlockLinears[i]].weight.size(), 0.0f);
      dwp[i] = dw[i].data();
    }
    std::vector<float> dx0(x0.size());
    std::vector<float> dattn_norm(size_t(c.hidden), 0.0f), dffn_norm(dattn_norm);
    train::BackwardScratch scratch(c, t);
    train::BackwardBlock(c, b.layer, Own(b.layer), tape, x0.data(), r.data(), b.cos.data(),
                         b.sin.data(), dwp, dx0.data(), scratch,
                         {dattn_norm.data(), dffn_norm.data()});
    {  // without dx0 (the first block) the norms' gradients are the same
      std::vector<float> a2(dattn_norm.size(), 0.0f), f2(a2);
      std::array<float*, 7> none{};
      train::BackwardBlock(c, b.layer, Own(b.layer), tape, x0.data(), r.data(), b.cos.data(),
                           b.sin.data(), none, nullptr, scratch, {a2.data(), f2.data()});
      EXPECT_EQ(a2, dattn_norm);
      EXPECT_EQ(f2, dffn_norm);
    }
    CheckGradient(x0, dx0, loss, "block dx0", 1e-2f, 3);
    CheckGradient(b.layer.attn_norm, dattn_norm, loss, "attn_norm", 1e-2f, 3);
    CheckGradient(b.layer.ffn_norm, dffn_norm, loss, "ffn_norm", 1e-2f, 3);
    const char* names[] = {"q", "k", "v", "o", "gate", "up", "down"};
    for (size_t i = 0; i < 7; ++i) {
      model::Linear& L = b.layer[model::kBlockLinears[i]];
      std::vector<float> w(L.weight.begin(), L.weight.end());
      auto loss_w = [&] {
        L.weight.assign(w.begin(), w.end());
        return loss();
      };
      CheckGradient(w, dw[i], loss_w, names[i], 1e-2f, 5);
      L.weight.assign(w.begin(), w.end());
    }
  }
}

TEST(Qat, FakeQuantizeStartsAtTheRoundingAndFreezesToIt) {
  for (const char* name :
       {"int4-g32-asym", "int2-g32-asym", "int3-channel-sym", "int4-tensor-asym", "int8-g32-sym"}) {
    SCOPED_TRACE(name);
    auto scheme = ParseScheme(name);
    ASSERT_TRUE(scheme.ok());
    const int64_t n = 6, k = 64;
    const std::vector<float> w = testing::RandomNormal(size_t(n * k), 40, 0.05f);
    auto q = Quantize(w, n, k, *scheme);
    ASSERT_TRUE(q.ok());
    auto deq = Dequantize(*q);
    ASSERT_TRUE(deq.ok());
    auto ql = methods::QatLinear::Init(*q, w);
    ASSERT_TRUE(ql.ok());
    std::vector<float> fq(w.size());
    ql->FakeQuantize(fq.data());
    for (size_t i = 0; i < fq.size(); ++i) ASSERT_EQ(fq[i], (*deq)[i]) << i;
    // Move the state, then Freeze must give codes whose dequantization is the fake quantization.
    for (float& s : ql->s) s *= 1.07f;
    for (float& z : ql->z) z += 0.6f;
    ql->FakeQuantize(fq.data());
    const QuantizedTensor frozen = ql->Freeze();
    ASSERT_TRUE(Validate(frozen).ok());
    auto deq2 = Dequantize(frozen);
    ASSERT_TRUE(deq2.ok());
    for (size_t i = 0; i < fq.size(); ++i) ASSERT_EQ(fq[i], (*deq2)[i]) << i;
  }
}

TEST(Qat, StraightThroughGradients) {
  // One row of int2 asym (codes 0..3), scale 0.1, zero 1: values below, inside and above the grid.
  const std::vector<float> w = {0.26f, -0.9f, 0.05f, 0.12f};
  auto q = Quantize(w, 1, 4, *ParseScheme("int2-channel-asym"));
  ASSERT_TRUE(q.ok());
  auto ql = methods::QatLinear::Init(*q, w);
  ASSERT_TRUE(ql.ok());
  ql->s = {0.1f};
  ql->z = {1.0f};
  const std::vector<float> g = {1, 2, 3, 4};
  std::vector<float> dw(4), ds(1), dz(1);
  ql->Backward(g.data(), dw.data(), ds.data(), dz.data());
  // ds = Σ dŵ · (code − zero) at the codes held: ∂(s · (code − zero))/∂s.
  // 0.26: code 2.6→3+1 = 4 clamps to 3: dw 0, ds (3 − 1)·1, dz −0.1·1.
  // −0.9: code −9+1 clamps to 0: dw 0, ds (0 − 1)·2, dz −0.1·2.
  // 0.05: rne(0.5) = 0, code 1 inside: dw 3, ds 0·3. 0.12: rne(1.2) = 1, code 2: dw 4, ds 1·4.
  EXPECT_EQ(dw, (std::vector<float>{0, 0, 3, 4}));
  EXPECT_NEAR(ds[0], 2.0 - 2.0 + 0.0 + 4.0, 1e-5);
  EXPECT_NEAR(dz[0], -0.3, 1e-6);
  std::vector<float> fq(4);
  ql->FakeQuantize(fq.data());
  EXPECT_FLOAT_EQ(fq[0], 0.2f);   // (3 − 1)·0.1
  EXPECT_FLOAT_EQ(fq[1], -0.1f);  // (0 − 1)·0.1
  EXPECT_FLOAT_EQ(fq[2], 0.0f);
  EXPECT_FLOAT_EQ(fq[3], 0.1f);
}

// Several rows and parameter sets of every granularity: each weight's gradient reaches the set
// that covers it (QuantizedTensor::ParamIndex, independent of the trainer's span loops): ds[p] =
// Σ dŵ · (code − zero) over the set's weights at the frozen codes, dz[p] = −s · Σ dŵ over its
// clamped weights, dw = dŵ inside the grid and 0 where the code clamps. A row range leaves the
// other rows' entries alone.
TEST(Qat, ScaleAndZeroGradientsSumEachParameterSet) {
  for (const char* name : {"int4-g32-asym", "int2-g32-asym", "int3-channel-asym",
                           "int2-tensor-asym", "int8-g32-sym"}) {
    SCOPED_TRACE(name);
    const int64_t n = 5, k = 64;
    const std::vector<float> w = testing::RandomNormal(size_t(n * k), 41, 0.05f);
    auto q = Quantize(w, n, k, *ParseScheme(name));
    ASSERT_TRUE(q.ok());
    auto ql = methods::QatLinear::Init(*q, w);
    ASSERT_TRUE(ql.ok());
    for (size_t p = 0; p < ql->s.size(); ++p) ql->s[p] *= 0.8f + 0.1f * float(p % 5);  // clamps
    for (float& z : ql->z) z += 0.4f;
    const QuantizedTensor f = ql->Freeze();
    const std::vector<float> g =
        testing::RandomNormal(w.size(), 42, 1.0f, 2.0f);  // nonzero (mean 2)
    std::vector<double> ds(ql->s.size()), dz(ql->s.size());
    std::vector<float> dw_ref(w.size());
    const float maxq = float(f.scheme.MaxCode());
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        const size_t i = size_t(r * k + c), p = size_t(f.ParamIndex(r, c));
        const float zero = f.Params(r, c).zero;
        ds[p] += double(g[i]) * (double(f.codes[i]) - zero);
        const float raw = std::nearbyint(w[i] / ql->s[p]) + zero;
        const bool clamped = raw < 0.0f || raw > maxq;
        if (clamped && !f.scheme.symmetric) dz[p] -= double(g[i]) * ql->s[p];
        dw_ref[i] = clamped ? 0.0f : g[i];
      }
    std::vector<float> dw(w.size(), -1.0f), gs(ql->s.size(), -1.0f), gz(ql->z.size(), -1.0f);
    ql->Backward(g.data(), dw.data(), gs.data(), gz.data());
    EXPECT_EQ(dw, dw_ref);
    int64_t clamped = 0;
    for (size_t i = 0; i < dw.size(); ++i) clamped += dw_ref[i] == 0.0f;
    if (std::string(name) != "int8-g32-sym") {
      EXPECT_GT(clamped, 0) << "no weight clamps";
    }
    for (size_t p = 0; p < ds.size(); ++p) {
      EXPECT_NEAR(gs[p], ds[p], 1e-4 * (1 + std::fabs(ds[p]))) << p;
      EXPECT_NEAR(gz[p], dz[p], 1e-4 * (1 + std::fabs(dz[p]))) << p;
    }
    if (!ql->RowsOwnParams()) continue;
    // Rows [2, 4) only: their entries as above, the others untouched.
    std::vector<float> dw2(w.size(), -1.0f), gs2(gs.size(), -1.0f), gz2(gz.size(), -1.0f);
    ql->Backward(g.data(), dw2.data(), gs2.data(), gz2.data(), 2, 4);
    const auto [p0, p1] = ql->ParamsOfRows(2, 4);
    for (size_t i = 0; i < dw2.size(); ++i)
      EXPECT_EQ(dw2[i], i >= size_t(2 * k) && i < size_t(4 * k) ? dw[i] : -1.0f) << i;
    for (int64_t p = 0; p < int64_t(gs2.size()); ++p) {
      const bool in = p >= p0 && p < p1;
      EXPECT_EQ(gs2[size_t(p)], in ? gs[size_t(p)] : -1.0f) << p;
      EXPECT_EQ(gz2[size_t(p)], in ? gz[size_t(p)] : -1.0f) << p;
    }
  }
}

// The end-to-end pass at frozen codes (scales only): CodeLevels gives code − zero of each weight
// and ScaleGradients ds[p] = Σ dŵ · level over the weights of set p (both checked against
// QuantizedTensor::Params / ParamIndex per weight). Large enough (80 x 1024) for the row loop to
// run on several threads; the same bits on 1 and 2 threads; a row range writes its own sets only.
TEST(Qat, FrozenCodeScaleGradientsSumEachParameterSet) {
  for (const char* name : {"int2-g64-asym", "int3-g128-asym", "int4-channel-asym",
                           "int8-tensor-sym", "int4-g32-sym"}) {
    SCOPED_TRACE(name);
    const int64_t n = 80, k = 1024;
    const std::vector<float> w = testing::RandomNormal(size_t(n * k), 43, 0.05f);
    auto q = Quantize(w, n, k, *ParseScheme(name));
    ASSERT_TRUE(q.ok());
    const std::vector<float> level = methods::CodeLevels(*q);
    const std::vector<float> g = testing::RandomNormal(w.size(), 44, 1.0f, 2.0f);
    std::vector<double> ref(q->scales.size());
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        const size_t i = size_t(r * k + c);
        ASSERT_EQ(level[i], float(q->codes[i]) - q->Params(r, c).zero) << i;
        ref[size_t(q->ParamIndex(r, c))] += double(g[i]) * level[i];
      }
    std::vector<float> ds1(ref.size(), -1.0f), ds2(ref.size(), -1.0f);
    const int before = omp_get_max_threads();
    omp_set_num_threads(1);
    methods::ScaleGradients(*q, level, g.data(), 0, n, ds1.data());
    omp_set_num_threads(2);
    methods::ScaleGradients(*q, level, g.data(), 0, n, ds2.data());
    omp_set_num_threads(before);
    EXPECT_EQ(ds1, ds2);
    for (size_t p = 0; p < ref.size(); ++p)
      EXPECT_NEAR(ds1[p], ref[p], 1e-5 * (1 + std::fabs(ref[p]))) << p;
    if (q->scheme.granularity == Granularity::kTensor) continue;
    std::vector<float> part(ref.size(), -1.0f);
    methods::ScaleGradients(*q, level, g.data(), 30, 50, part.data());
    const int64_t per = int64_t(ref.size()) / n;
    for (int64_t p = 0; p < int64_t(ref.size()); ++p)
      EXPECT_EQ(part[size_t(p)], p >= 30 * per && p < 50 * per ? ds1[size_t(p)] : -1.0f) << p;
  }
}

// Block-AP on the small block: int2 starting from RTN, targets the fp block's outputs.
struct QatRun {
  methods::QatBlockReport rep;
  std::vector<QuantizedTensor> frozen;
  double hand_start = 0;  // the starting rounding's held-out loss, computed here
  std::vector<float> attn_norm, ffn_norm, start_attn_norm, start_ffn_norm;
};

// act: the activation quantization every linear applies to its input (the targets are the fp
// block's, without it).
QatRun RunQat(int threads, methods::BlockLoss loss = methods::BlockLoss::kRelative, int epochs = 4,
              bool norms = false, const ActQuant& act = {}) {
  const int64_t S = 17, T = 16;
  SmallBlock b = MakeSmallBlock(T, 0, 50);
  const model::ModelConfig& c = b.c;
  std::vector<float> inputs = testing::RandomNormal(size_t(S * T * c.hidden), 51);
  // Tokens of very different norms (as a residual stream has): every fifth 20 times larger.
  for (int64_t t = 0; t < S * T; t += 5)
    for (int64_t h = 0; h < c.hidden; ++h) inputs[size_t(t * c.hidden + h)] *= 20.0f;
  std::vector<float> targets(inputs.size());
  train::BlockTape tape(c, T);
  for (int64_t s = 0; s < S; ++s) {
    train::ForwardBlock(c, b.layer, 0, Own(b.layer), inputs.data() + s * T * c.hidden, b.cos.data(),
                        b.sin.data(), tape);
    std::copy(tape.x.begin(), tape.x.end(), targets.begin() + s * T * c.hidden);
  }
  for (const model::LinearId id : model::kBlockLinears) b.layer[id].act = act;
  const QuantScheme scheme = *ParseScheme("int2-g32-asym");
  std::vector<methods::QatLinear> ql;
  for (size_t i = 0; i < 7; ++i) {
    const model::Linear& L = b.layer[model::kBlockLinears[i]];
    auto q = Quantize(L.weight, L.n, L.k, scheme);
    EXPECT_TRUE(q.ok());
    auto one = methods::QatLinear::Init(*q, L.weight);
    EXPECT_TRUE(one.ok());
    ql.push_back(std::move(*one));
  }
  std::array<methods::QatLinear*, 7> train{};
  for (size_t i = 0; i < 7; ++i) train[i] = &ql[i];
  methods::QatOptions opt;
  opt.epochs = epochs;
  opt.batch = 2;
  opt.lr = 0.02;
  opt.lr_q = 2e-3;
  opt.block_loss = loss;
  opt.block_norms = norms;
  QatRun run;
  run.start_attn_norm = b.layer.attn_norm;
  run.start_ffn_norm = b.layer.ffn_norm;
  // The loss of the starting rounding on the held-out windows (15, 16), by hand: the mean over
  // elements of the squared error, each token's weighted by 1 / the mean square of its target.
  {
    std::array<model::Linear, 7> fq;
    train::BlockLinears lin = Own(b.layer);
    for (size_t i = 0; i < 7; ++i) {
      fq[i] = b.layer[model::kBlockLinears[i]];
      ql[i].FakeQuantize(fq[i].weight.data());
      lin[i] = &fq[i];
    }
    const int64_t H = c.hidden;
    double total = 0;
    for (int64_t s = 15; s < S; ++s) {
      train::ForwardBlock(c, b.layer, 0, lin, inputs.data() + s * T * H, b.cos.data(), b.sin.data(),
                          tape);
      for (int64_t t = 0; t < T; ++t) {
        const float* y = targets.data() + (s * T + t) * H;
        double ms = 0, e = 0;
        for (int64_t h = 0; h < H; ++h) {
          ms += double(y[h]) * y[h];
          const double d = double(tape.x[size_t(t * H + h)]) - y[h];
          e += d * d;
        }
        total += loss == methods::BlockLoss::kRelative ? e / (ms / double(H)) : e;
      }
    }
    run.hand_start = total / double(2 * T * H);
  }
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto rep = methods::TrainBlock(c, b.layer, 0, train, inputs.data(), targets.data(), S, T,
                                 b.cos.data(), b.sin.data(), opt);
  omp_set_num_threads(before);
  EXPECT_TRUE(rep.ok()) << rep.error().message();
  run.rep = *rep;
  for (auto& q : ql) run.frozen.push_back(q.Freeze());
  run.attn_norm = b.layer.attn_norm;
  run.ffn_norm = b.layer.ffn_norm;
  return run;
}

// --block-norms: the block's two input norms train too (in place); the training loss ends below
// the linears-only training's from the same start (this small block overfits its 15 windows
// either way: the held-out loss is only required to fall); the same on 1 and 2 threads.
TEST(Qat, BlockNormTrainingMovesTheNormsAndBeatsLinearsOnly) {
  const QatRun plain = RunQat(1), one = RunQat(1, methods::BlockLoss::kRelative, 4, true),
               two = RunQat(2, methods::BlockLoss::kRelative, 4, true);
  EXPECT_FALSE(plain.rep.norms);
  EXPECT_EQ(plain.attn_norm, plain.start_attn_norm);
  EXPECT_EQ(plain.ffn_norm, plain.start_ffn_norm);
  EXPECT_TRUE(one.rep.norms);
  EXPECT_FALSE(one.rep.reverted);
  EXPECT_EQ(one.rep.loss_start, plain.rep.loss_start);
  EXPECT_LT(one.rep.loss_end, one.rep.loss_start);
  EXPECT_LT(one.rep.epoch_loss.back(), plain.rep.epoch_loss.back());  // more to fit with
  EXPECT_NE(one.attn_norm, one.start_attn_norm);
  EXPECT_NE(one.ffn_norm, one.start_ffn_norm);
  EXPECT_EQ(one.rep.loss_end, two.rep.loss_end);
  EXPECT_EQ(one.attn_norm, two.attn_norm);
  EXPECT_EQ(one.ffn_norm, two.ffn_norm);
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(one.frozen[i].codes, two.frozen[i].codes) << i;
}

TEST(Qat, BlockTrainingLowersTheOutputErrorAndIsThreadCountInvariant) {
  const QatRun one = RunQat(1), two = RunQat(2);
  EXPECT_FALSE(one.rep.reverted);
  EXPECT_EQ(one.rep.steps, 4 * 8);  // 15 training windows (two held out) in batches of 2
  ASSERT_EQ(one.rep.epoch_loss.size(), 4u);
  EXPECT_LT(one.rep.epoch_loss.back(), 0.8 * one.rep.epoch_loss.front());
  EXPECT_LT(one.rep.loss_end, 0.9 * one.rep.loss_start)  // on the held-out windows
      << "start " << one.rep.loss_start << " end " << one.rep.loss_end;
  EXPECT_EQ(one.rep.loss_end, two.rep.loss_end);
  for (size_t i = 0; i < 7; ++i) {
    EXPECT_EQ(one.frozen[i].codes, two.frozen[i].codes) << i;
    EXPECT_EQ(one.frozen[i].scales, two.frozen[i].scales) << i;
    EXPECT_EQ(one.frozen[i].zeros, two.frozen[i].zeros) << i;
  }
}

// W8A8-style schemes: every linear quantizes its input in the training forward as inference
// does (the report's starting loss is the hand-computed one, which runs the linears with their
// activation quantization, and differs from the weight-only start); training lowers the loss
// and is thread-count invariant, for a dynamic int8 row and a static fp8 one.
TEST(Qat, BlockTrainingRunsTheActivationQuantizationAndLowersTheError) {
  const QatRun plain = RunQat(1, methods::BlockLoss::kRelative, 0);
  // A coarse static scale: an input near 1 moves by up to 0.05 (E4M3 steps of 2 at 20).
  for (const ActQuant& act : ActRows(0.05f)) {
    SCOPED_TRACE(act.scheme->name);
    const QatRun zero = RunQat(1, methods::BlockLoss::kRelative, 0, false, act);
    EXPECT_NEAR(zero.rep.loss_start, zero.hand_start, 1e-9 * zero.hand_start);
    EXPECT_NE(zero.rep.loss_start, plain.rep.loss_start);
    const QatRun one = RunQat(1, methods::BlockLoss::kRelative, 4, false, act),
                 two = RunQat(2, methods::BlockLoss::kRelative, 4, false, act);
    EXPECT_EQ(one.rep.loss_start, zero.rep.loss_start);
    EXPECT_FALSE(one.rep.reverted);
    EXPECT_LT(one.rep.loss_end, 0.9 * one.rep.loss_start);
    EXPECT_EQ(one.rep.loss_end, two.rep.loss_end);
    for (size_t i = 0; i < 7; ++i) EXPECT_EQ(one.frozen[i].codes, two.frozen[i].codes) << i;
  }
}

// Each block loss is what the report says (the starting rounding's, computed by hand), and
// training lowers that loss; the two losses weigh the tokens differently, so they train to
// different codes.
TEST(Qat, BlockLossIsTheChosenOneAndTrainingLowersIt) {
  for (const auto loss : {methods::BlockLoss::kMse, methods::BlockLoss::kRelative}) {
    const QatRun zero = RunQat(1, loss, 0);
    EXPECT_EQ(zero.rep.steps, 0);
    EXPECT_NEAR(zero.rep.loss_start, zero.hand_start, 1e-9 * zero.hand_start);
    const QatRun run = RunQat(1, loss);
    EXPECT_EQ(run.rep.loss_start, zero.rep.loss_start);
    EXPECT_FALSE(run.rep.reverted);
    EXPECT_LT(run.rep.loss_end, 0.9 * run.rep.loss_start) << int(loss);
  }
  const QatRun mse = RunQat(1, methods::BlockLoss::kMse),
               rel = RunQat(1, methods::BlockLoss::kRelative);
  EXPECT_NE(mse.rep.loss_start, rel.rep.loss_start);
  bool differ = false;
  for (size_t i = 0; i < 7; ++i) differ |= mse.frozen[i].codes != rel.frozen[i].codes;
  EXPECT_TRUE(differ);
}

}  // namespace
}  // namespace qf

namespace qf {
namespace {

// End-to-end scale tuning on a two-block model of the small blocks: the held-out next-token
// loss ends at or below its start, training lowers it, and 1 and 2 threads give the same scales.
struct E2eRun {
  methods::QatE2eReport rep;
  std::vector<std::vector<float>> scales;
  std::vector<std::vector<float>> norms, start_norms;  // both blocks' two, then the final norm
  std::vector<std::vector<uint8_t>> codes, start_codes;
};

E2eRun RunE2e(int threads, bool weights = false,
              methods::E2eLoss loss = methods::E2eLoss::kNextToken, bool norms = false,
              bool final_norm = false) {
  const int64_t T = 16, S = 17;
  SmallBlock b0 = MakeSmallBlock(T, 0, 60), b1 = MakeSmallBlock(T, 0, 61);
  model::ModelConfig c = b0.c;
  c.layers = 2;
  c.vocab_size = 24;
  std::vector<model::Layer> layers = {b0.layer, b1.layer};
  const std::vector<model::Layer> fp = layers;  // the KL loss's reference
  const std::vector<float> embed = testing::RandomNormal(size_t(c.vocab_size * c.hidden), 62);
  std::vector<float> norm = testing::RandomNormal(size_t(c.hidden), 63, 0.1f, 1.0f);
  model::Linear head;
  head.n = c.vocab_size;
  head.k = c.hidden;
  const std::vector<float> hw = testing::RandomNormal(size_t(c.vocab_size * c.hidden), 64, 0.3f);
  head.weight.assign(hw.begin(), hw.end());
  // Token windows with structure to learn: each next token is a function of the current one.
  std::vector<std::vector<int32_t>> windows(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) {
    int32_t tok = int32_t(s % c.vocab_size);
    for (int64_t t = 0; t < T; ++t) {
      windows[size_t(s)].push_back(tok);
      tok = int32_t((tok * 5 + 3) % c.vocab_size);
    }
  }
  const QuantScheme scheme = *ParseScheme("int3-g32-asym");
  std::vector<std::unique_ptr<QuantizedTensor>> owned;
  std::vector<std::array<QuantizedTensor*, 7>> tensors(2);
  for (size_t l = 0; l < 2; ++l)
    for (size_t i = 0; i < 7; ++i) {
      model::Linear& L = layers[l][model::kBlockLinears[i]];
      auto q = Quantize(L.weight, L.n, L.k, scheme);
      EXPECT_TRUE(q.ok());
      owned.push_back(std::make_unique<QuantizedTensor>(std::move(*q)));
      tensors[l][i] = owned.back().get();
    }
  E2eRun run;
  for (const auto& q : owned) run.start_codes.push_back(q->codes);
  auto all_norms = [&] {
    return std::vector<std::vector<float>>{layers[0].attn_norm, layers[0].ffn_norm,
                                           layers[1].attn_norm, layers[1].ffn_norm, norm};
  };
  run.start_norms = all_norms();
  methods::QatOptions opt;
  opt.epochs = 3;
  opt.batch = 2;
  opt.lr_q = 0.02;
  opt.lr = 0.05;
  opt.e2e_weights = weights;
  opt.e2e_loss = loss;
  opt.e2e_norms = norms;
  opt.e2e_final_norm = final_norm;
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto rep = methods::TuneScalesEndToEnd(c, layers, tensors, embed, norm, head, windows,
                                         b0.cos.data(), b0.sin.data(), opt, {}, &fp);
  omp_set_num_threads(before);
  EXPECT_TRUE(rep.ok()) << rep.error().message();
  run.rep = *rep;
  run.norms = all_norms();
  for (const auto& q : owned) {
    run.scales.push_back(q->scales);
    run.codes.push_back(q->codes);
  }
  // The layers run the tuned scales: their weights are the tensors' dequantized values.
  for (size_t l = 0; l < 2; ++l)
    for (size_t i = 0; i < 7; ++i) {
      auto deq = Dequantize(*tensors[l][i]);
      const model::Linear& L = layers[l][model::kBlockLinears[i]];
      EXPECT_TRUE(std::equal(deq->begin(), deq->end(), L.weight.begin())) << l << " " << i;
    }
  return run;
}

TEST(Qat, EndToEndScaleTuningLowersTheLossAndIsThreadCountInvariant) {
  const E2eRun one = RunE2e(1), two = RunE2e(2);
  EXPECT_EQ(one.rep.steps, 3 * 8);
  EXPECT_FALSE(one.rep.reverted);
  EXPECT_LT(one.rep.loss_end, one.rep.loss_start);
  const auto& sl = one.rep.step_loss;
  double first = 0, last = 0;
  for (size_t i = 0; i < 4; ++i) first += sl[i], last += sl[sl.size() - 1 - i];
  EXPECT_LT(last, first) << "training did not lower the loss";
  EXPECT_EQ(one.rep.loss_end, two.rep.loss_end);
  EXPECT_EQ(one.scales, two.scales);
  EXPECT_EQ(one.codes, one.start_codes);  // scales only: the codes stay
  EXPECT_EQ(one.norms, one.start_norms);  // and the norms
  EXPECT_FALSE(one.rep.norms);
}

// --e2e-norms: every block's input norms train too (in place; --e2e-final-norm adds the final
// norm), the loss ends below the scales-only tuning's from the same start (next-token loss and
// KL), and the result does not depend on the thread count.
TEST(Qat, EndToEndNormTrainingMovesTheNormsAndBeatsScalesOnly) {
  for (const auto loss : {methods::E2eLoss::kNextToken, methods::E2eLoss::kKlToFp}) {
    SCOPED_TRACE(int(loss));
    const E2eRun scales = RunE2e(1, false, loss), one = RunE2e(1, false, loss, true),
                 two = RunE2e(2, false, loss, true), fin = RunE2e(1, false, loss, true, true),
                 fin2 = RunE2e(2, false, loss, true, true);
    EXPECT_TRUE(one.rep.norms);
    EXPECT_FALSE(one.rep.final_norm);
    EXPECT_FALSE(one.rep.reverted);
    EXPECT_DOUBLE_EQ(one.rep.loss_start, scales.rep.loss_start);
    EXPECT_LT(one.rep.loss_end, scales.rep.loss_end);
    ASSERT_EQ(one.norms.size(), 5u);  // both blocks' two, then the final norm
    for (size_t i = 0; i < 4; ++i) EXPECT_NE(one.norms[i], one.start_norms[i]) << i;
    EXPECT_EQ(one.norms[4], one.start_norms[4]);
    EXPECT_EQ(one.codes, one.start_codes);
    EXPECT_EQ(one.rep.loss_end, two.rep.loss_end);
    EXPECT_EQ(one.norms, two.norms);
    EXPECT_EQ(one.scales, two.scales);
    EXPECT_TRUE(fin.rep.final_norm);
    EXPECT_FALSE(fin.rep.reverted);
    for (size_t i = 0; i < 5; ++i) EXPECT_NE(fin.norms[i], fin.start_norms[i]) << i;
    EXPECT_EQ(fin.norms, fin2.norms);
    EXPECT_EQ(fin.scales, fin2.scales);
  }
}

// --e2e-weights: the latent weights train too, so codes move, the loss ends below the
// scales-only tuning's from the same start, the layers run the frozen codes, and the result
// does not depend on the thread count.
TEST(Qat, EndToEndWeightTrainingMovesCodesAndBeatsScalesOnly) {
  const E2eRun scales = RunE2e(1), one = RunE2e(1, true), two = RunE2e(2, true);
  EXPECT_EQ(one.rep.steps, 3 * 8);
  EXPECT_FALSE(one.rep.reverted);
  EXPECT_DOUBLE_EQ(one.rep.loss_start, scales.rep.loss_start);
  EXPECT_LT(one.rep.loss_end, scales.rep.loss_end);
  EXPECT_NE(one.codes, one.start_codes);
  EXPECT_EQ(one.rep.loss_end, two.rep.loss_end);
  EXPECT_EQ(one.codes, two.codes);
  EXPECT_EQ(one.scales, two.scales);
}

// --e2e-loss kl: the loss is the KL divergence from the fp model (positive at the start, lower
// at the end, both on the held-out window), the same on 1 and 2 threads.
// --e2e-loss ce+kl: the next-token loss plus the KL to the fp model on the same positions, so it
// starts above the next-token loss alone (KL > 0 for a quantized model); training lowers it, to
// scales neither loss alone reaches, the same on 1 and 2 threads.
TEST(Qat, EndToEndMixedLossAddsTheKlAndIsThreadCountInvariant) {
  const E2eRun ce = RunE2e(1), kl = RunE2e(1, false, methods::E2eLoss::kKlToFp),
               one = RunE2e(1, false, methods::E2eLoss::kNextTokenAndKl),
               two = RunE2e(2, false, methods::E2eLoss::kNextTokenAndKl);
  EXPECT_EQ(one.rep.loss, methods::E2eLoss::kNextTokenAndKl);
  EXPECT_GT(one.rep.loss_start, ce.rep.loss_start);
  EXPECT_LT(one.rep.loss_start, ce.rep.loss_start + 2 * kl.rep.loss_start);
  EXPECT_FALSE(one.rep.reverted);
  EXPECT_LT(one.rep.loss_end, one.rep.loss_start);
  EXPECT_NE(one.scales, ce.scales);
  EXPECT_NE(one.scales, kl.scales);
  EXPECT_EQ(one.rep.loss_end, two.rep.loss_end);
  EXPECT_EQ(one.scales, two.scales);
}

TEST(Qat, EndToEndKlToTheFpModelLowersItAndIsThreadCountInvariant) {
  const E2eRun one = RunE2e(1, false, methods::E2eLoss::kKlToFp),
               two = RunE2e(2, false, methods::E2eLoss::kKlToFp);
  EXPECT_EQ(one.rep.loss, methods::E2eLoss::kKlToFp);
  EXPECT_GT(one.rep.loss_start, 0.0);
  EXPECT_FALSE(one.rep.reverted);
  EXPECT_LT(one.rep.loss_end, one.rep.loss_start);
  EXPECT_EQ(one.rep.loss_end, two.rep.loss_end);
  EXPECT_EQ(one.scales, two.scales);
}

}  // namespace
}  // namespace qf
