// Blocked Cholesky and triangular inverse in double (see cholesky.h). The GEMM kernel is compiled
// once per SIMD target (foreach_target); the blocked drivers, once.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/cholesky.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "kernels/cpu/cholesky.h"

HWY_BEFORE_NAMESPACE();
namespace qf::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_NATIVE_FMA && HWY_TARGET != HWY_SCALAR
using DD = hn::ScalableTag<double>;
constexpr int64_t kLanes = int64_t(hn::MaxLanes(DD()));
// Register tile: kRows x kVecs accumulators, kVecs vectors of B, one broadcast A value.
#if HWY_ARCH_X86 && HWY_TARGET > HWY_AVX3
constexpr int kRows = 6, kVecs = 2;  // 12 of 16 vector registers (AVX2)
#else
constexpr int kRows = 6, kVecs = 4;  // 24 of 32 (AVX-512)
#endif

// R rows x kVecs vectors of C: the chains over all k.
template <int R>
HWY_NOINLINE void Tile(double s, int64_t k, const double* a, int64_t a_rs, int64_t a_cs,
                       const double* b, int64_t ldb, double* c, int64_t ldc) {
  const DD d;
  hn::Vec<DD> acc[R][kVecs];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) acc[r][v] = hn::LoadU(d, c + r * ldc + v * kLanes);
  for (int64_t p = 0; p < k; ++p) {
    const double* bp = b + p * ldb;
    hn::Vec<DD> bv[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) bv[v] = hn::LoadU(d, bp + v * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const auto av = hn::Set(d, s * a[r * a_rs + p * a_cs]);
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[r][v] = hn::MulAdd(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) hn::StoreU(acc[r][v], d, c + r * ldc + v * kLanes);
}

// R rows of C, columns [j, n) past the last whole panel: one vector, then single columns.
template <int R>
void EdgeRows(double s, int64_t j, int64_t n, int64_t k, const double* a, int64_t a_rs,
              int64_t a_cs, const double* b, int64_t ldb, double* c, int64_t ldc) {
  const DD d;
  for (; j + kLanes <= n; j += kLanes) {
    hn::Vec<DD> acc[R];
    for (int r = 0; r < R; ++r) acc[r] = hn::LoadU(d, c + r * ldc + j);
    for (int64_t p = 0; p < k; ++p) {
      const auto bv = hn::LoadU(d, b + p * ldb + j);
      for (int r = 0; r < R; ++r)
        acc[r] = hn::MulAdd(hn::Set(d, s * a[r * a_rs + p * a_cs]), bv, acc[r]);
    }
    for (int r = 0; r < R; ++r) hn::StoreU(acc[r], d, c + r * ldc + j);
  }
  for (; j < n; ++j)
    for (int r = 0; r < R; ++r) {
      double acc = c[r * ldc + j];
      for (int64_t p = 0; p < k; ++p)
        acc = std::fma(s * a[r * a_rs + p * a_cs], b[p * ldb + j], acc);
      c[r * ldc + j] = acc;
    }
}

// Rows [i0, i0 + m) of C on one thread. Each panel of kPanel columns of B is copied into a
// contiguous [k][kPanel] block first (B's rows may lie far apart: a 64 KiB stride maps them all
// to one L1 set), then every R-row register tile runs over it.
constexpr int64_t kPanel = kVecs * kLanes;
// Tile<rows> for 1 <= rows <= kRows, B as a packed panel.
template <int... I>
void TileOfRows(int64_t rows, std::integer_sequence<int, I...>, double s, int64_t k,
                const double* a, int64_t a_rs, int64_t a_cs, const double* panel, double* c,
                int64_t ldc) {
  ((rows == I + 1 ? Tile<I + 1>(s, k, a, a_rs, a_cs, panel, kPanel, c, ldc) : void()), ...);
}
void RowsSerial(double s, int64_t m, int64_t n, int64_t k, const double* a, int64_t a_rs,
                int64_t a_cs, const double* b, int64_t ldb, double* c, int64_t ldc) {
  if (m < kRows) {  // too few rows to repay a copy of B: straight from it
    for (int64_t i = 0; i < m; ++i)
      EdgeRows<1>(s, 0, n, k, a + i * a_rs, a_rs, a_cs, b, ldb, c + i * ldc, ldc);
    return;
  }
  thread_local std::vector<double> packed;
  packed.resize(size_t(k * kPanel));
  const int64_t whole = n / kPanel * kPanel;
  for (int64_t j = 0; j < whole; j += kPanel) {
    for (int64_t p = 0; p < k; ++p)
      std::copy(b + p * ldb + j, b + p * ldb + j + kPanel, packed.data() + p * kPanel);
    for (int64_t i = 0; i < m; i += kRows)
      TileOfRows(std::min<int64_t>(kRows, m - i), std::make_integer_sequence<int, kRows>(), s, k,
                 a + i * a_rs, a_rs, a_cs, packed.data(), c + i * ldc + j, ldc);
  }
  if (whole == n) return;
  int64_t i = 0;
  for (; i + kRows <= m; i += kRows)
    EdgeRows<kRows>(s, whole, n, k, a + i * a_rs, a_rs, a_cs, b, ldb, c + i * ldc, ldc);
  for (; i < m; ++i)
    EdgeRows<1>(s, whole, n, k, a + i * a_rs, a_rs, a_cs, b, ldb, c + i * ldc, ldc);
}

void GemmAccImpl(double s, int64_t m, int64_t n, int64_t k, const double* a, int64_t a_rs,
                 int64_t a_cs, const double* b, int64_t ldb, double* c, int64_t ldc) {
  constexpr int64_t kStripRows = 64;
  const int64_t strips = (m + kStripRows - 1) / kStripRows;
  const bool par = strips > 1 && !omp_in_parallel();
#pragma omp parallel for schedule(dynamic, 1) if (par)
  for (int64_t t = 0; t < strips; ++t) {
    const int64_t i = t * kStripRows;
    RowsSerial(s, std::min(kStripRows, m - i), n, k, a + i * a_rs, a_rs, a_cs, b, ldb, c + i * ldc,
               ldc);
  }
}
#else  // no fused multiply-add in this target's vectors: the same chains, one entry at a time
void GemmAccImpl(double s, int64_t m, int64_t n, int64_t k, const double* a, int64_t a_rs,
                 int64_t a_cs, const double* b, int64_t ldb, double* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = c[i * ldc + j];
      for (int64_t p = 0; p < k; ++p)
        acc = std::fma(s * a[i * a_rs + p * a_cs], b[p * ldb + j], acc);
      c[i * ldc + j] = acc;
    }
}
#endif

}  // namespace qf::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qf::kernels {

HWY_EXPORT(GemmAccImpl);

void GemmAccF64(double s, int64_t m, int64_t n, int64_t k, const double* a, int64_t a_rs,
                int64_t a_cs, const double* b, int64_t ldb, double* c, int64_t ldc) {
  if (m <= 0 || n <= 0 || k <= 0) return;
  HWY_DYNAMIC_DISPATCH(GemmAccImpl)(s, m, n, k, a, a_rs, a_cs, b, ldb, c, ldc);
}

namespace {

constexpr int64_t kBlock = 128;             // columns per panel (a 128 x n panel of doubles: n KiB)
constexpr int64_t kStrip = kCholeskyStrip;  // rows of C per call in the updates, over the threads

void ZeroStrictUpper(double* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) std::fill(a + i * n + i + 1, a + (i + 1) * n, 0.0);
}

// Lower-triangular L[b, b] (row stride lda) -> X = L⁻¹ (row stride b), plain chains.
void InvertLowerSmall(const double* l, int64_t lda, int64_t b, double* x) {
  std::fill(x, x + b * b, 0.0);
  for (int64_t j = 0; j < b; ++j) {
    x[j * b + j] = 1.0 / l[j * lda + j];
    for (int64_t i = j + 1; i < b; ++i) {
      double acc = 0.0;
      for (int64_t p = j; p < i; ++p) acc = std::fma(-l[i * lda + p], x[p * b + j], acc);
      x[i * b + j] = acc / l[i * lda + i];
    }
  }
}

}  // namespace

int CholeskyInverseLower(double* a, int64_t n, const CholeskySplit& split) {
  if (n <= 0) return 0;
  static_assert(kBlock % kStrip == 0, "panels start on a strip boundary");
  const bool shared = split.parts > 1;
  // The strips of rows [r0, n) this part updates (r0 on a strip boundary: a panel's end).
  std::vector<int64_t> own;
  const auto own_strips = [&](int64_t r0) {
    own.clear();
    for (int64_t i0 = 0; i0 < n - r0; i0 += kStrip)
      if (!shared || CholeskyStripPart(r0 + i0, split.parts) == split.part) own.push_back(i0);
  };
  ZeroStrictUpper(a, n);
  std::vector<double> pt(size_t(std::min(kBlock, n) * n));  // the panel below, transposed
  for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
    const int64_t jb = std::min(kBlock, n - j0), r0 = j0 + jb, rows = n - r0;
    // Shared: the panel's columns as their rows' owners updated them.
    if (shared && j0 > 0) split.share(a, n, j0, j0, r0);
    // The diagonal block (all earlier panels' updates applied), unblocked.
    for (int64_t j = j0; j < r0; ++j) {
      double acc = a[j * n + j];
      for (int64_t p = j0; p < j; ++p) acc = std::fma(-a[j * n + p], a[j * n + p], acc);
      if (!(acc > 0.0) || !std::isfinite(acc)) return int(std::min<int64_t>(j + 1, 1 << 30));
      const double dj = std::sqrt(acc);
      a[j * n + j] = dj;
      for (int64_t i = j + 1; i < r0; ++i) {
        double v = a[i * n + j];
        for (int64_t p = j0; p < j; ++p) v = std::fma(-a[i * n + p], a[j * n + p], v);
        a[i * n + j] = v / dj;
      }
    }
    if (rows == 0) break;
    // The panel below: L21 = A21 L11⁻ᵀ, one column at a time on the transposed copy (rows of
    // pt are columns of the panel, so each column is a row-vector update).
    for (int64_t jj = 0; jj < jb; ++jj)
      for (int64_t i = 0; i < rows; ++i) pt[size_t(jj * rows + i)] = a[(r0 + i) * n + j0 + jj];
    for (int64_t jj = 0; jj < jb; ++jj) {
      double* col = pt.data() + jj * rows;
      GemmAccF64(-1.0, 1, rows, jj, a + (j0 + jj) * n + j0, 0, 1, pt.data(), rows, col, rows);
      const double dj = a[(j0 + jj) * n + j0 + jj];
      for (int64_t i = 0; i < rows; ++i) col[i] /= dj;
    }
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t jj = 0; jj < jb; ++jj) a[(r0 + i) * n + j0 + jj] = pt[size_t(jj * rows + i)];
    // The trailing matrix: A22 -= L21 L21ᵀ over its lower triangle, strips of rows (each strip
    // also writes the upper part of its diagonal square, zeroed at the end); shared: this
    // part's strips only (the others' rows here go stale until their columns are shared).
    own_strips(r0);
    const auto strips = int64_t(own.size());
#pragma omp parallel for schedule(dynamic, 1) if (strips > 1)
    for (int64_t s = 0; s < strips; ++s) {
      const int64_t i0 = own[size_t(s)], ib = std::min(kStrip, rows - i0);
      GemmAccF64(-1.0, ib, i0 + ib, jb, a + (r0 + i0) * n + j0, n, 1, pt.data(), rows,
                 a + (r0 + i0) * n + r0, n);
    }
  }
  ZeroStrictUpper(a, n);
  // L⁻¹ in place, panels from the last: with X22 = L22⁻¹ done, X21 = -X22 L21 L11⁻¹. A row of
  // X21 needs only its own row of X22 and all of L, which every part holds: shared, each part
  // makes its strips' rows (and every diagonal block), and the rows are shared at the end.
  std::vector<double> x11(size_t(kBlock * kBlock)), t, c;
  const int64_t last = (n - 1) / kBlock * kBlock;
  for (int64_t j0 = last; j0 >= 0; j0 -= kBlock) {
    const int64_t jb = std::min(kBlock, n - j0), r0 = j0 + jb, rows = n - r0;
    InvertLowerSmall(a + j0 * n + j0, n, jb, x11.data());
    if (rows > 0) {
      t.assign(size_t(rows * jb), 0.0);
      c.assign(size_t(rows * jb), 0.0);
      for (int64_t i = 0; i < rows; ++i)
        std::copy(a + (r0 + i) * n + j0, a + (r0 + i) * n + r0, t.data() + i * jb);
      // Per strip: c = -(X22 t) (strip i0 needs X22's columns up to its last row: X22 is
      // lower), then X21 = c X11.
      own_strips(r0);
      const auto strips = int64_t(own.size());
#pragma omp parallel for schedule(dynamic, 1) if (strips > 1)
      for (int64_t s = 0; s < strips; ++s) {
        const int64_t i0 = own[size_t(s)], ib = std::min(kStrip, rows - i0);
        GemmAccF64(-1.0, ib, jb, i0 + ib, a + (r0 + i0) * n + r0, n, 1, t.data(), jb,
                   c.data() + i0 * jb, jb);
        for (int64_t i = i0; i < i0 + ib; ++i)
          std::fill(a + (r0 + i) * n + j0, a + (r0 + i) * n + r0, 0.0);
        GemmAccF64(1.0, ib, jb, jb, c.data() + i0 * jb, jb, 1, x11.data(), jb,
                   a + (r0 + i0) * n + j0, n);
      }
    }
    for (int64_t i = 0; i < jb; ++i)
      std::copy(x11.data() + i * jb, x11.data() + i * jb + i + 1, a + (j0 + i) * n + j0);
  }
  if (shared)
    for (int64_t j0 = 0; j0 + kBlock < n; j0 += kBlock)
      split.share(a, n, j0 + kBlock, j0, j0 + kBlock);
  return 0;
}

int CholeskyInverseLowerRef(double* a, int64_t n) {
  ZeroStrictUpper(a, n);
  for (int64_t j = 0; j < n; ++j) {
    double acc = a[j * n + j];
    for (int64_t p = 0; p < j; ++p) acc -= a[j * n + p] * a[j * n + p];
    if (!(acc > 0.0) || !std::isfinite(acc)) return int(std::min<int64_t>(j + 1, 1 << 30));
    a[j * n + j] = std::sqrt(acc);
    for (int64_t i = j + 1; i < n; ++i) {
      double v = a[i * n + j];
      for (int64_t p = 0; p < j; ++p) v -= a[i * n + p] * a[j * n + p];
      a[i * n + j] = v / a[j * n + j];
    }
  }
  std::vector<double> x(size_t(n * n));
  InvertLowerSmall(a, n, n, x.data());
  std::copy(x.begin(), x.end(), a);
  return 0;
}

}  // namespace qf::kernels
#endif
