// Format table tests: every scheme row round-trips within its bound; FP8 encoders exhaustive
// against OCP; GPTQ quant.py formula examples by hand; compressed-tensors packing examples.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/fp8.h"
#include "formats/grid.h"
#include "formats/pack.h"
#include "formats/quantize.h"
#include "formats/scheme.h"

namespace qf {
namespace {

constexpr uint32_t kSeed = 1234;

// Gaussian weights with a few outliers, like a real linear layer.
std::vector<float> RandomWeights(int64_t n, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(static_cast<size_t>(n * k));
  for (float& x : w) x = normal(rng);
  for (size_t i = 0; i < w.size(); i += 97) w[i] *= 8.0f;
  return w;
}

QuantScheme Scheme(std::string_view spec) {
  auto s = ParseScheme(spec);
  QF_CHECK(s.ok(), "{}", s.ok() ? "" : s.error().message());
  return *s;
}

// ---------------------------------------------------------------- table and parser

TEST(SchemeTable, RowsAreUniqueAndParseToThemselves) {
  std::set<std::string_view> names;
  for (const QuantScheme& row : SchemeTable()) {
    EXPECT_TRUE(names.insert(row.name).second) << row.name;
    auto parsed = ParseScheme(row.name);
    ASSERT_TRUE(parsed.ok()) << row.name << ": " << parsed.error().message();
    EXPECT_EQ(parsed->name, row.name);
    auto found = FindScheme(row.kind, row.bits, row.symmetric, row.granularity, row.group_size);
    ASSERT_TRUE(found.ok()) << row.name;
    EXPECT_EQ(found->name, row.name);
    EXPECT_EQ(row.granularity == Granularity::kGroup, row.group_size > 0) << row.name;
  }
  EXPECT_EQ(SchemeTable().size(), 44u);  // int{2,3,4,8} x 5 granularities x sym/asym + 4 fp8
}

TEST(SchemeTable, PresetsAndShortSpecs) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"W4A16", "int4-g128-sym"},
      {"w4a16-asym", "int4-g128-asym"},
      {"W4A16_ASYM", "int4-g128-asym"},
      {"W3A16", "int3-g128-sym"},
      {"W2A16", "int2-g64-sym"},
      {"W8A16", "int8-channel-sym"},
      {"FP8", "fp8-e4m3-tensor"},
      {"FP8-dynamic", "fp8-e4m3-channel"},
      {"FP8_DYNAMIC", "fp8-e4m3-channel"},
      {"W8A8", "int8-channel-sym"},
      {"w8a8_static", "int8-channel-sym"},
      {"int4", "int4-g128-sym"},
      {"int4-asym", "int4-g128-asym"},
      {"int4-asym-g64", "int4-g64-asym"},
      {"INT3-G32-ASYM", "int3-g32-asym"},
      {"int8-channel", "int8-channel-sym"},
      {"int8-tensor-sym", "int8-tensor-sym"},
      {"fp8", "fp8-e4m3-tensor"},
      {"fp8-e5m2", "fp8-e5m2-tensor"},
      {"fp8-channel", "fp8-e4m3-channel"},
      {"fp8-e5m2-channel-sym", "fp8-e5m2-channel"},
  };
  for (const auto& [spec, want] : cases) {
    auto s = ParseScheme(spec);
    ASSERT_TRUE(s.ok()) << spec << ": " << s.error().message();
    EXPECT_EQ(s->name, want) << spec;
  }
  for (const SchemePreset& p : SchemePresets()) EXPECT_TRUE(ParseScheme(p.name).ok()) << p.name;
  // Activation rows of the presets (parsed by PresetActivations, tests/activation_test.cc).
  const std::pair<std::string_view, std::string_view> acts[] = {{"W4A16", ""},
                                                                {"W8A16", ""},
                                                                {"W8A8", "int8-token"},
                                                                {"W8A8-static", "int8-tensor"},
                                                                {"FP8", "fp8-e4m3-tensor"},
                                                                {"FP8-dynamic", "fp8-e4m3-token"}};
  for (const auto& [name, act] : acts) {
    const SchemePreset* p = FindPreset(name);
    ASSERT_NE(p, nullptr) << name;
    EXPECT_EQ(p->act, act) << name;
  }
  EXPECT_EQ(FindPreset("int8-channel"), nullptr);
}

TEST(SchemeTable, BadSpecsAreErrors) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"int5", "bits must be 2, 3, 4 or 8"},
      {"int16-channel", "bits must be"},
      {"int4-g48", "group size 48"},
      {"int4-g0", "group size 0"},
      {"fp8-g128", "not groups"},
      {"fp8-e4m3-asym", "symmetric"},
      {"", "empty"},
      {"int", "not int<bits>"},
      {"int-4", "not int<bits>"},
      {"bf16", "expected int<bits>"},
      {"int4-foo", "unknown token 'foo'"},
      {"int4-sym-asym", "symmetry given twice"},
      {"int4-tensor-g128", "granularity given twice"},
      {"fp8-e4m3-e5m2", "unknown token"},
  };
  for (const auto& [spec, message] : cases) {
    auto s = ParseScheme(spec);
    ASSERT_FALSE(s.ok()) << "'" << spec << "' parsed as " << s->name;
    EXPECT_NE(s.error().message().find(message), std::string::npos)
        << spec << ": " << s.error().message();
  }
}

TEST(SchemeTable, GroupFallsBackToChannelWhenKIsNotAMultiple) {
  const QuantScheme g128 = Scheme("int4-g128-asym");
  for (int64_t k : {172, 64, 130}) {
    auto r = ResolveScheme(g128, 8, k);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->scheme.name, "int4-channel-asym") << k;
    EXPECT_NE(r->fallback.find(std::to_string(k)), std::string::npos) << r->fallback;
  }
  auto ok = ResolveScheme(g128, 8, 256);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->scheme.name, "int4-g128-asym");
  EXPECT_TRUE(ok->fallback.empty());
  EXPECT_TRUE(ResolveScheme(Scheme("int8-channel"), 3, 172)->fallback.empty());
  EXPECT_FALSE(ResolveScheme(g128, 0, 128).ok());
  EXPECT_FALSE(ResolveScheme(g128, 4, -1).ok());

  // The whole-matrix path applies and reports it (stories260k has K = 172 with g128).
  const std::vector<float> w = RandomWeights(4, 172, kSeed);
  auto q = Quantize(w, 4, 172, g128);
  ASSERT_TRUE(q.ok()) << q.error().message();
  EXPECT_EQ(q->scheme.name, "int4-channel-asym");
  EXPECT_FALSE(q->fallback.empty());
  EXPECT_EQ(q->scales.size(), 4u);
  auto fq = QuantizeDequantize(w, 4, 172, g128);
  ASSERT_TRUE(fq.ok());
  EXPECT_EQ(fq->fallback, q->fallback);
}

// ---------------------------------------------------------------- every row of the table

// Per-element error bound: half a step for ints (clipping happens only at the symmetric
// grid's top code, exactly half a step below amax); half an fp8 spacing, relative, for fp8.
float ErrorBound(const QuantScheme& s, float w, GroupParams p) {
  const float slack = 4 * FLT_EPSILON;
  if (s.is_int()) return 0.5f * p.scale * (1 + slack) + slack * std::fabs(w);
  const int mant = s.kind == QuantKind::kFp8E4M3 ? 3 : 2;
  const int emin = s.kind == QuantKind::kFp8E4M3 ? -6 : -14;
  const float relative = std::ldexp(std::fabs(w), -(mant + 1));
  const float subnormal = std::ldexp(p.scale, emin - mant - 1);
  return std::max(relative, subnormal) * (1 + slack);
}

TEST(SchemeTable, EveryRowRoundTripsWithinBound) {
  constexpr int64_t kN = 6, kK = 256;
  const std::vector<float> w = RandomWeights(kN, kK, kSeed);
  for (const QuantScheme& s : SchemeTable()) {
    SCOPED_TRACE(std::string(s.name));
    auto q = Quantize(w, kN, kK, s);
    ASSERT_TRUE(q.ok()) << q.error().message();
    EXPECT_EQ(q->scheme.name, s.name);
    EXPECT_TRUE(q->fallback.empty());
    const size_t sets = s.granularity == Granularity::kTensor    ? 1u
                        : s.granularity == Granularity::kChannel ? size_t{kN}
                                                                 : size_t(kN * kK / s.group_size);
    EXPECT_EQ(q->scales.size(), sets);
    EXPECT_EQ(q->zeros.size(), s.is_int() && !s.symmetric ? sets : 0u);
    EXPECT_TRUE(Validate(*q).ok());
    for (int32_t z : q->zeros) EXPECT_TRUE(z >= 0 && z <= s.MaxCode()) << z;
    for (uint8_t c : q->codes) ASSERT_LE(c, s.MaxCode());

    auto deq = Dequantize(*q);
    ASSERT_TRUE(deq.ok());
    auto fake = QuantizeDequantize(w, kN, kK, s);
    ASSERT_TRUE(fake.ok());
    ASSERT_EQ(deq->size(), w.size());
    const Grid grid(s);
    float worst = 0;
    size_t worst_i = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      const int64_t r = static_cast<int64_t>(i) / kK, c = static_cast<int64_t>(i) % kK;
      const GroupParams p = q->Params(r, c);
      ASSERT_EQ(BitsFromF32((*deq)[i]), BitsFromF32(fake->weights[i])) << i;
      ASSERT_EQ((*deq)[i], grid.Round(w[i], p)) << i;
      const float err = std::fabs(w[i] - (*deq)[i]);
      const float bound = ErrorBound(s, w[i], p);
      if (err / bound > worst) worst = err / bound, worst_i = i;
    }
    EXPECT_LE(worst, 1.0f) << "worst index " << worst_i << " w " << w[worst_i] << " deq "
                           << (*deq)[worst_i] << " seed " << kSeed;
    auto again = Quantize(w, kN, kK, s);  // deterministic
    EXPECT_EQ(again->codes, q->codes);
    EXPECT_EQ(again->scales, q->scales);
  }
}

TEST(SchemeTable, BadShapesAreErrors) {
  const std::vector<float> w(12, 1.0f);
  EXPECT_FALSE(Quantize(w, 3, 5, Scheme("int8-channel")).ok());
  EXPECT_FALSE(QuantizeDequantize(w, 0, 12, Scheme("int8-channel")).ok());
  FitOptions bad_importance;
  const std::vector<float> imp(3, 1.0f);
  bad_importance.importance = imp;
  bad_importance.clip = ClipSearch::Rtn();
  auto r = Quantize(w, 3, 4, Scheme("int4-channel"), bad_importance);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("importance"), std::string::npos);

  auto q = Quantize(w, 3, 4, Scheme("int4-channel-asym"));
  ASSERT_TRUE(q.ok());
  QuantizedTensor broken = *q;
  broken.codes[5] = 16;
  EXPECT_FALSE(Dequantize(broken).ok());
  broken = *q;
  broken.zeros.pop_back();
  EXPECT_FALSE(Dequantize(broken).ok());
}

// ---------------------------------------------------------------- GPTQ quant.py by hand

TEST(GptqFormula, RoundHalfEvenMatchesNearbyint) {
  std::mt19937 rng(kSeed);
  std::uniform_real_distribution<float> u(-300.0f, 300.0f);
  for (int i = -4000; i <= 4000; ++i) {
    const float x = i / 4.0f;  // every half and quarter
    ASSERT_EQ(BitsFromF32(RoundHalfEven(x)), BitsFromF32(std::nearbyint(x))) << x;
  }
  for (int i = 0; i < 100000; ++i) {
    const float x = u(rng);
    ASSERT_EQ(RoundHalfEven(x), std::nearbyint(x)) << x;
  }
  for (float x : {8388607.5f, 8388608.0f, 1e20f, -1e20f, 0.49999997f, -0.5f}) {
    EXPECT_EQ(RoundHalfEven(x), std::nearbyint(x)) << x;
  }
  EXPECT_TRUE(std::isnan(RoundHalfEven(NAN)));
}

struct RowCase {
  const char* scheme;
  std::vector<float> x;
  float scale, zero;
  std::vector<int> codes;
  std::vector<float> deq;
};

TEST(GptqFormula, HandComputedRows) {
  const RowCase cases[] = {
      // asym: xmin -1, xmax 2, maxq 3: scale 1, zero round(1) = 1; 0.5 ties to even (0).
      {"int2-channel-asym", {-1, 0, 0.5f, 1.5f, 2}, 1, 1, {0, 1, 1, 3, 3}, {-1, 0, 0, 2, 2}},
      // sym: amax 7.5, scale 15/15 = 1, zero (15+1)/2 = 8; -7.5 -> -8 (even), 7.5 -> 8 -> 15.
      {"int4-channel-sym",
       {-7.5f, -0.5f, 0.5f, 1.5f, 2.5f, 7, 7.5f},
       1,
       8,
       {0, 8, 8, 10, 10, 15, 15},
       {-8, 0, 0, 2, 2, 7, 7}},
      // all-zero row: range [-1, 1]; sym zero 8, every code 8.
      {"int4-channel-sym", {0, 0, 0}, 2.0f / 15.0f, 8, {8, 8, 8}, {0, 0, 0}},
      // asym: -xmin / scale = 1 / fp32(2/15) = 7.4999995 in fp32, rounds to 7 (not 8).
      {"int4-channel-asym", {0, 0, 0}, 2.0f / 15.0f, 7, {7, 7, 7}, {0, 0, 0}},
      // only positive values, sym: quant.py keeps xmin = 0 (it mirrors only when xmin < 0),
      // so scale = 7.5 / 15 and the grid tops out at 7 * 0.5 = 3.5: 7.5 is clipped to 3.5.
      {"int4-channel-sym", {0.5f, 1, 3, 7.5f}, 0.5f, 8, {9, 10, 14, 15}, {0.5f, 1, 3, 3.5f}},
      // only positive, asym: xmin 0, zero round(-0 / 0.5) = 0; the full range is used.
      {"int4-channel-asym", {0.5f, 1, 3, 7.5f}, 0.5f, 0, {1, 2, 6, 15}, {0.5f, 1, 3, 7.5f}},
      // only negative, asym int3: xmin -7, xmax 0, scale 1, zero 7.
      {"int3-channel-asym", {-7, -3.5f, -0.4f}, 1, 7, {0, 3, 7}, {-7, -4, 0}},
      // int3 sym: amax 3.5, scale 7/7 = 1, zero 4; grid [-4, 3].
      {"int3-channel-sym", {-3.5f, 3.5f, 2.5f}, 1, 4, {0, 7, 6}, {-4, 3, 2}},
  };
  for (const RowCase& t : cases) {
    SCOPED_TRACE(t.scheme);
    const QuantScheme s = Scheme(t.scheme);
    const auto k = static_cast<int64_t>(t.x.size());
    auto q = Quantize(t.x, 1, k, s);
    ASSERT_TRUE(q.ok());
    const GroupParams p = q->Params(0, 0);
    EXPECT_EQ(p.scale, t.scale);
    EXPECT_EQ(p.zero, t.zero);
    auto deq = Dequantize(*q);
    for (size_t i = 0; i < t.x.size(); ++i) {
      EXPECT_EQ(q->codes[i], t.codes[i]) << "x = " << t.x[i];
      EXPECT_EQ((*deq)[i], t.deq[i]) << "x = " << t.x[i];
    }
  }
}

TEST(GptqFormula, TensorFitsOneSetChannelFitsEachRowAndBlocksUseLd) {
  // quant.py perchannel=False flattens the whole matrix; kTensor copies one set to each row.
  const std::vector<float> w = {-1, 0, 0.5f, 2, 0.25f, 1.5f};  // [2, 3]
  std::vector<GroupParams> p(2);
  Grid(Scheme("int2-tensor-asym")).Fit(w.data(), 2, 3, 0, 3, p);
  for (const GroupParams& g : p) {
    EXPECT_EQ(g.scale, 1.0f);
    EXPECT_EQ(g.zero, 1.0f);
  }
  Grid(Scheme("int2-channel-asym")).Fit(w.data(), 2, 3, 0, 3, p);
  EXPECT_EQ(p[0].scale, 0.5f);  // [-1, 0.5]: 1.5 / 3
  EXPECT_EQ(p[0].zero, 2.0f);
  EXPECT_EQ(p[1].scale, 2.0f / 3.0f);  // [0, 2]
  EXPECT_EQ(p[1].zero, 0.0f);

  // A column block [c0, c1) of a wider matrix fits like that block copied out: what GPTQ's
  // dynamic groups do on the error-updated weights.
  const std::vector<float> big = RandomWeights(5, 96, kSeed + 1);
  const Grid grid(Scheme("int4-g32-asym"));
  std::vector<GroupParams> from_block(5), from_copy(1);
  grid.Fit(big.data(), 5, 96, 32, 64, from_block);
  for (int r = 0; r < 5; ++r) {
    const std::vector<float> copy(big.begin() + r * 96 + 32, big.begin() + r * 96 + 64);
    grid.Fit(copy.data(), 1, 32, 0, 32, from_copy);
    EXPECT_EQ(from_block[r].scale, from_copy[0].scale);
    EXPECT_EQ(from_block[r].zero, from_copy[0].zero);
  }
  // FitRange is the same formula from a range.
  const GroupParams r = Grid(Scheme("int2-channel-asym")).FitRange(-1, 2);
  EXPECT_EQ(r.scale, 1.0f);
  EXPECT_EQ(r.zero, 1.0f);
}

// ---------------------------------------------------------------- clipping search

TEST(ClipSearch, NeverIncreasesErrorAndSometimesHelps) {
  constexpr int64_t kN = 8, kK = 256;
  const std::vector<float> w = RandomWeights(kN, kK, kSeed + 2);
  std::vector<float> importance(kK);
  std::mt19937 rng(kSeed);
  std::uniform_real_distribution<float> u(0.0f, 4.0f);
  for (float& x : importance) x = u(rng);

  for (const char* spec : {"int4-g128-sym", "int4-g32-asym", "int3-channel-asym", "int2-g64-sym",
                           "int8-tensor-asym", "fp8-e4m3-channel"}) {
    for (const ClipSearch& clip : {ClipSearch::Rtn(), ClipSearch::Gptq(), ClipSearch::Awq()}) {
      for (bool weighted : {false, true}) {
        SCOPED_TRACE(fmt::format("{} grid {} weighted {}", spec, clip.grid, weighted));
        const QuantScheme s = Scheme(spec);
        const Grid grid(s);
        FitOptions plain, clipped;
        clipped.clip = clip;
        if (weighted) clipped.importance = importance;
        const int64_t g = ColumnsPerParam(s, kK);
        const int64_t rows_per_set = s.granularity == Granularity::kTensor ? kN : 1;
        int improved = 0;
        for (int64_t r0 = 0; r0 < kN; r0 += rows_per_set) {
          for (int64_t c0 = 0; c0 < kK; c0 += g) {
            std::vector<GroupParams> a(rows_per_set), b(rows_per_set);
            grid.Fit(w.data() + r0 * kK, rows_per_set, kK, c0, c0 + g, a, plain);
            grid.Fit(w.data() + r0 * kK, rows_per_set, kK, c0, c0 + g, b, clipped);
            double err_a = 0, err_b = 0;
            for (int64_t r = 0; r < rows_per_set; ++r) {
              for (int64_t c = c0; c < c0 + g; ++c) {
                const float x = w[(r0 + r) * kK + c];
                const double wt = weighted ? importance[c] : 1.0;
                err_a += wt * std::pow(std::fabs(grid.Round(x, a[r]) - x), clip.norm);
                err_b += wt * std::pow(std::fabs(grid.Round(x, b[r]) - x), clip.norm);
              }
            }
            EXPECT_LE(err_b, err_a * (1 + 1e-9)) << "row " << r0 << " col " << c0;
            improved += err_b < err_a;
          }
        }
        // Coarse grids gain from clipping outliers; int8 / fp8 steps are too fine to.
        if (s.is_int() && s.bits <= 4) {
          EXPECT_GT(improved, 0);
        }
      }
    }
  }
}

TEST(ClipSearch, StepCountFollowsPython) {
  // int(max_shrink * grid) in double: 0.2 * 20 = 4.000000000000001 -> 4; 0.8 * 100 -> 80.
  // With one step the search is plain min-max.
  const std::vector<float> w = RandomWeights(1, 128, kSeed + 3);
  const Grid grid(Scheme("int4-channel-asym"));
  std::vector<GroupParams> plain(1), one(1);
  grid.Fit(w.data(), 1, 128, 0, 128, plain);
  FitOptions options;
  options.clip = ClipSearch{20, 0.05, 2.0f};
  grid.Fit(w.data(), 1, 128, 0, 128, one, options);
  EXPECT_EQ(plain[0].scale, one[0].scale);
  EXPECT_EQ(plain[0].zero, one[0].zero);
}

// ---------------------------------------------------------------- FP8 against OCP

struct Fp8Case {
  QuantKind kind;
  uint8_t (*encode)(float);
  float (*decode)(uint8_t);
  float max;
  uint8_t max_code;
};
constexpr Fp8Case kFp8Cases[] = {
    {QuantKind::kFp8E4M3, EncodeF8E4M3, F8E4M3ToF32, kF8E4M3Max, 0x7e},
    {QuantKind::kFp8E5M2, EncodeF8E5M2, F8E5M2ToF32, kF8E5M2Max, 0x7b},
};

TEST(Fp8, EveryCodeRoundTrips) {
  for (const Fp8Case& f : kFp8Cases) {
    for (int c = 0; c < 256; ++c) {
      const float v = f.decode(static_cast<uint8_t>(c));
      const uint8_t back = f.encode(v);
      if (std::isnan(v)) {
        EXPECT_TRUE(std::isnan(f.decode(back))) << c;
        EXPECT_EQ(back & 0x80, c & 0x80) << c;
      } else {
        EXPECT_EQ(back, c) << "value " << v;
      }
    }
    EXPECT_EQ(f.decode(f.max_code), f.max);
  }
}

TEST(Fp8, MidpointsRoundToEvenAndNeighboursToNearest) {
  for (const Fp8Case& f : kFp8Cases) {
    int checked = 0;
    for (int c = 0; c < 0x7f; ++c) {
      const float lo = f.decode(static_cast<uint8_t>(c));
      const float hi = f.decode(static_cast<uint8_t>(c + 1));
      if (!std::isfinite(lo) || !std::isfinite(hi)) continue;
      const float mid = (lo + hi) / 2;  // exact: fp8 values have at most 4 significant bits
      ASSERT_EQ(static_cast<double>(mid), (static_cast<double>(lo) + hi) / 2);
      const int even = c % 2 == 0 ? c : c + 1;
      EXPECT_EQ(f.encode(mid), even) << "between codes " << c << " and " << c + 1;
      EXPECT_EQ(f.encode(-mid), even | 0x80) << c;
      EXPECT_EQ(f.encode(std::nextafter(mid, 0.0f)), c) << c;
      EXPECT_EQ(f.encode(std::nextafter(mid, INFINITY)), c + 1) << c;
      ++checked;
    }
    EXPECT_EQ(checked, f.max_code);  // every adjacent finite pair of the positive half
  }
}

TEST(Fp8, SpecialValuesSaturationAndSignedZero) {
  EXPECT_EQ(EncodeF8E4M3(0.0f), 0x00);
  EXPECT_EQ(EncodeF8E4M3(-0.0f), 0x80);
  EXPECT_EQ(EncodeF8E5M2(-0.0f), 0x80);
  EXPECT_EQ(EncodeF8E4M3(-1e-30f), 0x80);                // underflows to -0
  EXPECT_EQ(EncodeF8E4M3(std::ldexp(1.0f, -10)), 0x00);  // half the smallest subnormal: even
  EXPECT_EQ(EncodeF8E4M3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
  EXPECT_EQ(EncodeF8E5M2(std::ldexp(1.0f, -17)), 0x00);
  for (float big : {449.0f, 464.0f, 480.0f, 1e6f, FLT_MAX, INFINITY}) {
    EXPECT_EQ(EncodeF8E4M3(big), 0x7e) << big;
    EXPECT_EQ(EncodeF8E4M3(-big), 0xfe) << big;
  }
  for (float big : {57345.0f, 61440.0f, 65536.0f, 1e9f, FLT_MAX}) {
    EXPECT_EQ(EncodeF8E5M2(big), 0x7b) << big;
    EXPECT_EQ(EncodeF8E5M2(-big), 0xfb) << big;
  }
  EXPECT_EQ(EncodeF8E5M2(INFINITY), 0x7c);  // E5M2 keeps infinities
  EXPECT_EQ(EncodeF8E5M2(-INFINITY), 0xfc);
  EXPECT_EQ(EncodeF8E4M3(NAN), 0x7f);
  EXPECT_EQ(EncodeF8E4M3(-NAN), 0xff);
  EXPECT_TRUE(std::isnan(F8E5M2ToF32(EncodeF8E5M2(NAN))));
}

TEST(Fp8, RandomValuesMatchBruteForceNearest) {
  // Reference: the nearest finite code of the same sign by exhaustive search, ties to the
  // even code, magnitudes beyond max saturating.
  std::mt19937 rng(kSeed);
  std::uniform_real_distribution<float> exponent(-22.0f, 18.0f);
  for (const Fp8Case& f : kFp8Cases) {
    for (int i = 0; i < 50000; ++i) {
      const float x = std::exp2(exponent(rng)) * (i % 2 ? -1.0f : 1.0f);
      int best = 0;
      double best_d = INFINITY;
      for (int c = 0; c <= f.max_code; ++c) {
        const double d = std::fabs(std::fabs(static_cast<double>(x)) - f.decode(c));
        if (d < best_d || (d == best_d && c % 2 == 0)) best = c, best_d = d;
      }
      const int want = best | (x < 0 ? 0x80 : 0);
      ASSERT_EQ(f.encode(x), want) << "x = " << x << " seed " << kSeed;
    }
  }
}

TEST(Fp8, ScalesFollowAmax) {
  const std::vector<float> w = {-896.0f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f};  // [2, 3]
  auto t = Quantize(w, 2, 3, Scheme("fp8-e4m3-tensor"));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->scales, std::vector<float>{2.0f});  // 896 / 448
  EXPECT_EQ(t->codes[0], 0xfe);                    // -448 * 2
  auto c = Quantize(w, 2, 3, Scheme("fp8-e5m2-channel"));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->scales[0], 896.0f / 57344.0f);
  EXPECT_EQ(c->scales[1], 1.0f);  // all-zero row: scale 1
  EXPECT_EQ(c->codes[3], 0x00);
}

// ---------------------------------------------------------------- compressed-tensors packing
// Read: vllm-project/compressed-tensors 0.18 compressors/pack_quantized/helpers.py,
// pack_to_int32 / unpack_from_int32 (offset 1 << (b - 1), value i of a run at bits b * i of one
// bit stream, ceil(n * b / 32) words, zero padding; weight_zero_point packed along dim 0).

TEST(Pack, DocstringAndHandExamples) {
  // pack_to_int32 docstring, 8 bits: signed [1, 2] -> unsigned [129, 130] -> 33409.
  const std::vector<uint8_t> doc = {static_cast<uint8_t>(CodeFromSigned(1, 8)),
                                    static_cast<uint8_t>(CodeFromSigned(2, 8))};
  EXPECT_EQ(PackAlongCols(doc, 1, 2, 8), std::vector<int32_t>{33409});

  // 4 bits, signed [-8, -1, 0, 7, 1, 2, 3, 4, 5]: nibbles 0,7,8,F,9,A,B,C | D.
  std::vector<uint8_t> four;
  for (int s : {-8, -1, 0, 7, 1, 2, 3, 4, 5}) four.push_back(CodeFromSigned(s, 4));
  const std::vector<int32_t> packed4 = PackAlongCols(four, 1, 9, 4);
  ASSERT_EQ(packed4.size(), 2u);
  EXPECT_EQ(static_cast<uint32_t>(packed4[0]), 0xCBA9F870u);
  EXPECT_EQ(packed4[0], -878053264);  // stored as int32
  EXPECT_EQ(packed4[1], 0xD);

  // 3 bits, dense: value 10 (= 2) straddles words 0 and 1; K = 11 -> 33 bits -> 2 words.
  std::vector<uint8_t> three;
  for (int i = 0; i < 12; ++i) three.push_back(static_cast<uint8_t>(i % 8));
  const std::vector<int32_t> packed3 = PackAlongCols(std::span(three).first(11), 1, 11, 3);
  ASSERT_EQ(packed3.size(), 2u);
  EXPECT_EQ(static_cast<uint32_t>(packed3[0]), 0x88FAC688u);  // sum (i % 8) << 3i mod 2^32
  EXPECT_EQ(packed3[1], 0);
  // 12 values: value 11 (= 3) at bits 33..35 -> word 1 = 3 << 1, plus the top bit of value 10.
  const std::vector<int32_t> packed3b = PackAlongCols(three, 1, 12, 3);
  EXPECT_EQ(packed3b[1], 6);
  EXPECT_EQ(PackedLength(32, 3), 3);  // ceil(32 * 3 / 32); the pre-0.18 layout needed 4
  EXPECT_EQ(PackedLength(128, 4), 16);
  EXPECT_EQ(PackedLength(172, 2), 11);

  // Zero points pack along dim 0: [[1, 2], [3, 4], [5, 6]] at 4 bits -> [1, 2].
  const std::vector<int32_t> zeros = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(PackAlongRows(zeros, 3, 2, 4), (std::vector<int32_t>{0x531, 0x642}));
}

TEST(Pack, RoundTripsForEveryWidth) {
  std::mt19937 rng(kSeed);
  for (int bits : {2, 3, 4, 8}) {
    SCOPED_TRACE(bits);
    std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
    constexpr int64_t kRows = 5, kCols = 37;
    std::vector<uint8_t> codes(kRows * kCols);
    for (uint8_t& c : codes) c = static_cast<uint8_t>(code(rng));
    const std::vector<int32_t> packed = PackAlongCols(codes, kRows, kCols, bits);
    EXPECT_EQ(packed.size(), static_cast<size_t>(kRows * PackedLength(kCols, bits)));
    auto back = UnpackAlongCols(packed, kRows, kCols, bits);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, codes);

    std::vector<int32_t> zeros(kCols * 3);
    for (int32_t& z : zeros) z = code(rng);
    const std::vector<int32_t> zp = PackAlongRows(zeros, kCols, 3, bits);
    EXPECT_EQ(zp.size(), static_cast<size_t>(PackedLength(kCols, bits) * 3));
    auto zback = UnpackAlongRows(zp, kCols, 3, bits);
    ASSERT_TRUE(zback.ok());
    EXPECT_EQ(*zback, zeros);
  }
  // A quantized tensor's codes and zero points pack and unpack unchanged.
  const std::vector<float> w = RandomWeights(3, 64, kSeed);
  auto q = Quantize(w, 3, 64, Scheme("int3-g32-asym"));
  ASSERT_TRUE(q.ok());
  auto codes = UnpackAlongCols(PackAlongCols(q->codes, 3, 64, 3), 3, 64, 3);
  EXPECT_EQ(*codes, q->codes);
  auto zeros = UnpackAlongRows(PackAlongRows(q->zeros, 3, 2, 3), 3, 2, 3);
  EXPECT_EQ(*zeros, q->zeros);
}

TEST(Pack, BadInputIsAnError) {
  const std::vector<int32_t> packed(3, 0);
  EXPECT_FALSE(UnpackAlongCols(packed, 2, 16, 4).ok());  // needs 4 words
  EXPECT_FALSE(UnpackAlongCols(packed, 3, 8, 0).ok());
  EXPECT_FALSE(UnpackAlongCols(packed, 3, 8, 9).ok());
  EXPECT_FALSE(UnpackAlongRows(packed, 17, 3, 4).ok());  // needs 9 words
  EXPECT_FALSE(UnpackAlongRows(packed, -1, 3, 4).ok());
  EXPECT_TRUE(UnpackAlongRows(packed, 8, 3, 4).ok());
}

}  // namespace
}  // namespace qf
