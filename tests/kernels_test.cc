// Fast fp32 kernels against their plain-loop references, on random inputs with derived
// tolerances (K · eps · |x|·|w| bounds), for awkward sizes.
#include <gtest/gtest.h>

#include <barrier>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>

#include <hwy/targets.h>

#include "core/vec_math.h"
#include "kernels/cpu/cholesky.h"
#include "kernels/cpu/f32_gemm.h"
#include "kernels/ops.h"
#include "kernels/qgemm.h"
#include "test_util.h"

namespace qf::kernels {
namespace {

using testing::ForEachTarget;

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(Kernels, MatMulMatchesReference) {
  SetThreads(2);
  // m <= 2: GemvRows, rows split over the threads; more: sgemm.
  for (auto [m, n, k] :
       {std::tuple{1, 7, 13}, {2, 301, 1000}, {5, 64, 100}, {37, 129, 172}, {64, 512, 512}}) {
    const uint64_t seed = uint64_t(m * 1000 + n);
    auto x = Random(size_t(m * k), seed), w = Random(size_t(n * k), seed + 1),
         b = Random(size_t(n), seed + 2);
    std::vector<float> y(size_t(m * n)), r(size_t(m * n));
    MatMulNT(x.data(), w.data(), b.data(), y.data(), m, n, k);
    MatMulNTRef(x.data(), w.data(), b.data(), r.data(), m, n, k);
    // fp32 accumulation error bound ~ k · eps · sqrt-ish growth; use k · eps · 4 on unit normals.
    const double tol = double(k) * 1.2e-7 * 4.0 * 4.0;
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y[i], r[i], tol)
          << "m=" << m << " n=" << n << " k=" << k << " i=" << i << " seed=" << seed;
  }
}

TEST(Kernels, AttentionMatchesReference) {
  SetThreads(2);
  struct Case {
    int64_t m, pos0, heads, kv_heads, dim, window;
  };
  for (const Case c : {Case{1, 9, 4, 2, 8, 0}, Case{70, 0, 8, 4, 64, 0}, Case{130, 3, 6, 3, 16, 0},
                       Case{100, 0, 4, 1, 8, 17}, Case{1, 40, 2, 2, 8, 5},
                       Case{1, 300, 8, 4, 64, 0}, Case{1, 77, 4, 2, 72, 33}}) {
    const int64_t t = c.pos0 + c.m;
    auto q = Random(size_t(c.m * c.heads * c.dim), 1);
    auto k = Random(size_t(t * c.kv_heads * c.dim), 2);
    auto v = Random(size_t(t * c.kv_heads * c.dim), 3);
    std::vector<float> out(q.size()), ref(q.size());
    Attention(q.data(), k.data(), v.data(), out.data(), c.m, c.pos0, c.heads, c.kv_heads, c.dim,
              c.window);
    AttentionRef(q.data(), k.data(), v.data(), ref.data(), c.m, c.pos0, c.heads, c.kv_heads, c.dim,
                 c.window);
    for (size_t i = 0; i < out.size(); ++i)
      ASSERT_NEAR(out[i], ref[i], 2e-5 * std::sqrt(double(c.dim)))
          << "m=" << c.m << " pos0=" << c.pos0 << " window=" << c.window << " i=" << i;
  }
}

TEST(Kernels, RmsNormAndRope) {
  auto x = Random(3 * 16, 5), w = Random(16, 6);
  std::vector<float> out(x.size());
  RmsNorm(x.data(), w.data(), out.data(), 3, 16, 1e-5f);
  for (int r = 0; r < 3; ++r) {
    double ss = 0;
    for (int j = 0; j < 16; ++j) ss += double(x[r * 16 + j]) * x[r * 16 + j];
    const double inv = 1.0 / std::sqrt(ss / 16 + 1e-5);
    for (int j = 0; j < 16; ++j) EXPECT_NEAR(out[r * 16 + j], x[r * 16 + j] * inv * w[j], 1e-5);
  }
  // RoPE is a rotation: it keeps each (i, i + D/2) pair's norm and rotates by pos · freq.
  const int64_t D = 8, half = 4;
  std::vector<float> cs(3 * half), sn(3 * half);
  for (int p = 0; p < 3; ++p)
    for (int i = 0; i < half; ++i)
      cs[p * half + i] = std::cos(0.3f * p * (i + 1)),
                    sn[p * half + i] = std::sin(0.3f * p * (i + 1));
  auto v = Random(2 * D, 7), orig = v;
  Rope(v.data(), 1, 2, D, 2, cs.data(), sn.data());
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < half; ++i) {
      const float a = orig[h * D + i], b = orig[h * D + i + half];
      const float c = cs[2 * half + i], s = sn[2 * half + i];
      EXPECT_NEAR(v[h * D + i], a * c - b * s, 1e-6);
      EXPECT_NEAR(v[h * D + i + half], b * c + a * s, 1e-6);
    }
}

// The tiled dequantize+sgemm kernel equals dequantize-everything + reference GEMM, for every
// row of the scheme table (ints of every width/granularity/symmetry, fp8), odd M and N.
TEST(Kernels, QuantizedMatMulMatchesReferenceForEveryScheme) {
  SetThreads(2);
  const int64_t m = 5, n = 131, k = 256;
  const auto w = Random(size_t(n * k), 11), x = Random(size_t(m * k), 12),
             b = Random(size_t(n), 13);
  for (const QuantScheme& s : SchemeTable()) {
    auto q = Quantize(w, n, k, s);
    ASSERT_TRUE(q.ok()) << s.name << ": " << q.error().message();
    std::vector<float> y(size_t(m * n)), r(size_t(m * n));
    MatMulDequantNT(x.data(), *q, b.data(), y.data(), m);
    MatMulDequantNTRef(x.data(), *q, b.data(), r.data(), m);
    auto deq = Dequantize(*q);
    ASSERT_TRUE(deq.ok());
    std::vector<float> full(size_t(m * n));
    MatMulNTRef(x.data(), deq->data(), b.data(), full.data(), m, n, k);  // formats' own decode
    const double tol = double(k) * 1.2e-7 * 16.0;
    for (size_t i = 0; i < y.size(); ++i) {
      ASSERT_NEAR(y[i], r[i], tol) << s.name << " i=" << i;
      ASSERT_NEAR(r[i], full[i], tol) << s.name << " i=" << i;
    }
  }
}

TEST(Kernels, LogSumExpIsStable) {
  std::vector<float> x = {1000.0f, 1000.0f, -1000.0f};
  EXPECT_NEAR(LogSumExp(x.data(), 3), 1000.0 + std::log(2.0), 1e-9);
  std::vector<float> y = {0.1f, -0.3f, 2.0f, 0.0f};
  double s = 0;
  for (float v : y) s += std::exp(double(v));
  EXPECT_NEAR(LogSumExp(y.data(), 4), std::log(s), 1e-6);
}

// F32Gemm's contract: each output is one fma chain over k in order, so every target, thread
// count and tiling gives F32GemmRef's bits. Shapes cross the register tile (rows), panel
// (columns), K block (128) and thread tile (512 rows, 128 columns) edges; strides exceed the
// widths; C's padding columns must stay untouched.
TEST(F32Gemm, EqualsItsReferenceBitForBitOnEveryTarget) {
  struct Case {
    int64_t m, n, k;
    BLayout layout;
    float alpha;
    int64_t lda, ldb, ldc;
    std::vector<float> a, b, want;
  };
  std::vector<Case> cases;
  const int64_t shapes[][3] = {{1, 1, 1},     {3, 5, 7},       {9, 17, 33},   {6, 64, 128},
                               {13, 53, 300}, {300, 260, 513}, {64, 500, 64}, {530, 70, 140}};
  for (const auto& sh : shapes)
    for (BLayout layout : {BLayout::kNT, BLayout::kNN})
      for (float alpha : {1.0f, 0.125f}) {
        Case c{sh[0], sh[1], sh[2], layout, alpha, sh[2] + 3, 0, sh[1] + 5, {}, {}, {}};
        c.ldb = layout == BLayout::kNT ? c.k + 2 : c.n + 2;
        c.a = Random(size_t(c.m * c.lda), uint64_t(c.m * 7 + c.k));
        c.b =
            Random(size_t((layout == BLayout::kNT ? c.n : c.k) * c.ldb), uint64_t(c.n * 11 + c.k));
        c.want.assign(size_t(c.m * c.ldc), -7.0f);
        F32GemmRef(layout, c.m, c.n, c.k, alpha, c.a.data(), c.lda, c.b.data(), c.ldb,
                   c.want.data(), c.ldc);
        cases.push_back(std::move(c));
      }
  ForEachTarget([&] {
    for (int threads : {1, 2}) {
      SetThreads(threads);
      for (const Case& c : cases) {
        std::vector<float> got(c.want.size(), -7.0f);
        F32Gemm(c.layout, c.m, c.n, c.k, c.alpha, c.a.data(), c.lda, c.b.data(), c.ldb, got.data(),
                c.ldc);
        EXPECT_EQ(0, std::memcmp(got.data(), c.want.data(), got.size() * sizeof(float)))
            << c.m << "x" << c.n << "x" << c.k << " layout " << int(c.layout) << " alpha "
            << c.alpha << " threads " << threads;
      }
    }
  });
  // The reference is the product within fp32 rounding (it is not compared with itself only).
  const int64_t m = 5, n = 6, k = 700;
  const auto a = Random(size_t(m * k), 1), b = Random(size_t(n * k), 2);
  std::vector<float> c(size_t(m * n));
  F32GemmRef(BLayout::kNT, m, n, k, 1.0f, a.data(), k, b.data(), k, c.data(), n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double exact = 0, mag = 0;
      for (int64_t p = 0; p < k; ++p) {
        exact += double(a[size_t(i * k + p)]) * b[size_t(j * k + p)];
        mag += std::abs(double(a[size_t(i * k + p)]) * b[size_t(j * k + p)]);
      }
      EXPECT_NEAR(c[size_t(i * n + j)], exact, double(k) * 6e-8 * mag);
    }
}

// F32SyrkUpper: each upper entry of XᵀX is one fma chain over the rows in order (F32GemmRef with
// A = Xᵀ), on every target and thread count; K across the 256-row bands, M across KC blocks.
TEST(F32Gemm, SyrkUpperIsTheChainOnEveryTarget) {
  for (auto [m, k] : std::vector<std::pair<int64_t, int64_t>>{{1, 3}, {130, 70}, {300, 600}}) {
    const auto x = Random(size_t(m * k), uint64_t(m + k));
    std::vector<float> want(size_t(k * k));
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = i; j < k; ++j) {
        float acc = 0.0f;
        for (int64_t p = 0; p < m; ++p)
          acc = std::fma(x[size_t(p * k + i)], x[size_t(p * k + j)], acc);
        want[size_t(i * k + j)] = acc;
      }
    ForEachTarget([&] {
      for (int threads : {1, 2}) {
        SetThreads(threads);
        std::vector<float> got(size_t(k * k), -7.0f);
        F32SyrkUpper(x.data(), m, k, got.data());
        for (int64_t i = 0; i < k; ++i)
          for (int64_t j = i; j < k; ++j)
            ASSERT_EQ(got[size_t(i * k + j)], want[size_t(i * k + j)])
                << m << "x" << k << " [" << i << "," << j << "] threads " << threads;
        if (k > 256) {
          EXPECT_EQ(got[size_t((k - 1) * k)], -7.0f);  // below the bands: untouched
        }
      }
    });
  }
}

// A = GᵀG / m + I/4 for a random G[m, n] (symmetric positive definite), row-major.
std::vector<double> RandomSpd(int64_t n, uint64_t seed) {
  const int64_t m = n + 8;
  const auto g = Random(size_t(m * n), seed);
  std::vector<double> a(size_t(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = i == j ? 0.25 : 0.0;
      for (int64_t p = 0; p < m; ++p) s += double(g[size_t(p * n + i)]) * g[size_t(p * n + j)] / m;
      a[size_t(i * n + j)] = a[size_t(j * n + i)] = s;
    }
  return a;
}

// The blocked factor-and-invert: L⁻¹ with L⁻¹ A L⁻ᵀ = I, close to the plain loops, zero above
// the diagonal, and the same bits on every target and thread count (sizes around the 128-column
// panels and the 64-row strips).
TEST(CholeskyF64, InverseFactorOnEveryTargetAndThreadCount) {
  for (const int64_t n : {1, 5, 64, 127, 128, 129, 300}) {
    const std::vector<double> a = RandomSpd(n, uint64_t(n));
    std::vector<double> ref = a;
    ASSERT_EQ(CholeskyInverseLowerRef(ref.data(), n), 0);
    double scale = 0;
    for (double v : ref) scale = std::max(scale, std::fabs(v));
    for (int64_t i = 0; i < n; ++i)  // X A Xᵀ = I for X = the reference's L⁻¹
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0;
        for (int64_t p = 0; p <= i; ++p) {
          double axj = 0;
          for (int64_t q = 0; q <= j; ++q) axj += a[size_t(p * n + q)] * ref[size_t(j * n + q)];
          s += ref[size_t(i * n + p)] * axj;
        }
        ASSERT_NEAR(s, i == j ? 1.0 : 0.0, 1e-9) << n << ": " << i << ", " << j;
      }
    std::vector<double> first;
    ForEachTarget([&] {
      for (int threads : {1, 2}) {
        SetThreads(threads);
        std::vector<double> got = a;
        ASSERT_EQ(CholeskyInverseLower(got.data(), n), 0);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j) {
            const double v = got[size_t(i * n + j)];
            if (j > i) {
              ASSERT_EQ(v, 0.0) << n << ": above the diagonal " << i << ", " << j;
            }
            ASSERT_NEAR(v, ref[size_t(i * n + j)], 1e-11 * scale) << n << ": " << i << ", " << j;
          }
        if (first.empty()) first = got;
        ASSERT_EQ(std::memcmp(first.data(), got.data(), got.size() * sizeof(double)), 0)
            << n << ": differs with " << threads << " threads";
      }
    });
  }
}

TEST(CholeskyF64, ReportsTheFirstMinorThatIsNotPositiveDefinite) {
  for (const int64_t bad : {0, 2, 200}) {
    const int64_t n = 300;
    std::vector<double> a(size_t(n * n), 0.0), ref;
    for (int64_t i = 0; i < n; ++i) a[size_t(i * n + i)] = i == bad ? -1.0 : 2.0;
    ref = a;
    EXPECT_EQ(CholeskyInverseLower(a.data(), n), bad + 1);
    EXPECT_EQ(CholeskyInverseLowerRef(ref.data(), n), bad + 1);
  }
  std::vector<double> nan = {std::nan(""), 0.0, 0.0, 1.0};
  EXPECT_EQ(CholeskyInverseLower(nan.data(), 2), 1);
}

// Factors made by `parts` parts together (as ranks do under mpirun): each part a thread with its
// own copy of the matrix, rows handed over through a shared board. Returns each part's result
// code; `out` gets each part's matrix.
std::vector<int> FactorInParts(const std::vector<double>& a, int64_t n, int parts,
                               std::vector<std::vector<double>>& out) {
  out.assign(size_t(parts), a);
  std::vector<double> board(a.size());
  std::barrier sync(parts);
  std::vector<int> rc(size_t(parts), -1);
  std::vector<std::thread> threads;
  for (int p = 0; p < parts; ++p) {
    threads.emplace_back([&, p] {
      CholeskySplit split{
          p, parts, [&](double* m, int64_t k, int64_t r0, int64_t c0, int64_t c1) {
            for (int64_t i = r0; i < k; ++i)
              if (CholeskyStripPart(i, parts) == p)
                std::copy(m + i * k + c0, m + i * k + c1, board.data() + i * k + c0);
            sync.arrive_and_wait();
            for (int64_t i = r0; i < k; ++i)
              if (CholeskyStripPart(i, parts) != p)
                std::copy(board.data() + i * k + c0, board.data() + i * k + c1, m + i * k + c0);
            sync.arrive_and_wait();
          }};
      rc[size_t(p)] = CholeskyInverseLower(out[size_t(p)].data(), n, split);
    });
  }
  for (auto& t : threads) t.join();
  return rc;
}

// Every part ends with the one-part bits (not if a part skipped a hand-over); a matrix that is
// not positive definite fails on every part at the same order.
TEST(CholeskyF64, SplitOverPartsGivesTheOnePartBits) {
  for (const int parts : {2, 3}) {
    for (const int64_t n : {5, 64, 129, 300, 449}) {
      const std::vector<double> a = RandomSpd(n, uint64_t(n) + 7);
      std::vector<double> whole = a;
      ASSERT_EQ(CholeskyInverseLower(whole.data(), n), 0);
      std::vector<std::vector<double>> got;
      const std::vector<int> rc = FactorInParts(a, n, parts, got);
      for (int p = 0; p < parts; ++p) {
        ASSERT_EQ(rc[size_t(p)], 0) << parts << " parts, n " << n << ", part " << p;
        EXPECT_EQ(std::memcmp(got[size_t(p)].data(), whole.data(), whole.size() * sizeof(double)),
                  0)
            << parts << " parts, n " << n << ", part " << p;
      }
    }
  }
  const int64_t n = 300, bad = 200;
  std::vector<double> a(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) a[size_t(i * n + i)] = i == bad ? -1.0 : 2.0;
  std::vector<std::vector<double>> got;
  EXPECT_EQ(FactorInParts(a, n, 2, got), std::vector<int>({bad + 1, bad + 1}));
}

TEST(VecMath, MatchesReferenceOnEveryTarget) {
  std::printf("targets:");
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) std::printf(" %s", hwy::TargetName(t));
  std::printf("\n");
  EXPECT_GE(hwy::SupportedAndGeneratedTargets().size(), 1u);
  ForEachTarget([] {
    for (int64_t n : {1, 7, 16, 33, 255, 256, 257, 1000, 8192}) {
      auto x = Random(size_t(n), uint64_t(n));
      for (auto& v : x) v *= 6.0f;  // logits-like spread, exp arguments down to about -50
      EXPECT_EQ(vec::MaxValue(x.data(), n), vec::MaxValueRef(x.data(), n)) << "n=" << n;
      const float shift = vec::MaxValueRef(x.data(), n);
      std::vector<float> e(x.size()), er(x.size());
      const double s = vec::ExpShiftSum(x.data(), e.data(), n, shift);
      const double sr = vec::ExpShiftSumRef(x.data(), er.data(), n, shift);
      EXPECT_NEAR(s, sr, sr * 1e-6) << "n=" << n;
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(e[size_t(i)], er[size_t(i)], 4 * 6e-8 * er[size_t(i)] + 1e-30)
            << "n=" << n << " i=" << i;
      auto g = Random(size_t(n), uint64_t(n) + 1), u = Random(size_t(n), uint64_t(n) + 2);
      for (auto& v : g) v *= 8.0f;
      auto gr = g;
      vec::SiluMulVec(g.data(), u.data(), n);
      vec::SiluMulRef(gr.data(), u.data(), n);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(g[size_t(i)], gr[size_t(i)], 1e-6 * (std::abs(gr[size_t(i)]) + 1e-3))
            << "n=" << n << " i=" << i;
      // Clip-search error: rounded copies with some exact zeros, with and without weights.
      auto q = x;
      for (int64_t i = 0; i < n; ++i)
        q[size_t(i)] = i % 3 == 0 ? x[size_t(i)] : std::round(x[size_t(i)]);
      const auto wt = Random(size_t(n), uint64_t(n) + 3);
      std::vector<float> wpos(wt.size());
      for (size_t i = 0; i < wt.size(); ++i) wpos[i] = std::fabs(wt[i]);
      for (const float p : {2.0f, 2.4f, 1.0f}) {
        for (const float* w :
             {static_cast<const float*>(nullptr), static_cast<const float*>(wpos.data())}) {
          const double ref = vec::PowErrorSumRef(x.data(), q.data(), w, n, p);
          EXPECT_NEAR(vec::PowErrorSum(x.data(), q.data(), w, n, p), ref, 1e-5 * ref + 1e-30)
              << "n=" << n << " p=" << p;
          for (const float zero : {0.0f, 7.0f, 8.0f}) {  // asym at the edge, asym inside, sym
            const double iref = vec::IntRoundErrorSumRef(x.data(), w, n, 0.37f, zero, 15.0f, p);
            EXPECT_NEAR(vec::IntRoundErrorSum(x.data(), w, n, 0.37f, zero, 15.0f, p), iref,
                        1e-5 * iref + 1e-30)
                << "n=" << n << " p=" << p << " zero=" << zero;
          }
        }
      }
    }
  });
}

// Decoding's fp32 GEMV: within float rounding (k · 2^-24 · Σ|w x|, summed in 4-8 chains) of
// the double reference, for row and column counts around the vector and unroll widths.
TEST(VecMath, GemvRowsMatchesReferenceOnEveryTarget) {
  ForEachTarget([] {
    for (int64_t n : {1, 5, 130}) {
      for (int64_t k : {1, 13, 16, 64, 100, 257, 1024}) {
        const auto w = Random(size_t(n * k), uint64_t(n * 7 + k)),
                   x = Random(size_t(k), uint64_t(k));
        std::vector<float> y(static_cast<size_t>(n), -1.f), ref(static_cast<size_t>(n));
        vec::GemvRows(w.data(), x.data(), n, k, y.data());
        MatMulNTRef(x.data(), w.data(), nullptr, ref.data(), 1, n, k);
        for (int64_t r = 0; r < n; ++r) {
          double mag = 0;
          for (int64_t j = 0; j < k; ++j)
            mag += std::fabs(double(w[size_t(r * k + j)]) * x[size_t(j)]);
          ASSERT_NEAR(y[size_t(r)], ref[size_t(r)], double(k) * 6e-8 * mag + 1e-30)
              << "n=" << n << " k=" << k << " r=" << r;
        }
      }
    }
  });
}

TEST(VecMath, ExpUnderflowsToZeroNotNan) {
  std::vector<float> x = {0.0f, -200.0f, -1e30f, -std::numeric_limits<float>::infinity()};
  std::vector<float> e(x.size());
  const double s = vec::ExpShiftSum(x.data(), e.data(), int64_t(x.size()), 0.0f);
  EXPECT_EQ(s, 1.0);
  EXPECT_EQ(e[1], 0.0f);
  EXPECT_EQ(e[3], 0.0f);
}

}  // namespace
}  // namespace qf::kernels
