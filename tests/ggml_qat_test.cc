// QAT on ggml blocks (methods::GgmlQatLinear): for every block type with codes, the training
// forward starts at the blocks' own values and freezes back to blocks that decode to what it
// runs; the header gradients are the derivatives of ggml's own decoder (checked by decoding the
// frozen blocks with d and m moved); Q4_0 trains exactly as its grid (int4-g32-sym, QatLinear);
// training a block of such linears lowers its output error and gives the same bytes on 1 and 2
// threads.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/ggml_blocks.h"
#include "formats/quantize.h"
#include "formats/scheme.h"
#include "methods/qat.h"
#include "test_util.h"

namespace qf {
namespace {

// The model-file block types (every row with codes).
std::vector<const GgmlBlockType*> Types() {
  std::vector<const GgmlBlockType*> out;
  for (const GgmlBlockType& t : GgmlBlockTypes())
    if (!t.activation_only && t.codes) out.push_back(&t);
  return out;
}

std::vector<float> Decode(const GgmlBlockType& t, const std::vector<std::byte>& q, int64_t n,
                          int64_t k) {
  std::vector<float> v(size_t(n * k));
  EXPECT_TRUE(DequantizeRowsGgml(t, q.data(), n, k, v.data()).ok());
  return v;
}

// n x k weights of type t: the type's own rounding of random weights, and its values.
struct Start {
  std::vector<float> w, values;
  std::vector<std::byte> blocks;
};
// Row 0 is all zeros and row 1 constant where n > 2 (blocks whose d is zero).
Start Quantized(const GgmlBlockType& t, int64_t n, int64_t k, uint64_t seed) {
  Start s;
  s.w = testing::RandomNormal(size_t(n * k), seed, 0.05f);
  if (n > 2)
    for (int64_t c = 0; c < k; ++c) s.w[size_t(c)] = 0.0f, s.w[size_t(k + c)] = 0.03f;
  s.blocks.resize(*GgmlRowsBytes(t, n, k));
  EXPECT_TRUE(QuantizeRowsGgml(t, s.w.data(), n, k, nullptr, s.blocks.data()).ok());
  s.values = Decode(t, s.blocks, n, k);
  return s;
}

float F16(float x) { return F16ToF32(F16BitsRne(x)); }

// The format table's header fields (GgmlCodeFormat d_at, m_at, run): d scales the values about
// zero (m = 0: doubling d doubles every value) and m only offsets them (d = 0: one value per run
// of `run` weights, and the runs differ where the type has sub-block mins).
TEST(GgmlQat, TheTableNamesTheScaleAndTheMinField) {
  for (const GgmlBlockType* t : Types()) {
    SCOPED_TRACE(t->name);
    const GgmlCodeFormat& f = *t->codes;
    const int64_t k = 512;
    const Start st = Quantized(*t, 1, k, 5);
    auto set = [&](std::vector<std::byte>& q, int at, float v) {
      const uint16_t h = F16BitsRne(v);
      for (size_t b = 0; b < q.size() / t->block_bytes; ++b)
        std::memcpy(q.data() + b * t->block_bytes + at, &h, 2);
    };
    std::vector<std::byte> a = st.blocks, b = st.blocks;
    if (f.m_at >= 0) set(a, f.m_at, 0.0f), set(b, f.m_at, 0.0f);
    for (size_t blk = 0; blk < b.size() / t->block_bytes; ++blk) {
      uint16_t h;
      std::memcpy(&h, b.data() + blk * t->block_bytes + f.d_at, 2);
      const uint16_t h2 = F16BitsRne(2.0f * F16ToF32(h));
      std::memcpy(b.data() + blk * t->block_bytes + f.d_at, &h2, 2);
    }
    const std::vector<float> va = Decode(*t, a, 1, k), vb = Decode(*t, b, 1, k);
    int64_t nonzero = 0;
    for (size_t i = 0; i < va.size(); ++i) {
      EXPECT_EQ(vb[i], 2.0f * va[i]) << i;
      nonzero += va[i] != 0.0f;
    }
    EXPECT_GT(nonzero, k / 2);
    if (f.m_at < 0) continue;
    std::vector<std::byte> m = st.blocks;
    set(m, f.d_at, 0.0f);
    set(m, f.m_at, 1.0f);
    const std::vector<float> vm = Decode(*t, m, 1, k);
    for (size_t i = 0; i < vm.size(); ++i) EXPECT_EQ(vm[i], vm[i - i % size_t(f.run)]) << i;
    EXPECT_NE(vm[0], 0.0f);
  }
}

TEST(GgmlQat, StartsAtTheBlocksValuesAndFreezesToWhatItRuns) {
  for (const GgmlBlockType* t : Types()) {
    SCOPED_TRACE(t->name);
    const int64_t n = 4, k = 512;
    const Start st = Quantized(*t, n, k, 7);
    // Latent weights at the blocks' values: the forward is the decoder's, bit for bit.
    auto q = methods::GgmlQatLinear::Init(*t, st.blocks, n, k, st.values);
    ASSERT_TRUE(q.ok()) << q.error().message();
    std::vector<float> fq(st.values.size());
    q->FakeQuantize(fq.data());
    EXPECT_EQ(fq, st.values);
    EXPECT_EQ(Decode(*t, q->Freeze(), n, k), st.values);
    // Moved latent weights and fp16-exact moved headers: the frozen blocks decode to the
    // forward's values, and those moved (the codes follow the latent weights).
    q = methods::GgmlQatLinear::Init(*t, st.blocks, n, k, st.w);
    ASSERT_TRUE(q.ok());
    for (size_t b = 0; b < q->s.size(); ++b) {
      q->s[b] = F16(q->s[b] * (b % 2 ? 1.125f : 0.875f));
      q->z[b] = F16(q->z[b] * 1.25f);
    }
    q->FakeQuantize(fq.data());
    EXPECT_EQ(Decode(*t, q->Freeze(), n, k), fq);
    EXPECT_NE(fq, st.values);
  }
}

// The header gradients of loss = Σ g · ŵ against ggml's decoder: at fixed codes ŵ is linear in
// the header floats d and m, so the difference of two decodings of the frozen blocks with d (or
// m) moved to other fp16 values, divided by the move, is ∂ŵ/∂d (∂ŵ/∂m) exactly. The trainer
// moves d with r = m / d fixed: ∂/∂d = Σ g (∂ŵ/∂d + r ∂ŵ/∂m); and m at fixed d through the
// weights out of the grid (those whose latent-weight gradient is 0): Σ g ∂ŵ/∂m over them.
TEST(GgmlQat, HeaderGradientsAreTheDecodersDerivatives) {
  for (const GgmlBlockType* t : Types()) {
    SCOPED_TRACE(t->name);
    const GgmlCodeFormat& f = *t->codes;
    const int64_t n = 2, k = 512;
    const Start st = Quantized(*t, n, k, 11);
    auto q = methods::GgmlQatLinear::Init(*t, st.blocks, n, k, st.w);
    ASSERT_TRUE(q.ok());
    for (size_t b = 0; b < q->s.size(); ++b)  // fp16 values (the frozen blocks hold them)
      q->s[b] = F16(q->s[b] * (b % 2 ? 1.0625f : 0.875f));  // some weights out of the grid
    const std::vector<std::byte> frozen = q->Freeze();
    const std::vector<float> g = testing::RandomNormal(st.w.size(), 12, 1.0f, 0.5f);
    std::vector<float> dw(st.w.size()), dd(q->s.size(), -1.0f), dr(q->s.size(), -1.0f);
    q->Backward(g.data(), dw.data(), dd.data(), dr.data(), 0, n);
    // ∂ŵ/∂d and ∂ŵ/∂m of every weight, from the decoder; the header values the blocks hold.
    std::vector<float> dv_dd(st.w.size(), 0.0f), dv_dm(st.w.size(), 0.0f);
    std::vector<float> held_d(q->s.size()), held_m(q->s.size(), 0.0f);
    for (const int at : {f.d_at, f.m_at}) {
      if (at < 0) continue;
      std::vector<std::byte> up = frozen, down = frozen;
      std::vector<float> step(q->s.size());
      for (size_t b = 0; b < q->s.size(); ++b) {
        uint16_t h;
        std::memcpy(&h, frozen.data() + b * t->block_bytes + at, 2);
        const float v = F16ToF32(h), hi = F16(v * 1.5f + 0.001f), lo = F16(v * 0.5f - 0.001f);
        (at == f.d_at ? held_d : held_m)[b] = v;
        const uint16_t hu = F16BitsRne(hi), lu = F16BitsRne(lo);
        std::memcpy(up.data() + b * t->block_bytes + at, &hu, 2);
        std::memcpy(down.data() + b * t->block_bytes + at, &lu, 2);
        step[b] = hi - lo;
      }
      const std::vector<float> vu = Decode(*t, up, n, k), vd = Decode(*t, down, n, k);
      std::vector<float>& dv = at == f.d_at ? dv_dd : dv_dm;
      for (size_t i = 0; i < dv.size(); ++i) dv[i] = (vu[i] - vd[i]) / step[i / size_t(t->block)];
    }
    int64_t out = 0;
    for (size_t b = 0; b < q->s.size(); ++b) {
      const double d = held_d[b], r = d != 0 ? held_m[b] / d : 0;
      double ref_d = 0, ref_r = 0;
      for (size_t i = b * size_t(t->block); i < (b + 1) * size_t(t->block); ++i) {
        ref_d += double(g[i]) * (dv_dd[i] + r * dv_dm[i]);
        if (dw[i] == 0.0f) ref_r += double(g[i]) * dv_dm[i], ++out;
      }
      EXPECT_NEAR(dd[b], ref_d, 2e-3 * (1 + std::fabs(ref_d))) << "d " << b;
      EXPECT_NEAR(dr[b], ref_r, 2e-3 * (1 + std::fabs(ref_r))) << "m " << b;
    }
    if (f.m_at < 0) {
      for (const float v : dr) EXPECT_EQ(v, 0.0f);
    }
    // The latent weights: straight through, except out of the grid.
    int64_t passed = 0;
    for (size_t i = 0; i < dw.size(); ++i) {
      EXPECT_TRUE(dw[i] == g[i] || dw[i] == 0.0f) << i;
      passed += dw[i] == g[i];
    }
    EXPECT_GT(passed, int64_t(dw.size()) / 2);
    EXPECT_GT(out, 0) << "no weight out of the grid";
  }
}

// The end-to-end pass's scale-only mode: codes frozen where the latent weights were, so moving
// those changes nothing; only d gets a gradient (m follows it: ∂/∂d at fixed m / d, the
// decoder's derivative along the values), and the frozen blocks hold those codes.
TEST(GgmlQat, FrozenCodesTrainOnlyTheScale) {
  for (const char* name : {"Q4_K", "Q2_K", "Q5_1", "IQ4_XS"}) {
    SCOPED_TRACE(name);
    const GgmlBlockType& t = *FindGgmlBlockType(name);
    const int64_t n = 2, k = 256;
    const Start st = Quantized(t, n, k, 31);
    auto q = methods::GgmlQatLinear::Init(t, st.blocks, n, k, st.values);
    ASSERT_TRUE(q.ok());
    q->FreezeCodes();
    for (float& w : q->w) w *= 3.0f;  // far from the grid: the codes stay
    std::vector<float> fq(st.values.size());
    q->FakeQuantize(fq.data());
    EXPECT_EQ(fq, st.values);
    EXPECT_EQ(Decode(t, q->Freeze(), n, k), st.values);
    const std::vector<float> g = testing::RandomNormal(fq.size(), 32, 1.0f, 0.5f);
    std::vector<float> dw(fq.size(), -1.0f), dd(q->s.size()), dm(q->s.size(), -1.0f);
    q->Backward(g.data(), dw.data(), dd.data(), dm.data(), 0, n);
    for (const float v : dw) EXPECT_EQ(v, 0.0f);
    for (const float v : dm) EXPECT_EQ(v, 0.0f);
    // d and m scaled together by (1 + e) scale every value by (1 + e): ∂/∂d = Σ g ŵ / d.
    for (size_t b = 0; b < dd.size(); ++b) {
      double ref = 0;
      for (size_t i = b * size_t(t.block); i < (b + 1) * size_t(t.block); ++i)
        ref += double(g[i]) * st.values[i] / q->s[b];
      EXPECT_NEAR(dd[b], ref, 1e-3 * (1 + std::fabs(ref))) << b;
    }
  }
}

// Q4_0's blocks hold int4-g32-sym (x = d · (code − 8), one fp16 d per 32 weights): trained as
// ggml blocks and as that scheme's grid (methods::QatLinear), the forward and gradients agree.
TEST(GgmlQat, Q4_0TrainsAsItsGrid) {
  const GgmlBlockType& t = *FindGgmlBlockType("Q4_0");
  const int64_t n = 4, k = 256;
  const Start st = Quantized(t, n, k, 21);
  QuantizedTensor grid;
  grid.scheme = *ParseScheme("int4-g32-sym");
  grid.rows = n;
  grid.cols = k;
  grid.codes.resize(size_t(n * k));
  for (size_t b = 0; b < size_t(n * k / 32); ++b) {
    const std::byte* block = st.blocks.data() + b * t.block_bytes;
    GgmlGetCodes(t, block, grid.codes.data() + b * 32);
    uint16_t d;
    std::memcpy(&d, block + t.codes->d_at, 2);
    grid.scales.push_back(F16ToF32(d));
  }
  auto deq = Dequantize(grid);
  ASSERT_TRUE(deq.ok());
  ASSERT_EQ(*deq, st.values);  // the same values
  auto a = methods::QatLinear::Init(grid, st.w);
  auto b = methods::GgmlQatLinear::Init(t, st.blocks, n, k, st.w);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t p = 0; p < a->s.size(); ++p) {
    a->s[p] *= 0.8f + 0.1f * float(p % 4);  // some weights clamp
    b->s[p] = a->s[p];
  }
  std::vector<float> fa(st.w.size()), fb(st.w.size());
  a->FakeQuantize(fa.data());
  b->FakeQuantize(fb.data());
  EXPECT_EQ(fa, fb);
  const std::vector<float> g = testing::RandomNormal(st.w.size(), 22);
  std::vector<float> dwa(g.size()), dwb(g.size()), dsa(a->s.size()), dsb(a->s.size()),
      dza(a->s.size()), dzb(a->s.size());
  a->Backward(g.data(), dwa.data(), dsa.data(), dza.data());
  b->Backward(g.data(), dwb.data(), dsb.data(), dzb.data(), 0, n);
  EXPECT_EQ(dwa, dwb);
  for (size_t p = 0; p < dsa.size(); ++p)
    EXPECT_NEAR(dsa[p], dsb[p], 1e-5 * (1 + std::fabs(dsa[p])));
  int64_t clamped = 0;
  for (const float v : dwa) clamped += v == 0.0f;
  EXPECT_GT(clamped, 0);
}

}  // namespace
}  // namespace qf
