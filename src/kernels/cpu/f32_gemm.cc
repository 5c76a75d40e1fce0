// The fp32 GEMM of f32_gemm.h, compiled once per SIMD target (foreach_target).
// Layout (BLIS's, without packing A): the output is cut into thread tiles of kTileRows rows x
// kTileCols columns; per tile and K block of kBlockK, the block of B is packed into panels of
// kPanel columns ([k][kPanel], zero-padded), then every kRows x kPanel register tile runs over
// the block: kVecs vectors of one packed row of B, times each of kRows broadcast A values,
// fused-added into kRows x kVecs accumulators. Each accumulator lane is one output's fma chain
// over k in order (the contract), so neither the target's vector width nor the tiling changes
// a bit.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/f32_gemm.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/memory.h"
#include "kernels/cpu/f32_gemm.h"

HWY_BEFORE_NAMESPACE();
namespace qf::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_NATIVE_FMA && HWY_TARGET != HWY_SCALAR
using DF = hn::ScalableTag<float>;
constexpr int64_t kLanes = int64_t(hn::MaxLanes(DF()));
// Register tile: kRows x kVecs accumulators, plus kVecs of B and one broadcast A value.
#if HWY_ARCH_X86 && HWY_TARGET > HWY_AVX3
constexpr int kRows = 6, kVecs = 2;  // 12 accumulators of 16 vector registers (AVX2)
#else
constexpr int kRows = 6, kVecs = 4;  // 24 of 32 (AVX-512: 64-column panels, as model dims)
#endif
constexpr int64_t kPanel = kVecs * kLanes;
// Tuned on llama-27m / Llama-3.2-1B shapes at 512 tokens (bench/blas_bench, AMD EPYC):
// 128 k per block keeps a 128 x 128 block of B (64 KiB) next to the A rows in L2; 512-row thread
// tiles pack each block of B once per 512 tokens.
constexpr int64_t kBlockK = 128;
constexpr int64_t kTileRows = 512;
constexpr int64_t kTileCols = std::max<int64_t>(1, 128 / kPanel) * kPanel;

// Columns [j0, j0 + cols) of op(B) over k in [k0, k0 + kc) as panels of kPanel columns: panel p
// at out + p * kc * kPanel, element (kk, jj) at kk * kPanel + jj, zeros past `cols`.
void PackB(BLayout layout, const float* b, int64_t ldb, int64_t j0, int64_t cols, int64_t k0,
           int64_t kc, float* out) {
  for (int64_t p0 = 0; p0 < cols; p0 += kPanel) {
    float* dst = out + p0 / kPanel * kc * kPanel;
    const int64_t w = std::min(kPanel, cols - p0);
    if (layout == BLayout::kNN) {
      for (int64_t kk = 0; kk < kc; ++kk) {
        const float* src = b + (k0 + kk) * ldb + j0 + p0;
        float* d = dst + kk * kPanel;
        std::copy(src, src + w, d);
        std::fill(d + w, d + kPanel, 0.0f);
      }
    } else {
      for (int64_t jj = 0; jj < w; ++jj) {
        const float* src = b + (j0 + p0 + jj) * ldb + k0;
        for (int64_t kk = 0; kk < kc; ++kk) dst[kk * kPanel + jj] = src[kk];
      }
      for (int64_t kk = 0; kk < kc && w < kPanel; ++kk)
        std::fill(dst + kk * kPanel + w, dst + (kk + 1) * kPanel, 0.0f);
    }
  }
}

// R rows x kPanel columns of C (row stride ldc): continues their chains (from C when `resume`,
// else from zero) over kc values of k: A's rows from a (stride lda), B's packed panel. Scales
// by alpha when `scale` (the last K block).
template <int R>
HWY_NOINLINE void RegisterTile(const float* a, int64_t lda, const float* panel, int64_t kc,
                               float* c, int64_t ldc, bool resume, bool scale, float alpha) {
  const DF d;
  hn::Vec<DF> acc[R][kVecs];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v)
      acc[r][v] = resume ? hn::LoadU(d, c + r * ldc + v * kLanes) : hn::Zero(d);
  for (int64_t kk = 0; kk < kc; ++kk) {
    const float* bp = panel + kk * kPanel;
    hn::Vec<DF> bv[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) bv[v] = hn::LoadU(d, bp + v * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const auto av = hn::Set(d, a[r * lda + kk]);
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[r][v] = hn::MulAdd(av, bv[v], acc[r][v]);
    }
  }
  if (scale) {
    const auto s = hn::Set(d, alpha);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[r][v] = hn::Mul(acc[r][v], s);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) hn::StoreU(acc[r][v], d, c + r * ldc + v * kLanes);
}

template <int... I>
void RunRows(int rows, std::integer_sequence<int, I...>, const float* a, int64_t lda,
             const float* panel, int64_t kc, float* c, int64_t ldc, bool resume, bool scale,
             float alpha) {
  ((rows == I + 1 ? RegisterTile<I + 1>(a, lda, panel, kc, c, ldc, resume, scale, alpha) : void()),
   ...);
}

// One thread tile: rows [i0, i0 + rows) x columns [j0, j0 + cols) of C, all of K.
void Tile(BLayout layout, int64_t i0, int64_t rows, int64_t j0, int64_t cols, int64_t k,
          float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
          int64_t ldc) {
  thread_local AlignedVector<float> packed(size_t(kBlockK * kTileCols));  // cols <= kTileCols
  const int64_t panels = (cols + kPanel - 1) / kPanel;
  // Columns past C's last: register tiles write them to `edge` (kRows x kPanel), and the real
  // ones are copied out (and in, to resume).
  alignas(64) float edge[kRows * kPanel];
  for (int64_t k0 = 0; k0 < k; k0 += kBlockK) {
    const int64_t kc = std::min(kBlockK, k - k0);
    const bool resume = k0 > 0, scale = k0 + kc == k && alpha != 1.0f;
    PackB(layout, b, ldb, j0, cols, k0, kc, packed.data());
    for (int64_t p = 0; p < panels; ++p) {
      const float* panel = packed.data() + p * kc * kPanel;
      const int64_t jp = j0 + p * kPanel, w = std::min(kPanel, cols - p * kPanel);
      for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
        const int nr = int(std::min<int64_t>(kRows, rows - r0));
        const float* ar = a + (i0 + r0) * lda + k0;
        float* cr = c + (i0 + r0) * ldc + jp;
        if (w == kPanel) {
          RunRows(nr, std::make_integer_sequence<int, kRows>(), ar, lda, panel, kc, cr, ldc, resume,
                  scale, alpha);
          continue;
        }
        for (int r = 0; r < nr && resume; ++r)
          std::copy(cr + r * ldc, cr + r * ldc + w, edge + r * kPanel);
        RunRows(nr, std::make_integer_sequence<int, kRows>(), ar, lda, panel, kc, edge, kPanel,
                resume, scale, alpha);
        for (int r = 0; r < nr; ++r)
          std::copy(edge + r * kPanel, edge + r * kPanel + w, cr + r * ldc);
      }
    }
  }
}

void F32GemmImpl(BLayout layout, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  const int64_t row_tiles = (m + kTileRows - 1) / kTileRows;
  const int64_t col_tiles = (n + kTileCols - 1) / kTileCols;
#pragma omp parallel for schedule(dynamic, 1) if (row_tiles * col_tiles > 1 && !omp_in_parallel())
  for (int64_t t = 0; t < row_tiles * col_tiles; ++t) {
    const int64_t i0 = t / col_tiles * kTileRows, j0 = t % col_tiles * kTileCols;
    Tile(layout, i0, std::min(kTileRows, m - i0), j0, std::min(kTileCols, n - j0), k, alpha, a, lda,
         b, ldb, c, ldc);
  }
}
#else  // no fused multiply-add in this target's vectors: the contract's plain loops
void F32GemmImpl(BLayout layout, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  F32GemmRef(layout, m, n, k, alpha, a, lda, b, ldb, c, ldc);
}
#endif

}  // namespace qf::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qf::kernels {

HWY_EXPORT(F32GemmImpl);

void F32Gemm(BLayout layout, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
             int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    return;
  }
  HWY_DYNAMIC_DISPATCH(F32GemmImpl)(layout, m, n, k, alpha, a, lda, b, ldb, c, ldc);
}

void F32GemmRef(BLayout layout, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (int64_t p = 0; p < k; ++p) {
        const float bv = layout == BLayout::kNT ? b[j * ldb + p] : b[p * ldb + j];
        acc = std::fma(a[i * lda + p], bv, acc);
      }
      c[i * ldc + j] = alpha == 1.0f ? acc : alpha * acc;
    }
}

void F32SyrkUpper(const float* x, int64_t m, int64_t k, float* c) {
  if (k <= 0) return;
  // Bands of kSyrkBand rows of C: the band's columns of X transposed once ([band, M], the GEMM's
  // A), times X (kNN) over the band's upper part, columns [i0, K).
  constexpr int64_t kSyrkBand = 256;
  std::vector<float> xt(size_t(std::min(kSyrkBand, k) * std::max<int64_t>(m, 1)));
  for (int64_t i0 = 0; i0 < k; i0 += kSyrkBand) {
    const int64_t rows = std::min(kSyrkBand, k - i0);
    for (int64_t p = 0; p < m; ++p)
      for (int64_t i = 0; i < rows; ++i) xt[size_t(i * m + p)] = x[p * k + i0 + i];
    F32Gemm(BLayout::kNN, rows, k - i0, m, 1.0f, xt.data(), m, x + i0, k, c + i0 * k + i0, k);
  }
}

}  // namespace qf::kernels
#endif
