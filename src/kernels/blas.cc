// BLAS calls in fixed tiles (see blas.h): single-threaded OpenBLAS, OpenMP over tiles.
#include "kernels/blas.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "core/result.h"

namespace qf::kernels {
namespace {

// Sgemm's output tiles. Each single-threaded call packs its op(A) rows and op(B) columns
// again, (TM + TN)·K floats for 2·TM·TN·K flops; 512 x 256 keeps that under 0.3% of the
// flops, and narrower columns for small N still give every one of a few threads a tile.
constexpr int64_t kTileRows = 512;
constexpr int64_t kTileColsMax = 256, kTileColsMin = 64, kTileColsSplit = 4;

// Runs fn(t) for t in [0, tiles) over the OpenMP threads, or serially inside an active
// parallel region (the caller's threads are then busy with other work). The region is opened
// even for one tile: inside it OpenBLAS stays on the calling thread (see blas.h).
template <class Fn>
void ForTiles(int64_t tiles, Fn&& fn) {
#pragma omp parallel for schedule(dynamic, 1) if (!omp_in_parallel())
  for (int64_t t = 0; t < tiles; ++t) fn(t);
}

CBLAS_TRANSPOSE Blas(Trans t) { return t == Trans::kYes ? CblasTrans : CblasNoTrans; }

}  // namespace

int64_t GemmTileRows(int64_t m) { return std::max<int64_t>(1, std::min(m, kTileRows)); }

int64_t GemmTileCols(int64_t n) {
  const int64_t split = (n + kTileColsSplit - 1) / kTileColsSplit;
  const int64_t rounded = (split + kTileColsMin - 1) / kTileColsMin * kTileColsMin;
  return std::max<int64_t>(1, std::min({n, kTileColsMax, std::max(kTileColsMin, rounded)}));
}

void Sgemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  const int64_t tm = GemmTileRows(m), tn = GemmTileCols(n);
  const int64_t row_tiles = (m + tm - 1) / tm, col_tiles = (n + tn - 1) / tn;
  ForTiles(row_tiles * col_tiles, [&](int64_t t) {
    const int64_t i0 = t / col_tiles * tm, j0 = t % col_tiles * tn;
    const int64_t rows = std::min(tm, m - i0), cols = std::min(tn, n - j0);
    // Element (i, j) of op(A) is a[i*lda + j] (kNo) or a[j*lda + i] (kYes); likewise B.
    const float* a0 = a + (ta == Trans::kYes ? i0 : i0 * lda);
    const float* b0 = b + (tb == Trans::kYes ? j0 * ldb : j0);
    cblas_sgemm(CblasRowMajor, Blas(ta), Blas(tb), int(rows), int(cols), int(k), alpha, a0,
                int(lda), b0, int(ldb), beta, c + i0 * ldc + j0, int(ldc));
  });
}

std::string BlasCoreName() {
  const char* name = openblas_get_corename();
  return name ? name : "";
}

void SgemmRef(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
              int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const float av = ta == Trans::kYes ? a[p * lda + i] : a[i * lda + p];
        const float bv = tb == Trans::kYes ? b[j * ldb + p] : b[p * ldb + j];
        acc += double(av) * bv;
      }
      float& out = c[i * ldc + j];
      out = float(alpha * acc + (beta == 0.0f ? 0.0 : double(beta) * out));
    }
  }
}

}  // namespace qf::kernels
