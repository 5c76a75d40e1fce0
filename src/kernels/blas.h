// BLAS: the one place qforge calls it (OpenBLAS, OpenMP build, linked directly: the symbols come
// from that one library, never from an alternatives-chosen libblas.so.3). GPTQ's Cholesky factor
// has its own kernels (kernels/cpu/cholesky.h), no LAPACK.
// Contract: every call runs on one thread. Work is split over the OpenMP threads here, in tiles
// whose bounds depend only on the matrix shapes, so each output element is computed by the same
// single-threaded call whatever the thread count: results are independent of the thread count
// on every OpenBLAS core type (Haswell, SkylakeX, ...), without relying on the library's
// internal work split. How one thread is ensured: the OpenMP build of OpenBLAS runs a call on
// the calling thread inside an active parallel region, and otherwise on omp_get_max_threads()
// threads (it re-reads that count on each call, whatever openblas_set_num_threads said), so
// each call is made from a parallel region of its own or with OpenMP at one thread.
#pragma once

#include <cstdint>
#include <string>

namespace qf::kernels {

enum class Trans : bool { kNo = false, kYes = true };

// C[M,N] (row-major, row stride ldc) = alpha · op(A) · op(B) + beta · C, with op(A) [M,K] and
// op(B) [K,N] (row-major A / B with strides lda / ldb; kYes reads the transpose). Output tiles
// of GemmTileRows(M) x GemmTileCols(N), one single-threaded sgemm each, spread over the threads
// (serial inside an active parallel region).
void Sgemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The tile grid of Sgemm (functions of the shape only; exposed for tests).
int64_t GemmTileRows(int64_t m);
int64_t GemmTileCols(int64_t n);

// The kernel family OpenBLAS runs ("Haswell", "SkylakeX", ...: OPENBLAS_CORETYPE or its CPU
// detection).
std::string BlasCoreName();

// Single-threaded references: plain loops in double precision.
void SgemmRef(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
              int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace qf::kernels
