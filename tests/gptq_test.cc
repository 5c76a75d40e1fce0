// GPTQ and Hessian tests: RTN equality where H has no off-diagonal terms, agreement with an
// unblocked fp64 OBS reference, the loss identity, quality vs RTN, edge cases, determinism.
#include "methods/gptq.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "formats/quantize.h"
#include "kernels/ops.h"
#include "methods/hessian.h"

namespace qf {
namespace {

using methods::ActOrder;
using methods::Gptq;
using methods::GptqGgml;
using methods::GptqOptions;
using methods::GptqStats;
using methods::HessianAccumulator;

constexpr uint32_t kSeed = 20240611;

QuantScheme Scheme(std::string_view spec) {
  auto s = ParseScheme(spec);
  QF_CHECK(s.ok(), "{}", s.ok() ? "" : s.error().message());
  return *s;
}

const char* OrderName(ActOrder o) {
  return o == ActOrder::kOff ? "off" : o == ActOrder::kDescending ? "desc" : "gar";
}

// Gaussian weights with a few outliers, like a real linear layer.
std::vector<float> RandomWeights(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(static_cast<size_t>(n * k));
  for (float& x : w) x = normal(rng);
  for (size_t i = 0; i < w.size(); i += 97) w[i] *= 8.0f;
  return w;
}

// Correlated inputs X[M, K] = Z Bᵀ diag(s): Z standard normal, B a fixed random mixing,
// s = exp(spread · normal) per column (spread 0: equal scales). `mix_seed` fixes B and s, so
// calibration and held-out sets share a distribution.
std::vector<float> CorrelatedInputs(int64_t m, int64_t k, uint32_t mix_seed, uint32_t seed,
                                    float spread) {
  std::mt19937 mix_rng(mix_seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> b(static_cast<size_t>(k * k));
  for (float& x : b) x = normal(mix_rng) / std::sqrt(static_cast<float>(k));
  for (int64_t i = 0; i < k; ++i) b[static_cast<size_t>(i * k + i)] += 0.3f;
  std::vector<float> s(static_cast<size_t>(k));
  for (float& x : s) x = std::exp(spread * normal(mix_rng));
  std::mt19937 rng(seed);
  std::vector<float> z(static_cast<size_t>(m * k));
  for (float& x : z) x = normal(rng);
  std::vector<float> out(z.size());
  kernels::MatMulNT(z.data(), b.data(), nullptr, out.data(), m, k, k);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < k; ++c)
      out[static_cast<size_t>(r * k + c)] *= s[static_cast<size_t>(c)];
  }
  return out;
}

HessianAccumulator HessianOf(const std::vector<float>& x, int64_t k) {
  HessianAccumulator h(k);
  h.Add(x.data(), static_cast<int64_t>(x.size()) / k);
  return h;
}

// Mean over tokens of ‖x (W − Ŵ)ᵀ‖²: the layer-output error GPTQ minimises.
double OutputError(const std::vector<float>& x, const std::vector<float>& w,
                   const std::vector<float>& wq, int64_t n, int64_t k) {
  const int64_t m = static_cast<int64_t>(x.size()) / k;
  std::vector<float> d(w.size());
  for (size_t i = 0; i < w.size(); ++i) d[i] = w[i] - wq[i];
  std::vector<float> y(static_cast<size_t>(m * n));
  kernels::MatMulNT(x.data(), d.data(), nullptr, y.data(), m, n, k);
  double total = 0.0;
  for (float v : y) total += static_cast<double>(v) * v;
  return total / static_cast<double>(m);
}

std::vector<float> Dequant(const Result<QuantizedTensor>& q) {
  QF_CHECK(q.ok(), "{}", q.ok() ? "" : q.error().message());
  auto d = Dequantize(*q);
  QF_CHECK(d.ok(), "{}", d.ok() ? "" : d.error().message());
  return *d;
}

// ------------------------------------------------------------------ fp64 reference

// Unblocked GPTQ in fp64 in its OBS form: the explicit inverse (Gauss-Jordan), each column's
// error spread over all later columns, then column c eliminated from the inverse. No
// Cholesky, no lazy blocks. Dynamic groups are fitted on the current W when the sweep reaches
// a group start in sweep order: with kDescending that is the GPTQ authors' act-order with
// g_idx (groups of sweep positions), which qforge's QuantizedTensor cannot store.
struct Reference {
  std::vector<float> wq;       // [n, k] dequantized, original order
  std::vector<uint8_t> codes;  // [n, k]
  double loss = 0;
};

std::vector<int64_t> ReferenceOrder(const std::vector<double>& diag, ActOrder order, int64_t g) {
  const auto k = static_cast<int64_t>(diag.size());
  std::vector<int64_t> perm(static_cast<size_t>(k));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  auto desc = [&](int64_t a, int64_t b) { return diag[a] > diag[b]; };
  if (order == ActOrder::kDescending) std::stable_sort(perm.begin(), perm.end(), desc);
  if (order == ActOrder::kGroupAware) {
    std::vector<std::pair<double, int64_t>> groups;  // (-max diag, group)
    for (int64_t j = 0; j < k / g; ++j) {
      double mx = diag[j * g];
      for (int64_t c = j * g; c < (j + 1) * g; ++c) mx = std::max(mx, diag[c]);
      groups.push_back({-mx, j});
    }
    std::stable_sort(groups.begin(), groups.end(),
                     [](auto a, auto b) { return a.first < b.first; });
    perm.clear();
    for (auto [score, j] : groups) {
      std::vector<int64_t> cols(static_cast<size_t>(g));
      std::iota(cols.begin(), cols.end(), j * g);
      std::stable_sort(cols.begin(), cols.end(), desc);
      perm.insert(perm.end(), cols.begin(), cols.end());
    }
  }
  return perm;
}

Reference ReferenceGptq(const std::vector<float>& w, int64_t n, int64_t k,
                        const std::vector<double>& h_in, const QuantScheme& scheme, ActOrder order,
                        bool static_groups, double damp) {
  const Grid grid(scheme);
  const bool grouped = scheme.granularity == Granularity::kGroup;
  const int64_t g = ColumnsPerParam(scheme, k);
  std::vector<GroupParams> cur(static_cast<size_t>(n));
  if (!grouped) grid.Fit(w.data(), n, k, 0, k, cur);
  std::vector<double> h = h_in;
  std::vector<double> wd(w.begin(), w.end());
  for (int64_t i = 0; i < k; ++i) {
    if (h[i * k + i] != 0.0) continue;
    h[i * k + i] = 1.0;
    for (int64_t r = 0; r < n; ++r) wd[r * k + i] = 0.0;
  }
  std::vector<GroupParams> fixed(static_cast<size_t>(n * (k / g)));
  if (grouped && static_groups) {
    std::vector<float> wf(wd.begin(), wd.end());
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < k / g; ++j) {
        grid.Fit(wf.data() + r * k, 1, k, j * g, (j + 1) * g, {&fixed[r * (k / g) + j], 1});
      }
    }
  }
  std::vector<double> diag(static_cast<size_t>(k));
  double mean = 0.0;
  for (int64_t i = 0; i < k; ++i) mean += diag[i] = h[i * k + i];
  mean /= static_cast<double>(k);
  const std::vector<int64_t> perm = ReferenceOrder(diag, order, g);
  // Gauss-Jordan inverse of the permuted, damped H (SPD: no pivoting needed).
  std::vector<double> a(static_cast<size_t>(k * k)), inv(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) a[i * k + j] = h[perm[i] * k + perm[j]];
    a[i * k + i] += damp * mean;
    inv[i * k + i] = 1.0;
  }
  for (int64_t c = 0; c < k; ++c) {
    const double piv = a[c * k + c];
    for (int64_t j = 0; j < k; ++j) a[c * k + j] /= piv, inv[c * k + j] /= piv;
    for (int64_t i = 0; i < k; ++i) {
      if (i == c) continue;
      const double f = a[i * k + c];
      for (int64_t j = 0; j < k; ++j)
        a[i * k + j] -= f * a[c * k + j], inv[i * k + j] -= f * inv[c * k + j];
    }
  }
  Reference ref;
  ref.wq.assign(w.size(), 0.0f);
  ref.codes.assign(w.size(), 0);
  for (int64_t c = 0; c < k; ++c) {
    const int64_t col = perm[c];
    const double hcc = inv[c * k + c];
    for (int64_t r = 0; r < n; ++r) {
      double* row = wd.data() + r * k;  // original column order; sweep through perm
      GroupParams p = cur[r];
      if (grouped && static_groups) p = fixed[r * (k / g) + col / g];
      if (grouped && !static_groups && c % g == 0) {
        std::vector<float> vals(static_cast<size_t>(g));
        for (int64_t j = 0; j < g; ++j) vals[j] = static_cast<float>(row[perm[c + j]]);
        grid.Fit(vals.data(), 1, g, 0, g, {&cur[r], 1});
        p = cur[r];
      }
      const uint8_t code = grid.Encode(static_cast<float>(row[col]), p);
      const double q = grid.Decode(code, p);
      ref.codes[r * k + col] = code;
      const double e = (row[col] - q) / hcc;
      ref.loss += (row[col] - q) * (row[col] - q) / hcc / 2.0;
      for (int64_t j = c + 1; j < k; ++j) row[perm[j]] -= e * inv[c * k + j];
      ref.wq[r * k + col] = static_cast<float>(q);
    }
    for (int64_t i = c + 1; i < k; ++i) {
      const double f = inv[i * k + c] / hcc;
      for (int64_t j = c + 1; j < k; ++j) inv[i * k + j] -= f * inv[c * k + j];
    }
  }
  return ref;
}

// ------------------------------------------------------------------ Hessian

TEST(Hessian, AverageEqualsDirectSum) {
  const int64_t k = 40;
  const int64_t sizes[] = {1, 7, 300, HessianAccumulator::kChunkRows + 123, 0, 50};
  std::mt19937 rng(kSeed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  HessianAccumulator h(k), first(k), second(k);
  std::vector<float> all;
  int64_t m_total = 0, batch = 0;
  for (int64_t m : sizes) {
    std::vector<float> x(static_cast<size_t>(m * k));
    for (float& v : x) v = normal(rng) * 3.0f + 0.5f;
    h.Add(x.data(), m);
    (batch++ % 2 == 0 ? first : second).Add(x.data(), m);
    all.insert(all.end(), x.begin(), x.end());
    m_total += m;
  }
  ASSERT_EQ(h.samples(), m_total);
  first.Merge(second);
  ASSERT_EQ(first.samples(), m_total);
  // Direct (2/n) XᵀX in fp64. Each chunk is summed in fp32 over at most kChunkRows terms, so
  // |error| <= (2/n) Σ|x_i x_j| · kChunkRows · 2⁻²⁴ (recursive-summation bound), plus fp64.
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      double sum = 0.0, abs_sum = 0.0;
      for (int64_t r = 0; r < m_total; ++r) {
        const double p = static_cast<double>(all[r * k + i]) * all[r * k + j];
        sum += p;
        abs_sum += std::fabs(p);
      }
      const double want = 2.0 * sum / m_total;
      const double tol = 2.0 * abs_sum / m_total * HessianAccumulator::kChunkRows * 0x1p-24;
      const double got = h.matrix()[i * k + j], merged = first.matrix()[i * k + j];
      ASSERT_NEAR(got, want, tol) << "H[" << i << "," << j << "] seed " << kSeed;
      ASSERT_NEAR(merged, want, tol) << "merged H[" << i << "," << j << "] seed " << kSeed;
      ASSERT_EQ(got, h.matrix()[j * k + i]) << "asymmetric at " << i << "," << j;
    }
  }
}

// The sum over chunks is kept in double-double, so accumulators that saw a contiguous split of
// the same Add calls (the ranks of a data-parallel run), merged in order, give H bit for bit as
// one that saw them all; so does an interleaved split. Rows of very different scales make the
// chunk sums' rounding order matter in plain fp64.
TEST(Hessian, SplitAndMergedIsTheWholeBitForBit) {
  const int64_t k = 24;
  std::mt19937 rng(kSeed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> calls;
  for (int c = 0; c < 12; ++c) {
    std::vector<float> x(static_cast<size_t>((20 + 7 * c) * k));
    const float scale = std::ldexp(1.0f, (c * 7) % 23 - 11);  // 2^-11 .. 2^11
    for (float& v : x) v = normal(rng) * scale;
    calls.push_back(std::move(x));
  }
  HessianAccumulator whole(k);
  for (const auto& x : calls) whole.Add(x.data(), int64_t(x.size()) / k);
  for (size_t cut : {size_t(1), size_t(5), size_t(11)}) {
    HessianAccumulator a(k), b(k), even(k), odd(k);
    for (size_t c = 0; c < calls.size(); ++c) {
      (c < cut ? a : b).Add(calls[c].data(), int64_t(calls[c].size()) / k);
      (c % 2 ? odd : even).Add(calls[c].data(), int64_t(calls[c].size()) / k);
    }
    a.Merge(b);
    even.Merge(odd);
    ASSERT_EQ(a.samples(), whole.samples());
    EXPECT_TRUE(a.matrix() == whole.matrix()) << "cut after " << cut;
    EXPECT_TRUE(even.matrix() == whole.matrix()) << "interleaved";
  }
}

// ------------------------------------------------------------------ RTN equivalence

// With H diagonal nothing is fed forward (U is diagonal), so GPTQ must reproduce RTN exactly,
// in any sweep order. X = diag(d) · 8 gives an exactly diagonal H.
TEST(Gptq, DiagonalHessianEqualsRtn) {
  const int64_t n = 48, k = 256;
  const char* specs[] = {"int4-g128-sym",     "int4-g128-asym",   "int8-channel-sym",
                         "int3-channel-asym", "fp8-e4m3-channel", "int4-tensor-asym",
                         "int2-g32-asym"};
  const std::vector<float> w = RandomWeights(n, k, kSeed);
  std::vector<float> importance(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) importance[i] = 1.0f + static_cast<float>((i * 37) % 11);
  for (bool unit : {true, false}) {
    std::vector<float> x(static_cast<size_t>(k * k), 0.0f);
    for (int64_t i = 0; i < k; ++i) x[i * k + i] = unit ? 8.0f : static_cast<float>(1 + i % 7);
    const HessianAccumulator h = HessianOf(x, k);
    for (const char* spec : specs) {
      for (ActOrder order : {ActOrder::kOff, ActOrder::kDescending, ActOrder::kGroupAware}) {
        for (int clip = 0; clip < 3; ++clip) {  // none, clip search, clip with importance
          GptqOptions opt;
          opt.act_order = order;
          if (clip > 0) opt.fit.clip = ClipSearch::Rtn();
          if (clip > 1) opt.fit.importance = importance;
          auto rtn = Quantize(w, n, k, Scheme(spec), opt.fit);
          auto q = Gptq(w, n, k, h, Scheme(spec), opt);
          ASSERT_TRUE(q.ok()) << q.error().message();
          ASSERT_TRUE(rtn.ok());
          const std::string what =
              fmt::format("{} order {} clip {} unit {}", spec, OrderName(order), clip, unit);
          ASSERT_EQ(q->scheme.name, rtn->scheme.name) << what;
          ASSERT_EQ(q->scales, rtn->scales) << what;
          ASSERT_EQ(q->zeros, rtn->zeros) << what;
          for (size_t i = 0; i < q->codes.size(); ++i) {
            ASSERT_EQ(q->codes[i], rtn->codes[i])
                << what << " at [" << i / k << ", " << i % k << "] w " << w[i] << " seed " << kSeed;
          }
        }
      }
    }
  }
}

// ------------------------------------------------------------------ reference agreement

struct Case {
  const char* spec;
  ActOrder order;
  bool static_groups;
  int64_t block;
};

// The blocked fp32 solver against the unblocked fp64 OBS reference: the same objective must
// come out (loss within 0.5%) and almost all codes agree. Codes can differ where fp32 and fp64
// land on opposite sides of a rounding boundary (or a dynamically fitted scale moves by an
// ulp); each such flip changes the rest of its row, so the allowance is per row: at least 90%
// of rows with identical codes.
TEST(Gptq, MatchesUnblockedReference) {
  const int64_t n = 64, k = 256, m = 4096;
  const std::vector<float> w = RandomWeights(n, k, kSeed + 1);
  const std::vector<float> x = CorrelatedInputs(m, k, kSeed, kSeed + 2, 0.5f);
  const HessianAccumulator h = HessianOf(x, k);
  const Case cases[] = {
      {"int4-g128-asym", ActOrder::kOff, false, 128},
      {"int4-g128-asym", ActOrder::kOff, false, 48},
      {"int4-g32-sym", ActOrder::kOff, false, 128},
      {"int3-channel-sym", ActOrder::kOff, false, 32},
      {"int4-g64-asym", ActOrder::kOff, true, 128},
      {"int4-g64-asym", ActOrder::kDescending, true, 128},
      {"int4-g64-asym", ActOrder::kGroupAware, false, 128},
      {"int4-g64-asym", ActOrder::kGroupAware, true, 100},
      {"int3-channel-asym", ActOrder::kDescending, false, 128},
      {"fp8-e4m3-channel", ActOrder::kOff, false, 128},
      {"int2-tensor-asym", ActOrder::kOff, false, 128},
  };
  for (const Case& c : cases) {
    GptqOptions opt;
    opt.act_order = c.order;
    opt.static_groups = c.static_groups;
    opt.block_size = c.block;
    GptqStats stats;
    auto got = Gptq(w, n, k, h, Scheme(c.spec), opt, &stats);
    ASSERT_TRUE(got.ok()) << got.error().message();
    const Reference ref = ReferenceGptq(w, n, k, h.matrix(), Scheme(c.spec), c.order,
                                        c.static_groups || c.order == ActOrder::kDescending, 0.01);
    int64_t rows_same = 0, first_bad = -1;
    for (int64_t r = 0; r < n; ++r) {
      bool same = true;
      for (int64_t j = 0; j < k; ++j) same &= got->codes[r * k + j] == ref.codes[r * k + j];
      rows_same += same;
      if (!same && first_bad < 0) first_bad = r;
    }
    const std::string what = fmt::format("{} order {} static {} block {}", c.spec,
                                         OrderName(c.order), c.static_groups, c.block);
    std::printf("%-44s loss %.6g ref %.6g, rows identical %lld/%lld\n", what.c_str(), stats.loss,
                ref.loss, static_cast<long long>(rows_same), static_cast<long long>(n));
    EXPECT_NEAR(stats.loss, ref.loss, 5e-3 * ref.loss) << what << " seed " << kSeed;
    EXPECT_GE(rows_same, n * 9 / 10)
        << what << ": first differing row " << first_bad << " seed " << kSeed;
  }
}

// GPTQ's loss telescopes: the sum of per-column losses is ½ Σ_rows ΔW (H + λI) ΔWᵀ of the
// final result. Would fail if any error-feedback step (in-block or lazy sgemm) were wrong.
TEST(Gptq, LossEqualsFinalObjective) {
  const int64_t n = 96, k = 384, m = 4096;
  const std::vector<float> w = RandomWeights(n, k, kSeed + 3);
  const std::vector<float> x = CorrelatedInputs(m, k, kSeed + 4, kSeed + 5, 1.0f);
  const HessianAccumulator h = HessianOf(x, k);
  double mean = 0.0;
  for (int64_t i = 0; i < k; ++i) mean += h.matrix()[i * k + i] / k;
  for (const char* spec : {"int4-g128-asym", "int3-channel-sym", "int2-g64-asym"}) {
    for (ActOrder order : {ActOrder::kOff, ActOrder::kDescending, ActOrder::kGroupAware}) {
      GptqOptions opt;
      opt.act_order = order;
      GptqStats stats;
      const std::vector<float> wq = Dequant(Gptq(w, n, k, h, Scheme(spec), opt, &stats));
      double objective = 0.0;
      std::vector<double> d(static_cast<size_t>(k));
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t j = 0; j < k; ++j) d[j] = static_cast<double>(w[r * k + j]) - wq[r * k + j];
        for (int64_t i = 0; i < k; ++i) {
          double hd = 0.01 * mean * d[i];
          for (int64_t j = 0; j < k; ++j) hd += h.matrix()[i * k + j] * d[j];
          objective += 0.5 * d[i] * hd;
        }
      }
      // fp32 sweep: relative error ~ k · 2⁻²⁴ per update chain, far under 1e-3.
      EXPECT_NEAR(stats.loss, objective, 1e-3 * objective)
          << spec << " order " << OrderName(order) << " seed " << kSeed;
    }
  }
}

// ------------------------------------------------------------------ quality vs RTN

struct Quality {
  double rtn = 0, off = 0, off_static = 0, desc = 0, gar = 0;
};

Quality Measure(const char* spec, float spread, uint32_t seed) {
  const int64_t n = 128, k = 512, m = 8192;
  const std::vector<float> w = RandomWeights(n, k, seed);
  const std::vector<float> x = CorrelatedInputs(m, k, seed + 1, seed + 2, spread);
  const std::vector<float> held = CorrelatedInputs(m / 2, k, seed + 1, seed + 3, spread);
  const HessianAccumulator h = HessianOf(x, k);
  Quality qy;
  qy.rtn = OutputError(held, w, Dequant(Quantize(w, n, k, Scheme(spec))), n, k);
  auto run = [&](ActOrder order, bool static_groups) {
    GptqOptions opt;
    opt.act_order = order;
    opt.static_groups = static_groups;
    return OutputError(held, w, Dequant(Gptq(w, n, k, h, Scheme(spec), opt)), n, k);
  };
  qy.off = run(ActOrder::kOff, false);
  qy.off_static = run(ActOrder::kOff, true);
  qy.desc = run(ActOrder::kDescending, false);
  qy.gar = run(ActOrder::kGroupAware, false);
  std::printf(
      "%-16s spread %.1f held-out output error: rtn %.4g | gptq %.4g (%.2fx) static "
      "%.4g (%.2fx) | act-order desc %.4g (%.2fx) gar %.4g (%.2fx)\n",
      spec, spread, qy.rtn, qy.off, qy.rtn / qy.off, qy.off_static, qy.rtn / qy.off_static, qy.desc,
      qy.rtn / qy.desc, qy.gar, qy.rtn / qy.gar);
  return qy;
}

// On correlated inputs GPTQ must beat RTN clearly (held-out tokens, so no credit for
// overfitting). Margin 0.8: on this data GPTQ removes 30-70% of RTN's error. Exception, not
// asserted: int2 with dynamic groups (the reference default) is no better than RTN here, as the
// fp64 reference also gives: the fed-back error widens each later group's min-max range, and at
// 4 levels that costs more than the feedback saves. Static groups and act-order do not have it.
TEST(Gptq, BeatsRtnOnCorrelatedInputs) {
  for (const char* spec : {"int4-g128-sym", "int3-channel-sym", "int2-g64-asym"}) {
    const Quality q = Measure(spec, 0.5f, kSeed + 10);
    const bool int2 = std::string_view(spec).starts_with("int2");
    if (!int2) {
      EXPECT_LT(q.off, 0.8 * q.rtn) << spec << " seed " << kSeed + 10;
    }
    EXPECT_LT(q.off_static, 0.8 * q.rtn) << spec << " seed " << kSeed + 10;
    EXPECT_LT(q.desc, 0.8 * q.rtn) << spec << " seed " << kSeed + 10;
    if (!int2) {
      EXPECT_LT(q.gar, 0.8 * q.rtn) << spec << " seed " << kSeed + 10;
    }
  }
}

// ------------------------------------------------------------------ ggml block grids

std::vector<float> DequantGgml(const GgmlBlockType& t, const std::vector<std::byte>& q, int64_t n,
                               int64_t k) {
  std::vector<float> out(static_cast<size_t>(n * k));
  QF_CHECK(DequantizeRowsGgml(t, q.data(), n, k, out.data()).ok(), "dequantize");
  return out;
}

// With an identity Hessian no error is fed forward, so every block is fitted on the original
// weights with unit importance, exactly as the type's own encoder fits it, and each weight is
// rounded to the nearest value of that block: the headers equal the encoder's and the squared
// error is no larger, block by block.
TEST(GptqGgml, IdentityHessianKeepsTheEncodersFitAndRoundsToNearest) {
  const int64_t n = 8, k = 512;
  const std::vector<float> w = RandomWeights(n, k, kSeed + 40);
  std::vector<double> h(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i) h[static_cast<size_t>(i * k + i)] = 1.0;
  const std::vector<float> ones(static_cast<size_t>(k), 1.0f);
  for (const GgmlBlockType& t : GgmlBlockTypes()) {
    if (!t.codes) continue;
    SCOPED_TRACE(std::string(t.name));
    GptqOptions opt;
    opt.damp = 0.0;
    auto g = GptqGgml(w, n, k, h, t, {}, opt);
    ASSERT_TRUE(g.ok()) << g.error().message();
    // The encoder on each block alone (legacy types take sigma2 over the row they are given).
    const int64_t rows = n * k / t.block;
    std::vector<std::byte> ref(static_cast<size_t>(rows) * t.block_bytes);
    ASSERT_TRUE(QuantizeRowsGgml(t, w.data(), rows, t.block, ones.data(), ref.data()).ok());
    const std::vector<float> dg = DequantGgml(t, *g, n, k), dr = DequantGgml(t, ref, n, k);
    std::vector<GgmlLattice> lg(static_cast<size_t>(t.block)), lr(lg.size());
    for (int64_t b = 0; b < rows; ++b) {
      t.codes->lattice(g->data() + b * t.block_bytes, lg.data());
      t.codes->lattice(ref.data() + b * t.block_bytes, lr.data());
      double eg = 0, er = 0;
      for (int64_t i = 0; i < t.block; ++i) {
        ASSERT_EQ(lg[size_t(i)].scale, lr[size_t(i)].scale) << "block " << b;
        ASSERT_EQ(lg[size_t(i)].offset, lr[size_t(i)].offset) << "block " << b;
        const size_t at = static_cast<size_t>(b * t.block + i);
        eg += double(dg[at] - w[at]) * (dg[at] - w[at]);
        er += double(dr[at] - w[at]) * (dr[at] - w[at]);
      }
      EXPECT_LE(eg, er * (1 + 1e-6)) << "block " << b;
    }
  }
}

// On correlated inputs the block-grid GPTQ must lower the held-out output error clearly against
// the encoder alone, given the same importance (diag H, what an importance matrix holds).
TEST(GptqGgml, BeatsTheImportanceWeightedEncoderOnCorrelatedInputs) {
  const int64_t n = 64, k = 512, m = 8192;
  const std::vector<float> w = RandomWeights(n, k, kSeed + 41);
  const std::vector<float> x = CorrelatedInputs(m, k, kSeed + 42, kSeed + 43, 0.5f);
  const std::vector<float> held = CorrelatedInputs(m / 2, k, kSeed + 42, kSeed + 44, 0.5f);
  const HessianAccumulator h = HessianOf(x, k);
  std::vector<float> diag(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) diag[size_t(i)] = float(h.matrix()[size_t(i * k + i)]);
  for (const char* name : {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q8_0", "IQ4_XS"}) {
    const GgmlBlockType& t = *FindGgmlBlockType(name);
    std::vector<std::byte> plain(GgmlRowsBytes(t, n, k).value());
    ASSERT_TRUE(QuantizeRowsGgml(t, w.data(), n, k, diag.data(), plain.data()).ok());
    auto g = GptqGgml(w, n, k, std::span<const double>(h.matrix()), t);
    ASSERT_TRUE(g.ok()) << g.error().message();
    const double e_plain = OutputError(held, w, DequantGgml(t, plain, n, k), n, k);
    const double e_gptq = OutputError(held, w, DequantGgml(t, *g, n, k), n, k);
    std::printf("%-6s held-out output error: encoder+importance %.4g | gptq %.4g (%.2fx)\n", name,
                e_plain, e_gptq, e_plain / e_gptq);
    EXPECT_LT(e_gptq, 0.8 * e_plain) << name;
  }
}

TEST(GptqGgml, BadInputsAreErrors) {
  const int64_t n = 4, k = 256;
  const std::vector<float> w = RandomWeights(n, k, kSeed);
  std::vector<double> h(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i) h[static_cast<size_t>(i * k + i)] = 1.0;
  EXPECT_FALSE(GptqGgml(w, n, k, h, *FindGgmlBlockType("Q8_K")).ok());  // activation type
  const std::vector<float> w2 = RandomWeights(n, 96, kSeed);
  std::vector<double> h2(96 * 96, 0.0);
  for (int64_t i = 0; i < 96; ++i) h2[static_cast<size_t>(i * 96 + i)] = 1.0;
  EXPECT_FALSE(GptqGgml(w2, n, 96, h2, *FindGgmlBlockType("Q4_K")).ok());  // 96 % 256
  GptqOptions ao;
  ao.act_order = ActOrder::kDescending;
  EXPECT_FALSE(GptqGgml(w, n, k, h, *FindGgmlBlockType("Q4_K"), {}, ao).ok());
  const std::vector<float> short_imp(10, 1.0f);
  EXPECT_FALSE(GptqGgml(w, n, k, h, *FindGgmlBlockType("Q4_K"), short_imp).ok());
}

// With very unequal input scales, quantizing the large columns first (act-order) must not be
// worse than the original order; 2% slack for sampling noise of the held-out set.
TEST(Gptq, ActOrderNotWorseWithUnequalColumnScales) {
  for (const char* spec : {"int4-g128-asym", "int3-channel-sym", "int2-g64-asym"}) {
    const Quality q = Measure(spec, 1.5f, kSeed + 20);
    EXPECT_LE(q.desc, 1.02 * q.off) << spec << " seed " << kSeed + 20;
    EXPECT_LE(q.gar, 1.02 * q.off) << spec << " seed " << kSeed + 20;
  }
}

// Act-order with groups, every variant, through the fp64 reference (held-out error printed for
// the report). "authors" is the GPTQ authors' act-order: dynamic groups of sweep positions, with
// g_idx, which qforge's QuantizedTensor cannot store. Asserted: desc with static groups (what
// ActOrder::kDescending does) beats the plain order clearly.
TEST(Gptq, ActOrderGroupVariants) {
  const int64_t n = 96, k = 256, m = 4096;
  for (float spread : {0.5f, 1.5f}) {
    for (const char* spec : {"int4-g128-asym", "int4-g32-sym", "int3-g64-asym", "int2-g64-asym"}) {
      const std::vector<float> w = RandomWeights(n, k, kSeed + 30);
      const std::vector<float> x = CorrelatedInputs(m, k, kSeed + 31, kSeed + 32, spread);
      const std::vector<float> held = CorrelatedInputs(m, k, kSeed + 31, kSeed + 33, spread);
      const HessianAccumulator h = HessianOf(x, k);
      auto err = [&](ActOrder o, bool st) {
        return OutputError(held, w,
                           ReferenceGptq(w, n, k, h.matrix(), Scheme(spec), o, st, 0.01).wq, n, k);
      };
      const double rtn = OutputError(held, w, Dequant(Quantize(w, n, k, Scheme(spec))), n, k);
      const double plain = err(ActOrder::kOff, false),
                   desc_static = err(ActOrder::kDescending, true);
      std::printf(
          "%-15s spread %.1f: rtn %.4g | plain dyn %.4g static %.4g | desc+static %.4g"
          " | gar dyn %.4g static %.4g | authors desc+dyn(g_idx) %.4g\n",
          spec, spread, rtn, plain, err(ActOrder::kOff, true), desc_static,
          err(ActOrder::kGroupAware, false), err(ActOrder::kGroupAware, true),
          err(ActOrder::kDescending, false));
      EXPECT_LT(desc_static, 0.85 * plain)
          << spec << " spread " << spread << " seed " << kSeed + 30;
    }
  }
}

// ------------------------------------------------------------------ edge cases

TEST(Gptq, DeadColumnsAndRankDeficientHessian) {
  const int64_t n = 32, k = 128;
  const std::vector<float> w = RandomWeights(n, k, kSeed + 40);
  // Rank-deficient: 40 tokens for 128 inputs; columns 5, 77 and 127 never see a non-zero.
  std::vector<float> x = CorrelatedInputs(40, k, kSeed + 41, kSeed + 42, 0.5f);
  const int64_t dead_cols[] = {5, 77, 127};
  for (int64_t r = 0; r < 40; ++r) {
    for (int64_t c : dead_cols) x[r * k + c] = 0.0f;
  }
  const HessianAccumulator h = HessianOf(x, k);
  for (const char* spec :
       {"int4-g32-asym", "int4-g128-sym", "int3-channel-asym", "fp8-e4m3-channel"}) {
    for (ActOrder order : {ActOrder::kOff, ActOrder::kDescending, ActOrder::kGroupAware}) {
      GptqOptions opt;
      opt.act_order = order;
      GptqStats stats;
      auto q = Gptq(w, n, k, h, Scheme(spec), opt, &stats);
      ASSERT_TRUE(q.ok()) << spec << ": " << q.error().message();
      EXPECT_EQ(stats.dead_columns, 3) << spec;
      EXPECT_EQ(stats.damp, 0.01) << spec;
      EXPECT_TRUE(std::isfinite(stats.loss)) << spec;
      const std::vector<float> wq = Dequant(q);
      for (size_t i = 0; i < wq.size(); ++i) ASSERT_TRUE(std::isfinite(wq[i])) << spec << " " << i;
      for (int64_t r = 0; r < n; ++r) {
        for (int64_t c : dead_cols) {
          ASSERT_EQ(wq[r * k + c], 0.0f) << spec << " order " << OrderName(order) << " [" << r
                                         << ", " << c << "] w " << w[r * k + c];
        }
      }
      // In-sample, GPTQ still fits the 40 tokens better than RTN.
      const double rtn = OutputError(x, w, Dequant(Quantize(w, n, k, Scheme(spec))), n, k);
      EXPECT_LT(OutputError(x, w, wq, n, k), rtn) << spec << " order " << OrderName(order);
    }
  }
}

// Linears that share an input share one FactorHessian (q/k/v, gate/up): each gives the codes
// and parameters of its own Gptq; a factor made for another group or act-order is refused. A
// slice of rows aligned to kGptqRowChunk comes out as those rows of the whole (the row split
// of data-parallel runs).
TEST(Gptq, SharedFactorAndChunkAlignedRowSlices) {
  const int64_t k = 256;
  const std::vector<float> x = CorrelatedInputs(600, k, kSeed + 50, kSeed + 51, 0.7f);
  const HessianAccumulator h = HessianOf(x, k);
  for (ActOrder order : {ActOrder::kOff, ActOrder::kDescending}) {
    GptqOptions opt;
    opt.act_order = order;
    const QuantScheme scheme = Scheme("int4-g64-asym");
    auto f = methods::FactorHessian(h.matrix(), k, 64, opt);
    ASSERT_TRUE(f.ok()) << f.error().message();
    for (int64_t n : {96, 40}) {
      const std::vector<float> w = RandomWeights(n, k, kSeed + 52 + uint64_t(n));
      GptqStats s1, s2;
      auto own = Gptq(w, n, k, h, scheme, opt, &s1);
      auto shared = Gptq(w, n, k, *f, scheme, opt, &s2);
      ASSERT_TRUE(own.ok() && shared.ok());
      EXPECT_EQ(own->codes, shared->codes) << "n " << n << " order " << OrderName(order);
      EXPECT_EQ(own->scales, shared->scales);
      EXPECT_EQ(own->zeros, shared->zeros);
      EXPECT_EQ(s1.loss, s2.loss);
      // Rows [32, 96) of the 96-row linear alone.
      if (n == 96) {
        const int64_t r0 = methods::kGptqRowChunk, rows = n - r0;
        auto part =
            Gptq(std::span<const float>(w).subspan(size_t(r0 * k)), rows, k, *f, scheme, opt);
        ASSERT_TRUE(part.ok());
        EXPECT_TRUE(
            std::equal(part->codes.begin(), part->codes.end(), own->codes.begin() + r0 * k));
        const int64_t sets = k / 64;
        EXPECT_TRUE(
            std::equal(part->scales.begin(), part->scales.end(), own->scales.begin() + r0 * sets));
      }
    }
    GptqOptions other = opt;
    other.act_order = order == ActOrder::kOff ? ActOrder::kDescending : ActOrder::kOff;
    const std::vector<float> w = RandomWeights(8, k, kSeed + 60);
    EXPECT_FALSE(Gptq(w, 8, k, *f, scheme, other).ok());
    EXPECT_FALSE(Gptq(w, 8, k, *f, Scheme("int4-g128-asym"), opt).ok());
  }
}

TEST(Gptq, GroupFallbackReportedLikeRtn) {
  const int64_t n = 16, k = 192;
  const std::vector<float> w = RandomWeights(n, k, kSeed + 50);
  const HessianAccumulator h = HessianOf(CorrelatedInputs(512, k, kSeed + 51, kSeed + 52, 0.5f), k);
  auto q = Gptq(w, n, k, h, Scheme("int4-g128-asym"));
  auto rtn = Quantize(w, n, k, Scheme("int4-g128-asym"));
  ASSERT_TRUE(q.ok() && rtn.ok());
  EXPECT_EQ(q->scheme.name, "int4-channel-asym");
  EXPECT_FALSE(q->fallback.empty());
  EXPECT_EQ(q->fallback, rtn->fallback);
  EXPECT_EQ(q->scales.size(), static_cast<size_t>(n));
  EXPECT_TRUE(Validate(*q).ok());
}

TEST(Gptq, BadInputsAreErrors) {
  const int64_t n = 8, k = 64;
  std::vector<float> w = RandomWeights(n, k, kSeed + 60);
  const HessianAccumulator h = HessianOf(CorrelatedInputs(256, k, kSeed + 61, kSeed + 62, 0.5f), k);
  const QuantScheme s = Scheme("int4-g32-sym");
  auto expect_error = [](const Result<QuantizedTensor>& r, const char* needle) {
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
  };
  expect_error(Gptq(std::span(w).first(100), n, k, h, s), "expected 8 x 64");
  expect_error(Gptq(w, n, k, HessianAccumulator(k), s), "no calibration samples");
  expect_error(Gptq(w, n, k, HessianAccumulator(32), s), "K = 64");
  GptqOptions bad;
  bad.damp = -1;
  expect_error(Gptq(w, n, k, h, s, bad), "damping");
  bad = {};
  bad.block_size = 0;
  expect_error(Gptq(w, n, k, h, s, bad), "block size");
  std::vector<double> hm = h.matrix();
  hm[3 * k + 4] = NAN;
  expect_error(Gptq(w, n, k, hm, s), "Hessian [3, 4]");
  hm = h.matrix();
  for (int64_t i = 0; i < k; ++i) hm[i * k + (i + 1) % k] = hm[i * k + i] * 5.0;  // not PSD
  for (int64_t i = 0; i < k; ++i) hm[((i + 1) % k) * k + i] = hm[i * k + (i + 1) % k];
  expect_error(Gptq(w, n, k, hm, s), "not positive definite");
  w[2 * k + 9] = INFINITY;
  expect_error(Gptq(w, n, k, h, s), "weight [2, 9]");
}

// ------------------------------------------------------------------ threads and speed

TEST(Gptq, SameCodesOnOneAndTwoThreads) {
  const int threads_before = omp_get_max_threads();
  const int64_t shapes[][2] = {{1536, 512}, {512, 1536}};
  for (const auto& shape : shapes) {
    const int64_t n = shape[0], k = shape[1];
    const std::vector<float> w = RandomWeights(n, k, kSeed + 70);
    const std::vector<float> x = CorrelatedInputs(2048, k, kSeed + 71, kSeed + 72, 1.0f);
    for (ActOrder order : {ActOrder::kOff, ActOrder::kDescending}) {
      QuantizedTensor q[2];
      GptqStats stats[2];
      std::vector<double> hm[2];
      for (int t = 0; t < 2; ++t) {
        kernels::SetThreads(t + 1);
        const HessianAccumulator h = HessianOf(x, k);
        hm[t] = h.matrix();
        GptqOptions opt;
        opt.act_order = order;
        auto r = Gptq(w, n, k, h, Scheme("int4-g128-asym"), opt, &stats[t]);
        ASSERT_TRUE(r.ok()) << r.error().message();
        q[t] = std::move(*r);
      }
      const std::string what = fmt::format("{}x{} order {}", n, k, OrderName(order));
      ASSERT_EQ(hm[0], hm[1]) << what << ": Hessian differs";
      ASSERT_EQ(q[0].scales, q[1].scales) << what;
      ASSERT_EQ(q[0].zeros, q[1].zeros) << what;
      ASSERT_EQ(stats[0].loss, stats[1].loss) << what;
      for (size_t i = 0; i < q[0].codes.size(); ++i) {
        ASSERT_EQ(q[0].codes[i], q[1].codes[i]) << what << " at " << i << " seed " << kSeed;
      }
    }
  }
  kernels::SetThreads(threads_before);
}

TEST(Gptq, SpeedPrint) {
  const int threads_before = omp_get_max_threads();
  const int64_t shapes[][2] = {{1536, 512}, {512, 1536}};
  using Clock = std::chrono::steady_clock;
  for (int threads : {1, 2}) {
    kernels::SetThreads(threads);
    for (const auto& shape : shapes) {
      const int64_t n = shape[0], k = shape[1];
      const std::vector<float> w = RandomWeights(n, k, kSeed + 80);
      const std::vector<float> x = CorrelatedInputs(4096, k, kSeed + 81, kSeed + 82, 1.0f);
      auto t0 = Clock::now();
      const HessianAccumulator h = HessianOf(x, k);
      const double t_h = std::chrono::duration<double>(Clock::now() - t0).count();
      for (ActOrder order : {ActOrder::kOff, ActOrder::kDescending}) {
        std::vector<double> times;
        for (int rep = 0; rep < 3; ++rep) {
          GptqOptions opt;
          opt.act_order = order;
          t0 = Clock::now();
          auto q = Gptq(w, n, k, h, Scheme("int4-g128-sym"), opt);
          times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
          ASSERT_TRUE(q.ok());
        }
        std::sort(times.begin(), times.end());
        std::printf(
            "gptq int4-g128 N=%lld K=%lld order %-4s %d thread(s): median %.1f ms, min "
            "%.1f ms (Hessian of 4096 tokens %.1f ms)\n",
            static_cast<long long>(n), static_cast<long long>(k), OrderName(order), threads,
            1e3 * times[1], 1e3 * times[0], 1e3 * t_h);
      }
    }
  }
  kernels::SetThreads(threads_before);
}

}  // namespace
}  // namespace qf
