// Kernels on ggml blocks (kernels/cpu/ggml_dot): on every SIMD target this binary contains and
// this CPU runs, the decoder equals the format table's reference decoder float for float and the
// GEMV agrees with the reference dot products; MatMulGgmlNT (which routes to them) agrees with
// its plain reference for decoding-sized and prefill-sized token counts.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "formats/ggml_blocks.h"
#include "kernels/cpu/ggml_dot.h"
#include "kernels/cpu/q8_gemm.h"
#include "kernels/qgemm.h"
#include "test_util.h"

namespace qf {
namespace {

using testing::ForEachTarget;

// rows x cols weights of a type: real encodings of heavy-tailed values, then random codes written
// into a third of the blocks (every code pattern, under the fitted headers), and a few fp16
// scales replaced by subnormal, negative and zero ones.
std::vector<std::byte> MakeBlocks(const GgmlBlockType& t, int64_t rows, int64_t cols,
                                  uint32_t seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> dist(4.f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = 0.02f * dist(rng);
  std::vector<std::byte> out(GgmlRowsBytes(t, rows, cols).value());
  EXPECT_TRUE(QuantizeRowsGgml(t, w.data(), rows, cols, nullptr, out.data()).ok());
  const int64_t blocks = rows * cols / t.block;
  std::vector<uint8_t> codes(static_cast<size_t>(t.block));
  for (int64_t b = 0; b < blocks; b += 3) {
    std::byte* blk = out.data() + size_t(b) * t.block_bytes;
    for (auto& c : codes) c = uint8_t(rng() % (1u << t.codes->bits));
    GgmlSetCodes(t, codes.data(), blk);
  }
  // The first fp16 of the block is d for every type but Q2_K, Q3_K, Q6_K (d at the end).
  const size_t d_at = t.name == "Q2_K" ? 80 : t.name == "Q3_K" ? 108 : t.name == "Q6_K" ? 208 : 0;
  const uint16_t odd[] = {0x0001, 0x83ff, 0x8000, 0x0000, 0xbc00};
  for (int64_t b = 1, i = 0; b < blocks && i < 5; b += 7, ++i) {
    std::byte* blk = out.data() + size_t(b) * t.block_bytes + d_at;
    std::memcpy(blk, &odd[i], 2);
  }
  return out;
}

std::vector<const GgmlBlockType*> ModelTypes() {
  std::vector<const GgmlBlockType*> out;
  for (const auto& t : GgmlBlockTypes())
    if (!t.activation_only) out.push_back(&t);
  return out;
}

TEST(GgmlKernels, EveryModelTypeHasKernels) {
  // At least one SIMD target beside the emulated baseline: ForEachTarget's loops below then
  // compare a vector path with the reference, not the baseline with itself.
  EXPECT_GE(hwy::SupportedAndGeneratedTargets().size(), 2u);
  const auto types = ModelTypes();
  EXPECT_EQ(types.size(), 12u);
  for (const auto* t : types) EXPECT_TRUE(kernels::GgmlKernelSupports(*t)) << t->name;
  EXPECT_FALSE(kernels::GgmlKernelSupports(*FindGgmlBlockType("Q8_K")));
}

TEST(GgmlKernels, AllScalesAtOnceEqualOneAtATime) {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 1000; ++trial) {
    uint8_t s[12], sc[8], m[8];
    for (auto& v : s) v = uint8_t(rng());
    ggml::GetScalesMinsK4(s, sc, m);
    for (int j = 0; j < 8; ++j) {
      uint8_t a, b;
      ggml::GetScaleMinK4(j, s, &a, &b);
      ASSERT_EQ(sc[j], a);
      ASSERT_EQ(m[j], b);
    }
  }
}

// GgmlDecodeRows(w) on every target, bit for bit the reference decoder's output `ref`.
void ExpectDecodeEqualsReference(const kernels::GgmlRows& w, const std::vector<float>& ref) {
  ForEachTarget([&] {
    std::vector<float> got(ref.size(), -1.f);
    kernels::GgmlDecodeRows(w, got.data());
    int64_t differ = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      uint32_t a, b;
      std::memcpy(&a, &ref[i], 4);
      std::memcpy(&b, &got[i], 4);
      differ += a != b;
    }
    EXPECT_EQ(differ, 0);
  });
}

TEST(GgmlKernels, DecodeEqualsTheReferenceDecoderOnEveryTarget) {
  for (const auto* t : ModelTypes()) {
    SCOPED_TRACE(std::string(t->name));
    const int64_t rows = 5, cols = 3 * 256;
    const auto blocks = MakeBlocks(*t, rows, cols, 7);
    std::vector<float> ref(static_cast<size_t>(rows * cols));
    ASSERT_TRUE(DequantizeRowsGgml(*t, blocks.data(), rows, cols, ref.data()).ok());
    ExpectDecodeEqualsReference(
        {t, blocks.data(), size_t(cols / t->block) * t->block_bytes, rows, cols}, ref);
  }
}

TEST(GgmlKernels, GemvAgreesWithTheReferenceOnEveryTarget) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (const auto* t : ModelTypes()) {
    SCOPED_TRACE(std::string(t->name));
    const int64_t rows = 9, cols = 5 * 256;  // an odd block count per row for the 256 types
    const auto blocks = MakeBlocks(*t, rows, cols, 11);
    const kernels::GgmlRows w{t, blocks.data(), size_t(cols / t->block) * t->block_bytes, rows,
                              cols};
    std::vector<float> dec(static_cast<size_t>(rows * cols));
    ASSERT_TRUE(DequantizeRowsGgml(*t, blocks.data(), rows, cols, dec.data()).ok());
    for (int64_t m : {1, 2, 3, 4, 7}) {
      SCOPED_TRACE(m);
      std::vector<float> x(static_cast<size_t>(m * cols));
      for (auto& v : x) v = nd(rng);
      const int64_t ldy = rows + 3;
      std::vector<float> ref(static_cast<size_t>(m * ldy), 0.f);
      kernels::GgmlGemvRef(w, x.data(), m, ref.data(), ldy);
      ForEachTarget([&] {
        // The fixed-point activations' largest level on this target (0: float GEMV).
        const int xmax = kernels::GgmlGemvActivationMax();
        EXPECT_TRUE(xmax == 0 || xmax >= 2047) << xmax;  // at least 12 bits
        std::vector<float> got(ref.size(), 0.f);
        kernels::GgmlGemv(w, x.data(), m, got.data(), ldy);
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t r = 0; r < rows; ++r) {
            const double bound =
                testing::GgmlGemvBound(&dec[size_t(r * cols)], &x[size_t(i * cols)], cols, 1e-6);
            const float a = ref[size_t(i * ldy + r)], b = got[size_t(i * ldy + r)];
            EXPECT_NEAR(a, b, bound) << "token " << i << " row " << r;
          }
          for (int64_t r = rows; r < ldy; ++r) EXPECT_EQ(got[size_t(i * ldy + r)], 0.f);
        }
      });
    }
  }
}

// x: two tokens, the first with an inf or NaN: on every target it takes the float GEMV (non-finite
// out for every row), and the second token stays within float rounding of the reference
// (1e-6 Σ|w x|; dec: the decoded weights).
void ExpectNonFiniteTokenTakesTheFloatPath(const kernels::GgmlRows& w,
                                           const std::vector<float>& dec,
                                           const std::vector<float>& x) {
  const int64_t rows = w.rows, cols = w.cols;
  std::vector<float> ref(static_cast<size_t>(2 * rows)), got(ref.size());
  kernels::GgmlGemvRef(w, x.data(), 2, ref.data(), rows);
  ForEachTarget([&] {
    kernels::GgmlGemv(w, x.data(), 2, got.data(), rows);
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_FALSE(std::isfinite(got[size_t(r)])) << r;
      double mag = 1e-30;
      for (int64_t k = 0; k < cols; ++k)
        mag += std::fabs(double(dec[size_t(r * cols + k)]) * x[size_t(cols + k)]);
      EXPECT_NEAR(got[size_t(rows + r)], ref[size_t(rows + r)], 1e-6 * mag) << r;
    }
  });
}

// A token with a NaN (or inf) takes the float GEMV: NaN out for it, the other token as usual.
TEST(GgmlKernels, GemvWithNonFiniteActivations) {
  std::mt19937 rng(8);
  std::normal_distribution<float> nd;
  for (const char* name : {"Q4_0", "Q4_K", "Q6_K"}) {
    SCOPED_TRACE(name);
    const GgmlBlockType& t = *FindGgmlBlockType(name);
    const int64_t rows = 6, cols = 512;
    const auto blocks = MakeBlocks(t, rows, cols, 21);
    const kernels::GgmlRows w{&t, blocks.data(), size_t(cols / t.block) * t.block_bytes, rows,
                              cols};
    std::vector<float> dec(static_cast<size_t>(rows * cols));
    ASSERT_TRUE(DequantizeRowsGgml(t, blocks.data(), rows, cols, dec.data()).ok());
    for (float bad :
         {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      std::vector<float> x(static_cast<size_t>(2 * cols));
      for (auto& v : x) v = nd(rng);
      x[5] = bad;
      ExpectNonFiniteTokenTakesTheFloatPath(w, dec, x);
    }
  }
}

TEST(GgmlKernels, MatMulGgmlAgreesWithItsReference) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (const char* name : {"Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS"}) {
    SCOPED_TRACE(name);
    const GgmlBlockType& t = *FindGgmlBlockType(name);
    const int64_t rows = 200, cols = 512;
    auto blocks = std::make_shared<std::vector<std::byte>>(MakeBlocks(t, rows, cols, 13));
    GgmlTensor w;
    w.type = &t;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = size_t(cols / t.block) * t.block_bytes;
    w.data = blocks->data();
    w.owner = blocks;
    std::vector<float> bias(static_cast<size_t>(rows));
    for (auto& v : bias) v = nd(rng);
    for (int64_t m : {1, 3, 40}) {
      SCOPED_TRACE(m);
      std::vector<float> x(static_cast<size_t>(m * cols));
      for (auto& v : x) v = nd(rng);
      std::vector<float> ref(static_cast<size_t>(m * rows)), got(ref.size());
      kernels::MatMulGgmlNTRef(x.data(), w, bias.data(), ref.data(), m);
      kernels::MatMulGgmlNT(x.data(), w, bias.data(), got.data(), m);
      // As in the GEMV test, plus the bias.
      std::vector<float> dec(static_cast<size_t>(rows * cols));
      ASSERT_TRUE(DequantizeRowsGgml(t, blocks->data(), rows, cols, dec.data()).ok());
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t r = 0; r < rows; ++r) {
          const double bound =
              testing::GgmlMatMulBound(w, m, &dec[size_t(r * cols)], &x[size_t(i * cols)], cols) +
              1e-6 * std::fabs(bias[size_t(r)]);
          EXPECT_NEAR(ref[size_t(i * rows + r)], got[size_t(i * rows + r)], bound)
              << "token " << i << " row " << r;
        }
      }
    }
  }
}

// ---- interleaved rows (GgmlInterleave: the legacy blocks, the k-quants)
// --------------------------

std::vector<const GgmlBlockType*> InterleavedTypes() {
  std::vector<const GgmlBlockType*> out;
  for (const auto* t : ModelTypes())
    if (kernels::GgmlInterleaves(*t)) out.push_back(t);
  return out;
}

kernels::GgmlRows Interleaved(const GgmlBlockType& t, const std::vector<std::byte>& plain,
                              std::vector<std::byte>& buf, int64_t rows, int64_t cols) {
  buf.assign(plain.size(), std::byte{0});
  kernels::GgmlInterleave(t, plain.data(), rows, cols, buf.data());
  return {&t, buf.data(), size_t(cols / t.block) * t.block_bytes, rows, cols, true};
}

TEST(GgmlKernels, InterleaveIsAPermutationUndoneByDeinterleave) {
  const auto types = InterleavedTypes();
  std::vector<std::string> names;
  for (const auto* t : types) names.emplace_back(t->name);
  EXPECT_EQ(names, (std::vector<std::string>{"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K",
                                             "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"}));
  for (const auto* t : types) {
    SCOPED_TRACE(std::string(t->name));
    const int64_t rows = 32, cols = 512;
    const auto plain = MakeBlocks(*t, rows, cols, 3);
    std::vector<std::byte> inter;
    const auto w = Interleaved(*t, plain, inter, rows, cols);
    EXPECT_NE(inter, plain);
    // The 16 rows' d come first, row 1's beside row 0's (d: the block's first fp16, Q2_K's
    // second-last, Q3_K's and Q6_K's last).
    const size_t d_at = t->name == "Q6_K"   ? 208
                        : t->name == "Q3_K" ? 108
                        : t->name == "Q2_K" ? 80
                                            : 0;
    EXPECT_EQ(std::memcmp(w.data + 2, plain.data() + w.row_bytes + d_at, 2), 0);
    auto sorted = [](std::vector<std::byte> v) {
      std::sort(v.begin(), v.end());
      return v;
    };
    EXPECT_EQ(sorted(inter), sorted(plain));
    std::vector<std::byte> back(plain.size());
    kernels::GgmlDeinterleave(*t, inter.data(), rows, cols, back.data());
    EXPECT_EQ(back, plain);
  }
}

TEST(GgmlKernels, InterleavedDecodeEqualsTheReferenceOnEveryTarget) {
  for (const auto* t : InterleavedTypes()) {
    SCOPED_TRACE(std::string(t->name));
    const int64_t rows = 48, cols = 3 * 256;
    const auto plain = MakeBlocks(*t, rows, cols, 17);
    std::vector<float> ref(static_cast<size_t>(rows * cols));
    ASSERT_TRUE(DequantizeRowsGgml(*t, plain.data(), rows, cols, ref.data()).ok());
    std::vector<std::byte> inter;
    const auto w = Interleaved(*t, plain, inter, rows, cols);
    ExpectDecodeEqualsReference(w, ref);
    std::vector<float> via_ref(ref.size());
    kernels::GgmlDecodeRowsRef(w, via_ref.data());
    EXPECT_EQ(via_ref, ref);
  }
}

// x: m tokens; the interleaved GEMV against the reference on every target, within the bound.
void ExpectInterleavedGemvWithinBound(const GgmlBlockType& t, const std::vector<std::byte>& plain,
                                      int64_t rows, int64_t cols, const std::vector<float>& x,
                                      int64_t m) {
  std::vector<float> dec(static_cast<size_t>(rows * cols));
  ASSERT_TRUE(DequantizeRowsGgml(t, plain.data(), rows, cols, dec.data()).ok());
  std::vector<std::byte> inter;
  const auto w = Interleaved(t, plain, inter, rows, cols);
  const int64_t ldy = rows + 5;
  std::vector<float> ref(static_cast<size_t>(m * ldy), 0.f);
  kernels::GgmlGemvRef(w, x.data(), m, ref.data(), ldy);
  ForEachTarget([&] {
    std::vector<float> got(ref.size(), 0.f);
    kernels::GgmlGemv(w, x.data(), m, got.data(), ldy);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t r = 0; r < rows; ++r) {
        const double bound =
            testing::GgmlGemvBound(&dec[size_t(r * cols)], &x[size_t(i * cols)], cols, 1e-6);
        EXPECT_NEAR(ref[size_t(i * ldy + r)], got[size_t(i * ldy + r)], bound)
            << "token " << i << " row " << r;
      }
      for (int64_t r = rows; r < ldy; ++r) EXPECT_EQ(got[size_t(i * ldy + r)], 0.f);
    }
  });
}

TEST(GgmlKernels, InterleavedGemvAgreesWithTheReferenceOnEveryTarget) {
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  for (const auto* t : InterleavedTypes()) {
    SCOPED_TRACE(std::string(t->name));
    const int64_t rows = 48, cols = 5 * 256;
    const auto plain = MakeBlocks(*t, rows, cols, 19);
    for (int64_t m : {1, 2, 3, 4, 7}) {
      SCOPED_TRACE(m);
      std::vector<float> x(static_cast<size_t>(m * cols));
      for (auto& v : x) v = nd(rng);
      ExpectInterleavedGemvWithinBound(*t, plain, rows, cols, x, m);
    }
  }
}

// The integer sums' worst case: every code and scale at its largest magnitude (Q4_0/1, Q4_K: 15,
// Q5_0/1: 31, Q2_K: 3, Q3_K: level -4, IQ4: level -127, Q5_K: 31, Q6_K: 63, Q8_0: -128; Q4_K's and
// Q5_K's scales and mins 63, Q2_K's 15, Q3_K's and IQ4_XS's -32, Q6_K's -128), every activation at
// the fixed-point maximum (Q4_K's super-block sum 63 * 15 * 8191 * 256 is just under 2^31; Q5_K's,
// 63 * 31 * 8191 * 256, would not be: it sums pairs of sub-blocks).
TEST(GgmlKernels, InterleavedGemvAtTheIntegerLimits) {
  for (const auto* t : InterleavedTypes()) {
    SCOPED_TRACE(std::string(t->name));
    const int64_t rows = 16, cols = 4 * 256;
    auto plain = MakeBlocks(*t, rows, cols, 23);
    // The largest raw code the kernels multiply (Q8_0: code 0 is level -128, Q3_K's -4, IQ4's
    // -127).
    const bool code0 = t->name == "Q8_0" || t->name == "Q3_K" || t->name.starts_with("IQ4");
    const uint8_t code = code0 ? 0 : uint8_t((1u << t->codes->bits) - 1);
    const std::vector<uint8_t> codes(static_cast<size_t>(t->block), code);
    const uint16_t one = 0x3c00;  // fp16 1.0
    for (int64_t b = 0; b < rows * cols / t->block; ++b) {
      std::byte* blk = plain.data() + size_t(b) * t->block_bytes;
      GgmlSetCodes(*t, codes.data(), blk);
      if (t->name == "Q6_K") {
        std::memcpy(blk + 208, &one, 2);
        std::memset(blk + 192, 0x80, 16);  // int8 scales -128
      } else if (t->name == "Q3_K") {
        std::memcpy(blk + 108, &one, 2);  // d
        std::memset(blk + 96, 0, 12);     // every 6-bit scale 0: -32
      } else if (t->name == "Q2_K") {
        std::memcpy(blk + 80, &one, 2);  // d
        std::memcpy(blk + 82, &one, 2);  // dmin
        std::memset(blk, 0xff, 16);      // every 4-bit scale and min 15
      } else {
        std::memcpy(blk, &one, 2);
      }
      if (t->name == "Q4_1" || t->name == "Q5_1") std::memcpy(blk + 2, &one, 2);  // m
      if (t->name == "IQ4_XS") std::memset(blk + 2, 0, 6);  // every 6-bit ls 0: scale -32
      if (t->name == "Q4_K" || t->name == "Q5_K") {
        std::memcpy(blk + 2, &one, 2);   // dmin
        std::memset(blk + 4, 0xff, 12);  // every 6-bit scale and min 63
      }
    }
    for (float sign : {1.f, -1.f}) {
      std::vector<float> x(static_cast<size_t>(cols), sign);
      ExpectInterleavedGemvWithinBound(*t, plain, rows, cols, x, 1);
    }
  }
}

TEST(GgmlKernels, InterleavedGemvWithNonFiniteActivations) {
  for (const auto* t : InterleavedTypes()) {
    SCOPED_TRACE(std::string(t->name));
    const int64_t rows = 32, cols = 512;
    const auto plain = MakeBlocks(*t, rows, cols, 29);
    std::vector<std::byte> inter;
    const auto w = Interleaved(*t, plain, inter, rows, cols);
    std::vector<float> dec(static_cast<size_t>(rows * cols));
    ASSERT_TRUE(DequantizeRowsGgml(*t, plain.data(), rows, cols, dec.data()).ok());
    std::vector<float> x(static_cast<size_t>(2 * cols), 0.5f);
    x[7] = std::numeric_limits<float>::quiet_NaN();
    ExpectNonFiniteTokenTakesTheFloatPath(w, dec, x);
  }
}

// MatMulGgmlNT on a tensor ForKernels interleaved (decoding and prefill token counts, rows
// split over threads in whole groups) against the plain reference; row slices decode alike.
TEST(GgmlKernels, MatMulOnInterleavedTensors) {
  std::mt19937 rng(6);
  std::normal_distribution<float> nd;
  for (const auto* t : InterleavedTypes()) {
    SCOPED_TRACE(std::string(t->name));
    const int64_t rows = 208, cols = 512;
    auto blocks = std::make_shared<std::vector<std::byte>>(MakeBlocks(*t, rows, cols, 31));
    GgmlTensor plain{t,      rows, cols, size_t(cols / t->block) * t->block_bytes, blocks->data(),
                     blocks, false};
    const GgmlTensor w = kernels::ForKernels(plain);
    ASSERT_TRUE(w.interleaved);
    EXPECT_NE(w.data, plain.data);
    EXPECT_FALSE(kernels::ForKernels(
                     GgmlTensor{t, 200, cols, plain.row_bytes, blocks->data(), blocks, false})
                     .interleaved);  // 200 rows: not whole groups
    std::vector<float> dec(static_cast<size_t>(rows * cols)), part(static_cast<size_t>(21 * cols));
    ASSERT_TRUE(DequantizeRowsGgml(*t, blocks->data(), rows, cols, dec.data()).ok());
    kernels::DequantizeRows(w, 37, 58, part.data());
    EXPECT_TRUE(std::equal(part.begin(), part.end(), dec.begin() + 37 * cols));
    for (int64_t m : {1, 5, 40}) {
      SCOPED_TRACE(m);
      std::vector<float> x(static_cast<size_t>(m * cols));
      for (auto& v : x) v = nd(rng);
      std::vector<float> ref(static_cast<size_t>(m * rows)), got(ref.size());
      kernels::MatMulGgmlNTRef(x.data(), plain, nullptr, ref.data(), m);
      kernels::MatMulGgmlNT(x.data(), w, nullptr, got.data(), m);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t r = 0; r < rows; ++r)
          EXPECT_NEAR(
              ref[size_t(i * rows + r)], got[size_t(i * rows + r)],
              testing::GgmlMatMulBound(w, m, &dec[size_t(r * cols)], &x[size_t(i * cols)], cols))
              << "token " << i << " row " << r;
    }
  }
}

// ---- the integer prefill (kernels/cpu/q8_gemm.h) ----------------------------------------------

// GgmlDecodeLevels: a * level - c is the reference decoder's float, bit for bit, on every target,
// for plain and interleaved rows; the span and the mins are the type's.
TEST(GgmlKernels, LevelsRebuildTheReferenceDecodeOnEveryTarget) {
  for (const auto* t : ModelTypes()) {
    SCOPED_TRACE(std::string(t->name));
    const int64_t rows = 32, cols = 2 * 256;
    const auto blocks = MakeBlocks(*t, rows, cols, 17);
    const size_t row_bytes = size_t(cols / t->block) * t->block_bytes;
    std::vector<float> ref(static_cast<size_t>(rows * cols));
    ASSERT_TRUE(DequantizeRowsGgml(*t, blocks.data(), rows, cols, ref.data()).ok());
    std::vector<std::byte> inter(blocks.size());
    const bool interleaves = kernels::GgmlInterleaves(*t);
    if (interleaves) kernels::GgmlInterleave(*t, blocks.data(), rows, cols, inter.data());
    const int want_span = t->name == "Q2_K" || t->name == "Q3_K" || t->name == "Q6_K" ? 16 : 32;
    const bool want_min = t->name == "Q4_1" || t->name == "Q5_1" || t->name == "Q2_K" ||
                          t->name == "Q4_K" || t->name == "Q5_K";
    ForEachTarget([&] {
      for (bool il : {false, true}) {
        if (il && !interleaves) continue;
        SCOPED_TRACE(il ? "interleaved" : "plain");
        std::vector<int8_t> q(static_cast<size_t>(rows * cols));
        std::vector<float> a(static_cast<size_t>(rows * cols / 16)), c(a.size());
        const kernels::GgmlLevelsInfo info = kernels::GgmlDecodeLevels(
            {t, il ? inter.data() : blocks.data(), row_bytes, rows, cols, il}, q.data(), a.data(),
            c.data());
        const int span = info.span;
        EXPECT_EQ(span, want_span);
        EXPECT_EQ(info.has_min, want_min);
        EXPECT_EQ(std::any_of(c.begin(), c.end(), [](float v) { return v != 0.f; }), want_min);
        int64_t differ = 0;
        for (int64_t i = 0; i < rows * cols; ++i) {
          const float v = a[size_t(i / 16)] * float(q[size_t(i)]) - c[size_t(i / 16)];
          const float r = ref[size_t(i)];
          if (!(std::memcmp(&v, &r, 4) == 0 || (std::isnan(v) && std::isnan(r)))) ++differ;
        }
        EXPECT_EQ(differ, 0);
        for (int64_t i = 0; i < rows * cols; i += span)  // one (a, c) per span
          for (int64_t j = i + 16; j < i + span; j += 16) {
            EXPECT_EQ(a[size_t(i / 16)], a[size_t(j / 16)]);
            EXPECT_EQ(c[size_t(i / 16)], c[size_t(j / 16)]);
          }
      }
    });
  }
}

// QuantizeQ8 (vectorised where the CPU allows) gives QuantizeQ8Ref's codes, scales and sums;
// a non-finite activation or a subnormal block scale is refused by both.
TEST(GgmlKernels, Q8ActivationsEqualTheirReference) {
  std::mt19937 rng(23);
  std::student_t_distribution<float> dist(3.f);
  const int64_t m = 70, K = 512;
  std::vector<float> x(static_cast<size_t>(m * K));
  for (auto& v : x) v = dist(rng);
  for (int k = 0; k < 32; ++k) x[size_t(K + 64 + k)] = 0.f;  // an all-zero block
  x[size_t(2 * K + 7)] = 1e6f;
  kernels::Q8Activations a, b;
  ASSERT_TRUE(kernels::QuantizeQ8(x.data(), m, K, a));
  ASSERT_TRUE(kernels::QuantizeQ8Ref(x.data(), m, K, b));
  EXPECT_EQ(a.u, b.u);
  EXPECT_EQ(a.d, b.d);
  EXPECT_EQ(a.s16, b.s16);
  EXPECT_EQ(a.z16, b.z16);
  EXPECT_EQ(a.z32, b.z32);
  EXPECT_EQ(b.u[size_t(K + 64)], 128);
  for (int64_t i = 0; i < m * K; ++i) {  // |x - d xq| <= d / 2
    const float d = b.d[size_t(i / 32)];
    ASSERT_LE(std::fabs(x[size_t(i)] - d * float(int(b.u[size_t(i)]) - 128)), d * 0.5001f) << i;
  }
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), 1e-42f}) {
    std::vector<float> y(x.begin(), x.begin() + 3 * K);
    for (int k = 0; k < 32; ++k) y[size_t(K + 32 + k)] = bad == 1e-42f ? bad : 0.f;
    if (bad != 1e-42f) y[size_t(K + 40)] = bad;
    EXPECT_FALSE(kernels::QuantizeQ8(y.data(), 3, K, a)) << bad;
    EXPECT_FALSE(kernels::QuantizeQ8Ref(y.data(), 3, K, b)) << bad;
  }
}

// Every int8 path the CPU has returns Q8GemmRef's floats bit for bit: spans of 16 and 32, with
// and without mins, rows not a multiple of 16, every token-count tail.
TEST(GgmlKernels, Q8GemmPathsEqualTheReference) {
  std::mt19937 rng(29);
  std::normal_distribution<float> nd;
  for (const char* name : {"Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K", "Q2_K", "IQ4_NL"}) {
    SCOPED_TRACE(name);
    const GgmlBlockType& t = *FindGgmlBlockType(name);
    const int64_t rows = 53, cols = 512;
    const auto blocks = MakeBlocks(t, rows, cols, 41);
    std::vector<int8_t> q(static_cast<size_t>(rows * cols));
    std::vector<float> a(static_cast<size_t>(rows * cols / 16)), c(a.size());
    const kernels::GgmlLevelsInfo info = kernels::GgmlDecodeLevels(
        {&t, blocks.data(), size_t(cols / t.block) * t.block_bytes, rows, cols, false}, q.data(),
        a.data(), c.data());
    const int span = info.span;
    const bool has_min = info.has_min;
    EXPECT_EQ(has_min, std::any_of(c.begin(), c.end(), [](float v) { return v != 0.f; }));
    EXPECT_EQ(has_min, t.name == "Q4_1" || t.name == "Q4_K" || t.name == "Q2_K");
    kernels::Q8Weights w;
    kernels::PackQ8Weights(q.data(), a.data(), has_min ? c.data() : nullptr, rows, cols, span, w);
    for (int64_t m : {1, 2, 3, 4, 5, 7, 11}) {
      SCOPED_TRACE(m);
      std::vector<float> x(static_cast<size_t>(m * cols));
      for (auto& v : x) v = nd(rng);
      kernels::Q8Activations xa;
      ASSERT_TRUE(kernels::QuantizeQ8(x.data(), m, cols, xa));
      std::vector<float> ref(static_cast<size_t>(m * rows));
      kernels::Q8GemmRef(q.data(), a.data(), has_min ? c.data() : nullptr, rows, cols, span, xa,
                         ref.data(), rows);
      for (kernels::Int8Path p : kernels::Int8Paths()) {
        SCOPED_TRACE(kernels::Int8PathName(p));
        std::vector<float> got(ref.size(), -1.f);
        kernels::Q8GemmOn(p, w, xa, got.data(), rows);
        EXPECT_EQ(std::memcmp(got.data(), ref.data(), ref.size() * sizeof(float)), 0);
      }
    }
  }
}

}  // namespace
}  // namespace qf
