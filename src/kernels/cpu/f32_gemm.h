// qforge's own fp32 GEMM: the products of the forward pass (fp32 linears beyond a few tokens,
// attention's scores and weighted values) without a BLAS, so their bits and their speed do not
// depend on which kernels a BLAS library picks for the CPU (OpenBLAS runs its 8-float Haswell
// kernels on AVX-512 AMD EPYC where OPENBLAS_CORETYPE=Haswell is set).
//
// Numeric contract: every output element is ONE fused multiply-add chain over k in order,
//   acc = 0; for p in [0, K): acc = fma(A[i,p], B(p,j), acc);
//   C[i,j] = alpha == 1 ? acc : alpha·acc,
// exactly as F32GemmRef computes it. The fast path (register tiles of broadcast A values times
// vectors of packed B columns, K in blocks whose partial sums are stored in C and reloaded) gives
// the same bits on every SIMD target, for every thread count and tile split.
#pragma once

#include <cstdint>

namespace qf::kernels {

// How B is stored: kNT: B is [N, K] (row j holds output j's weights; C = A·Bᵀ, as a linear's
// weight), kNN: B is [K, N] (C = A·B). Row stride ldb in both.
enum class BLayout : bool { kNT, kNN };

// C[M,N] (row stride ldc) = alpha · A[M,K] (row stride lda) · op(B). Output tiles are spread over
// the OpenMP threads (serially inside an active parallel region).
void F32Gemm(BLayout layout, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
             int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc);

// Upper triangle (j >= i) of C[K,K] (row-major, ldc = K) = Xᵀ·X for X[M,K] (row-major), each
// entry one fma chain over the M rows in order (F32Gemm's contract with A = Xᵀ, B = X): the same
// bits on every CPU and thread count, unlike a BLAS syrk. Entries below the diagonal within
// 256-row bands of C are overwritten too; the rest of the lower triangle is left as it was.
void F32SyrkUpper(const float* x, int64_t m, int64_t k, float* c);

// The contract as plain loops (std::fma), single-threaded.
void F32GemmRef(BLayout layout, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc);

}  // namespace qf::kernels
