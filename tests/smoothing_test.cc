// SmoothQuant / AWQ transforms: folding scales leaves the block's fp output unchanged (before
// any rounding), the scale formulas, AWQ's Hessian loss equals the explicit output error, and
// the channel observer's statistics.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "formats/quantize.h"
#include "io/safetensors.h"
#include "methods/observer.h"
#include "methods/smoothing.h"
#include "model/decoder_walk.h"
#include "model/model.h"
#include "test_util.h"

namespace qf::methods {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Runs layer 0 of the bundled model on `m` random residual rows.
std::vector<float> RunBlock(const model::ModelConfig& c, const model::Layer& L,
                            const std::vector<float>& x0, int64_t m) {
  std::vector<float> x = x0, h(x.size()), q(static_cast<size_t>(m * c.q_dim())),
                     att(static_cast<size_t>(m * c.q_dim())),
                     g(static_cast<size_t>(m * c.intermediate)),
                     u(static_cast<size_t>(m * c.intermediate)),
                     kc(static_cast<size_t>(m * c.kv_dim())),
                     vc(static_cast<size_t>(m * c.kv_dim())), cos, sin;
  model::RopeTables(c, m, &cos, &sin);
  const model::BlockBuffers b{x.data(), h.data(), q.data(), att.data(),
                              h.data(), h.data(), g.data(), u.data()};
  const model::KvSlot kv{kc.data(), vc.data(), cos.data(), sin.data(), 0};
  model::WalkBlock(c, L, 0, b, m, {&kv, 1});
  return x;
}

double MaxRelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - b[i]));
    den = std::max(den, std::fabs(double(a[i])));
  }
  return num / den;
}

TEST(Smoothing, FoldingLeavesTheBlockOutputUnchanged) {
  const auto dir = qf::testing::BundledModel();
  auto cfg = model::LoadHfConfig(dir);
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  auto store = io::TensorStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.error().message();
  auto layer = model::ReadLayer(*store, *cfg, 0, nullptr);
  ASSERT_TRUE(layer.ok()) << layer.error().message();
  const int64_t m = 24, H = cfg->hidden, F = cfg->intermediate;
  const std::vector<float> x = Random(static_cast<size_t>(m * H), 1, -2.0f, 2.0f);
  const std::vector<float> before = RunBlock(*cfg, *layer, x, m);

  for (const DType storage : {DType::kF32, DType::kBF16}) {
    model::Layer L = *layer;
    const auto s_attn = Random(static_cast<size_t>(H), 2, 0.25f, 4.0f);
    const auto s_mlp = Random(static_cast<size_t>(H), 3, 0.25f, 4.0f);
    const auto s_down = Random(static_cast<size_t>(F), 4, 0.25f, 4.0f);
    model::Linear* attn[] = {&L.q, &L.k, &L.v};
    model::Linear* mlp[] = {&L.gate, &L.up};
    model::Linear* down[] = {&L.down};
    FoldIntoNorm(L.attn_norm, attn, s_attn, storage);
    FoldIntoNorm(L.ffn_norm, mlp, s_mlp, storage);
    FoldIntoRows(L.up, down, s_down);
    if (storage == DType::kBF16) {
      for (float v : L.attn_norm) EXPECT_EQ(v, BF16ToF32(Bf16BitsRne(v)));
    }
    EXPECT_NE(L.attn_norm, layer->attn_norm);
    EXPECT_NE(L.down.weight, layer->down.weight);
    const std::vector<float> after = RunBlock(*cfg, L, x, m);
    EXPECT_LT(MaxRelDiff(before, after), 2e-5) << Name(storage);
  }
}

TEST(Smoothing, SmoothQuantScalesFollowTheFormula) {
  ChannelObserver obs(3);
  const float x[] = {1.0f, -4.0f, 0.0f, -2.0f, 1.0f, 0.0f};  // max |x_j| = 2, 4, 0
  obs.Add(x, 2);
  model::Linear a, b;
  a.n = 1, a.k = 3, a.weight = {0.5f, -1.0f, 0.0f};
  b.n = 1, b.k = 3, b.weight = {-0.25f, 2.0f, 0.0f};
  const model::Linear* next[] = {&a, &b};
  const auto s = SmoothQuantScales(obs, next, 0.5);
  EXPECT_FLOAT_EQ(s[0], std::sqrt(2.0f) / std::sqrt(0.5f));
  EXPECT_FLOAT_EQ(s[1], std::sqrt(4.0f) / std::sqrt(2.0f));
  EXPECT_FLOAT_EQ(s[2], 1.0f);  // both clamped at 1e-5
  const auto s1 = SmoothQuantScales(obs, next, 1.0);
  EXPECT_FLOAT_EQ(s1[1], 4.0f);
}

TEST(Smoothing, ChannelObserverStatistics) {
  const int64_t k = 5, m = 130;
  const auto x = Random(static_cast<size_t>(m * k), 7);
  ChannelObserver obs(k);
  obs.Add(x.data(), 100);
  obs.Add(x.data() + 100 * k, m - 100);
  EXPECT_EQ(obs.rows(), m);
  const auto mean_abs = obs.MeanAbs(), mean_sq = obs.MeanSquare();
  float tmax = 0;
  for (int64_t j = 0; j < k; ++j) {
    double a = 0, q = 0;
    float mx = 0;
    for (int64_t i = 0; i < m; ++i) {
      const float v = x[i * k + j];
      a += std::fabs(v), q += double(v) * v, mx = std::max(mx, std::fabs(v));
    }
    EXPECT_NEAR(mean_abs[j], a / m, 1e-6);
    EXPECT_NEAR(mean_sq[j], q / m, 1e-6);
    EXPECT_EQ(obs.absmax()[j], mx);
    tmax = std::max(tmax, mx);
  }
  EXPECT_EQ(obs.tensor_absmax(), tmax);
}

// The loss AWQ minimises equals the explicit output error (2/M)·‖(Ŵ − W) Xᵀ‖² of its scales,
// it never exceeds plain RTN's, and with outlier channels scaling helps.
TEST(Smoothing, AwqLossIsTheOutputError) {
  const int64_t m = 512, k = 256, n = 64;
  std::vector<float> x = Random(static_cast<size_t>(m * k), 11);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; j += 17) x[i * k + j] *= 30.0f;  // salient input channels
  ChannelObserver obs(k);
  obs.Add(x.data(), m);
  HessianAccumulator h(k);
  h.Add(x.data(), m);
  model::Linear lin;
  lin.n = n, lin.k = k;
  const std::vector<float> w = Random(static_cast<size_t>(n * k), 12);
  lin.weight.assign(w.begin(), w.end());
  const model::Linear* next[] = {&lin};
  const QuantScheme scheme = *ParseScheme("int3-g128-asym");
  auto r = AwqScales(obs, h, next, scheme);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_LE(r->loss, r->loss_plain);
  EXPECT_LT(r->loss, 0.8 * r->loss_plain);
  // Explicit output error of the chosen scales.
  std::vector<float> ws = w;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) ws[i * k + j] *= r->scales[j];
  auto fq = QuantizeDequantize(ws, n, k, scheme);
  ASSERT_TRUE(fq.ok());
  double err = 0;
  for (int64_t t = 0; t < m; ++t)
    for (int64_t i = 0; i < n; ++i) {
      double d = 0;
      for (int64_t j = 0; j < k; ++j)
        d += (double(fq->weights[i * k + j]) / r->scales[j] - lin.weight[i * k + j]) * x[t * k + j];
      err += d * d;
    }
  err *= 2.0 / double(m);
  EXPECT_NEAR(r->loss, err, 1e-3 * err);
}

TEST(Smoothing, AwqRejectsMismatchedShapes) {
  ChannelObserver obs(8);
  HessianAccumulator h(8);
  model::Linear lin;
  lin.n = 2, lin.k = 4, lin.weight.assign(8, 1.0f);
  const model::Linear* next[] = {&lin};
  EXPECT_FALSE(AwqScales(obs, h, next, *ParseScheme("int4-g128-asym")).ok());
}

}  // namespace
}  // namespace qf::methods
