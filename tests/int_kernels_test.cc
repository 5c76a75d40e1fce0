// The compressed-tensors kernels: the layout conversion (kernels/qgemm.h QuantMatrix), the integer
// weight-only decoder and GEMV (kernels/cpu/int_dot.h) against their references and against
// the plain decoder of a QuantizedTensor, the int8 GEMM (kernels/cpu/int8_gemm.h) on every
// path this CPU has against its reference, and W8A8's integer contract end to end.
#include <gtest/gtest.h>
#include <hwy/targets.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/activation.h"
#include "formats/quantize.h"
#include "kernels/cpu/a16_gemm.h"
#include "kernels/cpu/fp8_dot.h"
#include "kernels/cpu/fp8_gemm.h"
#include "kernels/cpu/int8_gemm.h"
#include "kernels/cpu/int_dot.h"
#include "kernels/qgemm.h"
#include "test_util.h"

namespace qf {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

using testing::ForEachTarget;
using testing::QuantizeOrDie;

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Case {
  std::string spec;
  int64_t n, k;
};
// Every integer width, groups of 32/64/128, per channel and per tensor, sym and asym, with
// cols that take the nibble layout (multiples of 64) and cols that do not, and rows in whole
// groups of 16 (int2/3/4 in groups of 32, 64 or more: the interleaved nibbles).
std::vector<Case> WeightOnlyCases() {
  std::vector<Case> out;
  for (const char* bits : {"int2", "int3", "int4", "int8"})
    for (const char* gran : {"-g32", "-g64", "-g128", "-channel", "-tensor"})
      for (const char* sym : {"-sym", "-asym"}) {
        const std::string spec = std::string(bits) + gran + sym;
        out.push_back({spec, 37, 256});
        if (std::string(gran) == "-channel" || std::string(gran) == "-tensor")
          out.push_back({spec, 19, 200});  // not a multiple of 64 (nor of 32): bytes, a tail
        if (std::string(gran) == "-g32") out.push_back({spec, 5, 96});  // odd chunk count
        out.push_back({spec, 48, 384});  // int2/3/4: interleaved nibbles
      }
  // Per-channel rows longer than one int32 span of the GEMV (kIntGemvSpan), interleaved and not.
  out.push_back({"int4-channel-asym", 16, 2240});
  out.push_back({"int3-channel-sym", 16, 2240});
  return out;
}

TEST(QuantMatrix, LayoutRoundTripsAndDecodesAsThePlainDecoder) {
  ForEachTarget([] {
    for (const Case& c : WeightOnlyCases()) {
      SCOPED_TRACE(c.spec + " " + std::to_string(c.n) + "x" + std::to_string(c.k));
      const std::vector<float> w = Random(c.n * c.k, 3);
      const QuantizedTensor q = QuantizeOrDie(w, c.n, c.k, c.spec);
      const kernels::QuantMatrix m = kernels::ToKernelLayout(q, ActQuant{});
      const bool nibbles = q.scheme.bits <= 4 && c.k % 64 == 0;
      const bool interleaved = nibbles && c.n % 16 == 0 && (m.group % 64 == 0 || m.group == 32);
      EXPECT_EQ(m.layout == kernels::QuantMatrix::Layout::kNibbles, nibbles && !interleaved);
      EXPECT_EQ(m.layout == kernels::QuantMatrix::Layout::kNibbles16, interleaved);
      const QuantizedTensor back = kernels::FromKernelLayout(m);
      EXPECT_EQ(back.codes, q.codes);
      EXPECT_EQ(back.scales, q.scales);
      EXPECT_EQ(back.zeros, q.zeros);
      std::vector<float> plain(static_cast<size_t>(c.n * c.k)), ref(plain.size()),
          fast(plain.size());
      kernels::DequantizeRows(q, 0, c.n, plain.data());
      kernels::IntDecodeRowsRef(m.Rows(0, c.n), ref.data());
      kernels::IntDecodeRows(m.Rows(0, c.n), fast.data());
      EXPECT_TRUE(SameBits(plain, ref));
      EXPECT_TRUE(SameBits(plain, fast));
      // A row range in the middle (whole groups of 16 for interleaved rows).
      const int64_t r0 = interleaved ? (c.n >= 32 ? 16 : 0) : 2, r1 = interleaved ? r0 + 16 : 5;
      std::vector<float> part(static_cast<size_t>((r1 - r0) * c.k));
      kernels::IntDecodeRows(m.Rows(r0, r1), part.data());
      EXPECT_EQ(0, std::memcmp(part.data(), plain.data() + r0 * c.k, part.size() * sizeof(float)));
    }
  });
}

// IntGemv is within its error bound of the reference: Σ|w| dx / 2 from the fixed-point
// activations plus float rounding.
TEST(IntGemv, WithinTheFixedPointBoundOfTheReference) {
  ForEachTarget([] {
    for (const Case& c : WeightOnlyCases()) {
      for (int64_t m : {1, 2, 3, 8, 11}) {
        SCOPED_TRACE(c.spec + " " + std::to_string(c.n) + "x" + std::to_string(c.k) +
                     " m=" + std::to_string(m));
        const std::vector<float> w = Random(c.n * c.k, 5);
        const QuantizedTensor q = QuantizeOrDie(w, c.n, c.k, c.spec);
        const kernels::QuantMatrix mat = kernels::ToKernelLayout(q, ActQuant{});
        std::vector<float> x = Random(m * c.k, 7, 2.0f);
        x[size_t(c.k / 2)] = 40.0f;  // an outlier in token 0 sets its step
        const int64_t ldy = c.n + 3;
        std::vector<float> ref(static_cast<size_t>(m * ldy), -1.0f);
        kernels::IntGemvRef(mat.Rows(0, c.n), x.data(), m, ref.data(), ldy);
        std::vector<float> y(ref.size(), -1.0f);
        kernels::IntGemv(mat.Rows(0, c.n), x.data(), m, y.data(), ldy);
        // Activations prepared once, rows split in two: the same bits.
        std::vector<int16_t> xq(static_cast<size_t>(m * c.k));
        std::vector<float> dx(static_cast<size_t>(m));
        ASSERT_TRUE(kernels::IntGemvActivations(x.data(), m, c.k, xq.data(), dx.data()));
        std::vector<float> split(y.size(), -1.0f);
        const int64_t h = c.n % 16 == 0 ? 16 : c.n / 2;
        kernels::IntGemvFixed(mat.Rows(0, h), xq.data(), dx.data(), m, split.data(), ldy);
        kernels::IntGemvFixed(mat.Rows(h, c.n), xq.data(), dx.data(), m, split.data() + h, ldy);
        EXPECT_TRUE(SameBits(y, split));
        std::vector<float> deq(static_cast<size_t>(c.n * c.k));
        kernels::IntDecodeRowsRef(mat.Rows(0, c.n), deq.data());
        for (int64_t t = 0; t < m; ++t) {
          for (int64_t r = 0; r < c.n; ++r)
            EXPECT_NEAR(y[size_t(t * ldy + r)], ref[size_t(t * ldy + r)],
                        testing::FixedPointGemvBound(deq.data() + r * c.k, x.data() + t * c.k, c.k,
                                                     kernels::kIntGemvActivationMax, 1e-5))
                << "row " << r << " token " << t;
          EXPECT_EQ(y[size_t(t * ldy + c.n)], -1.0f);  // ldy padding untouched
        }
      }
    }
  });
}

TEST(IntGemv, NonFiniteActivationsTakeTheFloatPath) {
  const int64_t n = 16, k = 128;
  const QuantizedTensor q = QuantizeOrDie(Random(n * k, 1), n, k, "int4-g32-asym");
  const kernels::QuantMatrix mat = kernels::ToKernelLayout(q, ActQuant{});
  std::vector<float> x = Random(2 * k, 2);
  x[5] = INFINITY;
  std::vector<float> y(2 * n), ref(2 * n);
  kernels::IntGemv(mat.Rows(0, n), x.data(), 2, y.data(), n);
  kernels::IntGemvRef(mat.Rows(0, n), x.data(), 2, ref.data(), n);
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_FALSE(std::isfinite(y[size_t(r)]));  // token 0 meets the infinity
    EXPECT_NEAR(y[size_t(n + r)], ref[size_t(n + r)], 1e-4f * (1 + std::fabs(ref[size_t(n + r)])));
  }
}

// Prefill (more than kQuantGemvTokens tokens) on the float tiles: the same tiles and sgemm calls
// as the plain path on the QuantizedTensor, so the same bits.
TEST(MatMulQuantNT, PrefillEqualsThePlainTilePathBitForBit) {
  for (const char* spec : {"int4-g128-sym", "int4-g32-asym", "int3-g64-asym", "int8-channel-sym",
                           "int2-tensor-asym", "fp8-e4m3-channel", "fp8-e4m3-tensor"}) {
    SCOPED_TRACE(spec);
    const int64_t n = 150, k = 256, m = 23;
    const QuantizedTensor q = QuantizeOrDie(Random(n * k, 9), n, k, spec);
    kernels::QuantMatrix mat = kernels::ToKernelLayout(q, ActQuant{});
    mat.float_prefill = true;  // integer weights: the tiles, not the A16 GEMM (tested below)
    const std::vector<float> x = Random(m * k, 4), bias = Random(n, 6);
    std::vector<float> y(static_cast<size_t>(m * n)), plain(y.size());
    kernels::MatMulQuantNT(x.data(), mat, ActQuant{}, bias.data(), y.data(), m);
    kernels::MatMulDequantNT(x.data(), q, bias.data(), plain.data(), m);
    EXPECT_TRUE(SameBits(y, plain));
  }
}

// ---- the A16 GEMM (integer weight-only prefill) ------------------------------------------------

// QuantizeA16 (AVX-512 where the CPU has it, tokens split over the threads) gives the plain
// reference's codes and steps; each code is its activation within half a step (and the float
// rounding of x / d); a zero span has
// step 0 and codes 0; a non-finite activation makes both refuse.
TEST(A16Gemm, ActivationsEqualTheirReference) {
  for (int64_t span : {32, 64, 128}) {
    SCOPED_TRACE(span);
    const int64_t m = 70, k = 256;
    std::vector<float> x = Random(m * k, 11, 3.0f);
    for (int64_t i = 0; i < span; ++i) x[size_t(k + i)] = 0.0f;  // token 1, span 0
    x[size_t(5 * k + 7)] = 1e30f;
    kernels::A16Activations a, r;
    ASSERT_TRUE(kernels::QuantizeA16(x.data(), m, k, span, a));
    ASSERT_TRUE(kernels::QuantizeA16Ref(x.data(), m, k, span, r));
    EXPECT_EQ(a.q, r.q);
    EXPECT_EQ(a.d, r.d);
    EXPECT_EQ(r.d[size_t(k / span)], 0.0f);
    int top = 0;
    for (int64_t t = 0; t < m; ++t)
      for (int64_t i = 0; i < k; ++i) {
        const float d = r.d[size_t(t * (k / span) + i / span)];
        const int16_t q = r.q[size_t(t * k + i)];
        top = std::max(top, std::abs(int(q)));
        // Half a step, plus the rounding of x / d in float (x times the step's inverse).
        const double v = x[size_t(t * k + i)];
        EXPECT_LE(std::fabs(double(q) * d - v), 0.5 * d + 2.5e-7 * std::fabs(v)) << t << " " << i;
      }
    EXPECT_EQ(top, kernels::kA16Max);
    x[size_t(3 * k + 1)] = NAN;
    EXPECT_FALSE(kernels::QuantizeA16(x.data(), m, k, span, a));
    EXPECT_FALSE(kernels::QuantizeA16Ref(x.data(), m, k, span, r));
    x[size_t(3 * k + 1)] = -INFINITY;
    EXPECT_FALSE(kernels::QuantizeA16(x.data(), m, k, span, a));
  }
}

// Every A16 path this CPU has returns A16GemmRef's floats bit for bit, for every integer width,
// group, per-channel/tensor scale, sym and asym scheme whose columns divide into spans; row
// ranges packed separately give the same rows.
TEST(A16Gemm, EveryPathEqualsTheReference) {
  int ran = 0;
  for (const Case& c : WeightOnlyCases()) {
    const QuantizedTensor q = QuantizeOrDie(Random(c.n * c.k, 13), c.n, c.k, c.spec);
    const kernels::QuantMatrix mat = kernels::ToKernelLayout(q, ActQuant{});
    const int64_t span = kernels::A16Span(c.k, mat.group);
    if (span == 0) continue;
    ++ran;
    for (int64_t m : {1, 5, 13}) {
      SCOPED_TRACE(c.spec + " " + std::to_string(c.n) + "x" + std::to_string(c.k) +
                   " m=" + std::to_string(m));
      std::vector<float> x = Random(m * c.k, 17, 2.0f);
      x[size_t(c.k / 3)] = 300.0f;  // an outlier sets its span's step
      kernels::A16Activations xa;
      ASSERT_TRUE(kernels::QuantizeA16Ref(x.data(), m, c.k, span, xa));
      const int64_t ldy = c.n + 3;
      std::vector<float> ref(static_cast<size_t>(m * ldy), -1.0f);
      kernels::A16GemmRef(mat.Rows(0, c.n), xa, ref.data(), ldy);
      for (kernels::Int8Path p : kernels::A16Paths()) {
        SCOPED_TRACE(kernels::Int8PathName(p));
        kernels::A16Weights pk;
        kernels::PackA16Weights(mat.Rows(0, c.n), span, pk);
        std::vector<float> y(ref.size(), -1.0f);
        kernels::A16GemmOn(p, pk, xa, y.data(), ldy);
        EXPECT_TRUE(SameBits(y, ref));  // the ldy padding (-1) untouched included
        if (c.n > 16) {
          kernels::A16Weights tail;
          kernels::PackA16Weights(mat.Rows(16, c.n), span, tail);
          std::vector<float> yt(ref.size(), -1.0f);
          kernels::A16GemmOn(p, tail, xa, yt.data() + 16, ldy);
          for (int64_t t = 0; t < m; ++t)
            EXPECT_EQ(0, std::memcmp(yt.data() + t * ldy + 16, ref.data() + t * ldy + 16,
                                     size_t(c.n - 16) * sizeof(float)));
        }
      }
    }
  }
  EXPECT_GT(ran, 30);
}

// MatMulA16 (the prefill MatMulQuantNT takes where A16GemmFast()) is the float product of the
// decoded weights within the 16-bit activations' rounding; MatMulQuantNT returns its bits where
// it runs, the tiles' elsewhere and where float_prefill is set; a non-finite activation makes
// MatMulA16 refuse and MatMulQuantNT take the tiles.
TEST(MatMulQuantNT, A16PrefillIsTheFloatProductWithinTheActivationRounding) {
  for (const char* spec : {"int4-g128-sym", "int4-g32-asym", "int3-g64-asym", "int8-channel-sym",
                           "int8-channel-asym", "int2-tensor-asym"}) {
    SCOPED_TRACE(spec);
    const int64_t n = 150, k = 256, m = 23;
    const QuantizedTensor q = QuantizeOrDie(Random(n * k, 9), n, k, spec);
    kernels::QuantMatrix mat = kernels::ToKernelLayout(q, ActQuant{});
    const int64_t span = kernels::A16Span(k, mat.group);
    ASSERT_GT(span, 0);
    std::vector<float> x = Random(m * k, 4), bias = Random(n, 6);
    x[size_t(2 * k + 100)] = -50.0f;
    std::vector<float> y(static_cast<size_t>(m * n), -7.0f), plain(y.size()), deq(size_t(n * k));
    ASSERT_TRUE(kernels::MatMulA16(x.data(), mat, bias.data(), y.data(), m));
    kernels::MatMulDequantNT(x.data(), q, bias.data(), plain.data(), m);
    kernels::DequantizeRows(q, 0, n, deq.data());
    for (int64_t t = 0; t < m; ++t)
      for (int64_t r = 0; r < n; ++r) {
        const size_t i = size_t(t * n + r);
        ASSERT_NEAR(y[i], plain[i],
                    testing::A16GemmBound(deq.data() + r * k, x.data() + t * k, k, span, 1e-5) +
                        1e-6 * std::fabs(bias[size_t(r)]))
            << "token " << t << " row " << r;
      }
    std::vector<float> via(y.size());
    kernels::MatMulQuantNT(x.data(), mat, ActQuant{}, bias.data(), via.data(), m);
    EXPECT_TRUE(SameBits(via, kernels::A16GemmFast() ? y : plain));
    mat.float_prefill = true;
    kernels::MatMulQuantNT(x.data(), mat, ActQuant{}, bias.data(), via.data(), m);
    EXPECT_TRUE(SameBits(via, plain));
    mat.float_prefill = false;
    x[size_t(k + 3)] = NAN;
    std::vector<float> untouched(y.size(), -7.0f), z = untouched;
    EXPECT_FALSE(kernels::MatMulA16(x.data(), mat, bias.data(), z.data(), m));
    EXPECT_TRUE(SameBits(z, untouched));
    kernels::MatMulQuantNT(x.data(), mat, ActQuant{}, bias.data(), via.data(), m);
    kernels::MatMulDequantNT(x.data(), q, bias.data(), plain.data(), m);
    EXPECT_TRUE(SameBits(via, plain));
  }
}

// ---- fp8 e4m3 -------------------------------------------------------------------------------

// Every byte value (NaNs included) decodes as the table does, on every target; the GEMV is the
// double-summed reference within float rounding.
TEST(Fp8Kernels, DecodeEqualsTheTableAndGemvTheReference) {
  ForEachTarget([] {
    const int64_t n = 9, k = 256 + 5;  // every byte, and a tail
    std::vector<uint8_t> codes(static_cast<size_t>(n * k));
    for (size_t i = 0; i < codes.size(); ++i) codes[i] = uint8_t(i * 37 % 256);
    for (int b = 0; b < 256; ++b) codes[size_t(b)] = uint8_t(b);
    std::vector<float> scales = Random(n, 2);
    const kernels::Fp8Rows rows{codes.data(), size_t(k), n, k, scales.data()};
    std::vector<float> ref(static_cast<size_t>(n * k)), fast(ref.size());
    kernels::Fp8DecodeRowsRef(rows, ref.data());
    kernels::Fp8DecodeRows(rows, fast.data());
    for (size_t i = 0; i < ref.size(); ++i) {
      if (std::isnan(ref[i])) {
        EXPECT_TRUE(std::isnan(fast[i])) << i;
      } else {
        EXPECT_EQ(std::memcmp(&ref[i], &fast[i], 4), 0) << i << ": " << ref[i] << " " << fast[i];
      }
    }
    // A NaN weight makes its row's output NaN; the other rows stay finite.
    EXPECT_FALSE(kernels::Fp8NanFree(codes.data(), codes.size()));
    for (size_t i = 0; i < codes.size(); ++i)
      if ((codes[i] & 0x7f) == 0x7f && i / size_t(k) != 4) codes[i] = 0;
    {
      const std::vector<float> x = Random(k, 3);
      std::vector<float> y(static_cast<size_t>(n));
      kernels::Fp8Gemv(rows, x.data(), 1, y.data(), n);
      for (int64_t r = 0; r < n; ++r) EXPECT_EQ(std::isnan(y[size_t(r)]), r == 4) << r;
    }
    for (size_t i = 0; i < codes.size(); ++i)
      if ((codes[i] & 0x7f) == 0x7f) codes[i] = 0;  // no NaN weights for the rest
    ASSERT_TRUE(kernels::Fp8NanFree(codes.data(), codes.size()));
    kernels::Fp8Rows nan_free = rows;
    nan_free.nan_free = true;
    for (int64_t m : {1, 3, 4, 6}) {
      const std::vector<float> x = Random(m * k, 3);
      std::vector<float> y(static_cast<size_t>(m * n)), yr(y.size()), yf(y.size());
      kernels::Fp8Gemv(rows, x.data(), m, y.data(), n);
      kernels::Fp8GemvRef(rows, x.data(), m, yr.data(), n);
      // Without the NaN select (rows known to hold no NaN code): the same bits.
      kernels::Fp8Gemv(nan_free, x.data(), m, yf.data(), n);
      EXPECT_EQ(std::memcmp(y.data(), yf.data(), y.size() * 4), 0) << "m=" << m;
      std::vector<float> deq(static_cast<size_t>(n * k));
      kernels::Fp8DecodeRowsRef(rows, deq.data());
      for (int64_t t = 0; t < m; ++t)
        for (int64_t r = 0; r < n; ++r) {
          double mag = 0.0;
          for (int64_t i = 0; i < k; ++i)
            mag += std::fabs(double(deq[size_t(r * k + i)]) * x[size_t(t * k + i)]);
          EXPECT_NEAR(y[size_t(t * n + r)], yr[size_t(t * n + r)], 1e-5 * mag + 1e-30);
        }
    }
  });
}

// QuantizeActivationsBf16's values times the scale are QuantizeActivations' values.
TEST(Fp8Kernels, ActivationValuesMatchTheFakeQuantization) {
  for (const char* spec : {"fp8-e4m3-token", "fp8-e4m3-tensor"}) {
    ActQuant a;
    a.scheme = *ParseActScheme(spec);
    a.scale = 0.01f;
    const int64_t m = 5, k = 301;
    std::vector<float> x = Random(m * k, 8, 3.0f);
    x[10] = 1e5f;    // saturates the static row
    x[11] = 1e-12f;  // underflows
    std::vector<float> fq(x.size());
    QuantizeActivationsRef(a, x.data(), fq.data(), m, k);
    std::vector<uint16_t> q(static_cast<size_t>(m * k));
    std::vector<float> s(static_cast<size_t>(m));
    ASSERT_TRUE(QuantizeActivationsBf16(a, x.data(), m, k, q.data(), k, s.data()));
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < k; ++c)
        ASSERT_EQ(BF16ToF32(q[size_t(r * k + c)]) * s[size_t(r)], fq[size_t(r * k + c)])
            << spec << " " << r << "," << c;
    x[3] = NAN;
    EXPECT_FALSE(QuantizeActivationsBf16(a, x.data(), m, k, q.data(), k, s.data()));
  }
}

// Both FP8 GEMM paths (the AVX512-BF16 kernel where the CPU has it, the fp32 FMAs on every Highway
// target) are the contract's chain bit for bit (odd k included, ldacc > rows, one and two threads);
// the chain is the exact sum within fp32 rounding.
TEST(Fp8Kernels, GemmPathsAreTheContractBitForBit) {
  std::mt19937 rng(5);
  // 18 × 8300: K in several chunks on the AMX path.
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{
           {16, 2}, {37, 71}, {64, 512}, {300, 130}, {20, 1}, {18, 8300}}) {
    std::vector<uint8_t> codes(static_cast<size_t>(n * k));
    for (auto& c : codes) c = uint8_t(rng() % 256);
    for (auto& c : codes)
      if ((c & 0x7f) == 0x7f) c = 0x40;  // no NaN
    std::vector<float> scales(static_cast<size_t>(n), 1.0f);
    const kernels::Fp8Rows rows{codes.data(), size_t(k), n, k, scales.data()};
    for (int64_t m : {1, 6, 7, 13, 40}) {
      SCOPED_TRACE(std::to_string(n) + "x" + std::to_string(k) + " m=" + std::to_string(m));
      const int64_t cols2 = kernels::Fp8GemmCols2(k);
      std::vector<uint16_t> a(static_cast<size_t>(m * cols2), 0);
      for (int64_t t = 0; t < m; ++t)
        for (int64_t c = 0; c < k; ++c)
          a[size_t(t * cols2 + c)] =
              uint16_t(BitsFromF32(F8E4M3Values()[rng() % 256 % 0x7f]) >> 16 | (rng() % 2) << 15);
      const int64_t ld = n + 5;
      std::vector<float> ref(static_cast<size_t>(m * ld), -7.0f);
      kernels::Fp8GemmRef(rows, a.data(), m, ref.data(), ld);
      std::vector<double> exact(static_cast<size_t>(m * n)), mag(exact.size());
      for (int64_t t = 0; t < m; ++t) {
        for (int64_t r = 0; r < n; ++r) {
          double e = 0.0, g = 0.0;
          for (int64_t c = 0; c < k; ++c) {
            const double p = double(BF16ToF32(a[size_t(t * cols2 + c)])) *
                             F8E4M3Values()[codes[size_t(r * k + c)]];
            e += p;
            g += std::fabs(p);
          }
          exact[size_t(t * n + r)] = e;
          mag[size_t(t * n + r)] = g;
          ASSERT_NEAR(ref[size_t(t * ld + r)], e, 1e-6 * g + 1e-30);
        }
      }
      auto same_as_ref =
          [&](void (*gemm)(const kernels::Fp8Rows&, const uint16_t*, int64_t, float*, int64_t),
              const char* name) {
            for (int threads : {1, 2}) {
              omp_set_num_threads(threads);
              std::vector<float> acc(ref.size(), -7.0f);
              gemm(rows, a.data(), m, acc.data(), ld);
              ASSERT_EQ(0, std::memcmp(acc.data(), ref.data(), acc.size() * sizeof(float)))
                  << name << ", " << threads << " threads";
            }
          };
      ForEachTarget([&] { same_as_ref(kernels::Fp8GemmFma, "fp32 path"); });
      // A CPU whose vdpbf16ps rounds otherwise than Intel's manual says never runs that path
      // (Fp8Gemm, checked next, is then the fp32 path); the CPUs this suite has run on do not.
      if (kernels::Fp8GemmBf16IsExact()) same_as_ref(kernels::Fp8GemmBf16, "AVX512-BF16 path");
      if (!kernels::Fp8GemmAmxAvailable()) {
        same_as_ref(kernels::Fp8Gemm, "chosen path");
        continue;
      }
      // AMX: fp32 sums of exact products within the bound of a K-term fp32 sum, and the same bits
      // for a token and a row whatever else the call holds (token count, first row).
      std::vector<float> amx(ref.size(), -7.0f);
      kernels::Fp8GemmAmx(rows, a.data(), m, amx.data(), ld);
      for (int64_t t = 0; t < m; ++t)
        for (int64_t r = 0; r < n; ++r)
          ASSERT_NEAR(amx[size_t(t * ld + r)], exact[size_t(t * n + r)],
                      double(k) * 0x1p-24 * mag[size_t(t * n + r)] + 1e-30)
              << "AMX path, token " << t << ", row " << r;
      std::vector<float> chosen(ref.size(), -7.0f);
      kernels::Fp8Gemm(rows, a.data(), m, chosen.data(), ld);
      ASSERT_EQ(0, std::memcmp(chosen.data(), amx.data(), amx.size() * sizeof(float)))
          << "Fp8Gemm runs the AMX path where it is available";
      const int64_t t1 = m - 1, r1 = n > 16 ? 16 : 0;
      const kernels::Fp8Rows tail{codes.data() + r1 * k, size_t(k), n - r1, k, scales.data()};
      std::vector<float> one(static_cast<size_t>(n - r1), -7.0f);
      kernels::Fp8GemmAmx(tail, a.data() + t1 * cols2, 1, one.data(), n - r1);
      ASSERT_EQ(0, std::memcmp(one.data(), amx.data() + t1 * ld + r1, one.size() * sizeof(float)))
          << "AMX path: token " << t1 << " alone, rows from " << r1;
    }
  }
}

// FP8 W8A8 prefill (the bf16 GEMM where the CPU has it) is the fake quantization within fp32
// rounding, with a bias, dynamic and static activations.
TEST(MatMulQuantNT, Fp8PrefillIsTheFloatPathWithinFp32Rounding) {
  for (const char* wspec : {"fp8-e4m3-channel", "fp8-e4m3-tensor"})
    for (const char* aspec : {"fp8-e4m3-token", "fp8-e4m3-tensor"}) {
      SCOPED_TRACE(std::string(wspec) + " " + aspec);
      const int64_t n = 70, k = 201, m = 23;
      const QuantizedTensor q = QuantizeOrDie(Random(n * k, 12), n, k, wspec);
      ActQuant a;
      a.scheme = *ParseActScheme(aspec);
      a.scale = 0.01f;
      const kernels::QuantMatrix mat = kernels::ToKernelLayout(q, a);
      const std::vector<float> x = Random(m * k, 13), bias = Random(n, 14);
      std::vector<float> y(static_cast<size_t>(m * n)), ref(y.size());
      kernels::MatMulQuantNT(x.data(), mat, a, bias.data(), y.data(), m);
      kernels::MatMulQuantNTRef(x.data(), mat, a, bias.data(), ref.data(), m);
      for (size_t i = 0; i < y.size(); ++i)
        EXPECT_NEAR(y[i], ref[i], 2e-5f * (1.0f + std::fabs(ref[i])));
    }
}

// ---- int8 × int8 ----------------------------------------------------------------------------

TEST(Int8Gemm, EveryPathEqualsTheReference) {
  const std::vector<kernels::Int8Path> paths = kernels::Int8GemmPaths();
  std::string names;
  for (auto p : paths) names += std::string(kernels::Int8PathName(p)) + " ";
  std::printf("int8 GEMM paths on this CPU: %s\n", names.c_str());
  std::mt19937 rng(17);
  // 20 × 9000: K in several chunks on the AMX path.
  for (auto [n, k] : std::vector<std::pair<int64_t, int64_t>>{
           {16, 4}, {37, 70}, {64, 512}, {50, 131}, {1, 9}, {20, 9000}}) {
    std::vector<int8_t> w(static_cast<size_t>(n * k));
    for (auto& v : w) v = int8_t(int(rng() % 256) - 128);
    w[0] = -128;  // the extremes
    w[1] = 127;
    std::vector<int8_t> packed(kernels::Int8PackedBytes(n, k));
    std::vector<int32_t> sums(static_cast<size_t>(kernels::Int8Rows16(n)));
    kernels::Int8Pack(w.data(), n, k, packed.data(), sums.data());
    const kernels::Int8Rows rows{packed.data(), sums.data(), n, k};
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c)
        ASSERT_EQ(kernels::Int8Weight(rows, r, c), w[size_t(r * k + c)]);
    for (int64_t m : {1, 2, 5, 6, 7, 13, 40, 64}) {  // 40, 64: whole 32-token blocks
      const int64_t cols4 = kernels::Int8Cols4(k), ld = kernels::Int8Rows16(n);
      std::vector<uint8_t> au(static_cast<size_t>(m * cols4));
      for (auto& v : au) v = uint8_t(rng() % 256);
      au[0] = 0;  // activation -128
      au[1] = 255;
      std::vector<int32_t> ref(static_cast<size_t>(m * ld), 7);
      kernels::Int8GemmRef(rows, au.data(), m, 0, n, ref.data(), ld);
      for (int64_t t = 0; t < m; ++t)
        for (int64_t r = 0; r < n; ++r) {
          int64_t s = 0;
          for (int64_t c = 0; c < k; ++c)
            s += int64_t(int(au[size_t(t * cols4 + c)]) - 128) * w[size_t(r * k + c)];
          ASSERT_EQ(ref[size_t(t * ld + r)], s);
        }
      for (kernels::Int8Path p : paths) {
        SCOPED_TRACE(std::string(kernels::Int8PathName(p)) + " " + std::to_string(n) + "x" +
                     std::to_string(k) + " m=" + std::to_string(m));
        std::vector<int32_t> acc(ref.size(), 7);
        kernels::Int8GemmOn(p, rows, au.data(), m, 0, n, acc.data(), ld);
        for (int64_t t = 0; t < m; ++t)
          for (int64_t r = 0; r < n; ++r)
            ASSERT_EQ(acc[size_t(t * ld + r)], ref[size_t(t * ld + r)]) << t << "," << r;
        if (n > 16) {  // a range starting at the second block
          std::vector<int32_t> part(ref.size(), 7);
          kernels::Int8GemmOn(p, rows, au.data(), m, 16, n, part.data(), ld);
          for (int64_t t = 0; t < m; ++t)
            for (int64_t r = 16; r < n; ++r)
              ASSERT_EQ(part[size_t(t * ld + r)], ref[size_t(t * ld + r)]);
        }
      }
    }
  }
}

// QuantizeActivationsU8's codes are QuantizeActivations' values divided by the scale.
TEST(Int8Gemm, ActivationCodesMatchTheFakeQuantization) {
  for (const char* spec : {"int8-token", "int8-tensor"}) {
    ActQuant a;
    a.scheme = *ParseActScheme(spec);
    a.scale = 0.05f;
    const int64_t m = 7, k = 300;
    std::vector<float> x = Random(m * k, 8, 3.0f);
    x[10] = 1000.0f;  // saturates the static row
    std::vector<float> fq(x.size());
    QuantizeActivationsRef(a, x.data(), fq.data(), m, k);
    std::vector<uint8_t> q(static_cast<size_t>(m * k));
    std::vector<float> s(static_cast<size_t>(m));
    ASSERT_TRUE(QuantizeActivationsU8(a, x.data(), m, k, q.data(), k, s.data()));
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < k; ++c)
        ASSERT_EQ(float(int(q[size_t(r * k + c)]) - 128) * s[size_t(r)], fq[size_t(r * k + c)]);
    x[3] = NAN;
    EXPECT_FALSE(QuantizeActivationsU8(a, x.data(), m, k, q.data(), k, s.data()));
  }
}

// W8A8: MatMulQuantNT equals the exact integer product times the scales (the reference) bit
// for bit at every token count, sym and asym weights, per channel and per tensor, dynamic and
// static activations, with a bias; and is within fp32 rounding of the fake quantization.
TEST(MatMulQuantNT, W8A8IsTheExactIntegerProductTimesTheScales) {
  for (const char* wspec : {"int8-channel-sym", "int8-channel-asym", "int8-tensor-sym"})
    for (const char* aspec : {"int8-token", "int8-tensor"})
      for (int64_t m : {1, 3, 8, 9, 40}) {
        SCOPED_TRACE(std::string(wspec) + " " + aspec + " m=" + std::to_string(m));
        const int64_t n = 70, k = 200;
        const QuantizedTensor q = QuantizeOrDie(Random(n * k, 12), n, k, wspec);
        ActQuant a;
        a.scheme = *ParseActScheme(aspec);
        a.scale = 0.02f;
        const kernels::QuantMatrix mat = kernels::ToKernelLayout(q, a);
        ASSERT_EQ(mat.layout, kernels::QuantMatrix::Layout::kInt8x16);
        const std::vector<float> x = Random(m * k, 13), bias = Random(n, 14);
        std::vector<float> y(static_cast<size_t>(m * n)), ref(y.size()), fake(y.size());
        kernels::MatMulQuantNT(x.data(), mat, a, bias.data(), y.data(), m);
        kernels::MatMulQuantNTRef(x.data(), mat, a, bias.data(), ref.data(), m);
        EXPECT_TRUE(SameBits(y, ref));
        // The fake quantization: dequantized activations times dequantized weights in float.
        std::vector<float> xq(x.size());
        QuantizeActivationsRef(a, x.data(), xq.data(), m, k);
        kernels::MatMulDequantNTRef(xq.data(), q, bias.data(), fake.data(), m);
        for (size_t i = 0; i < y.size(); ++i)
          EXPECT_NEAR(y[i], fake[i], 1e-5f * (1.0f + std::fabs(fake[i])));
      }
}

TEST(MatMulQuantNT, W8A8WithANonFiniteActivationTakesTheFloatPath) {
  const int64_t n = 32, k = 64, m = 2;
  const QuantizedTensor q = QuantizeOrDie(Random(n * k, 1), n, k, "int8-channel-sym");
  ActQuant a;
  a.scheme = *ParseActScheme("int8-token");
  const kernels::QuantMatrix mat = kernels::ToKernelLayout(q, a);
  std::vector<float> x = Random(m * k, 2);
  x[k + 3] = NAN;
  std::vector<float> y(static_cast<size_t>(m * n));
  kernels::MatMulQuantNT(x.data(), mat, a, nullptr, y.data(), m);
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_TRUE(std::isfinite(y[size_t(r)]));
    EXPECT_TRUE(std::isnan(y[size_t(n + r)]));
  }
}

}  // namespace
}  // namespace qf
