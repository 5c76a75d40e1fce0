// GPTQ's factor in double precision without LAPACK: the lower Cholesky factor of a symmetric
// positive definite matrix and its inverse, blocked so that nearly all the work is one GEMM
// kernel (qforge's own, SIMD per target) instead of whatever kernels a LAPACK/BLAS build picks
// for the CPU (Debian's OpenBLAS 0.3.21 runs its SSE3 "PRESCOTT" kernels on Sapphire-Rapids-class
// Xeons; the dpotrf + dtrtri of K = 8192 took ~30 s there).
//
// Numeric contract: every entry is a fixed sequence of IEEE double operations (fused
// multiply-adds in a fixed order, one square root or division), the same on every SIMD target
// and for every thread count and every split over cooperating processes (CholeskySplit); it
// differs from the plain reference below only in how partial sums are grouped (agreement ~1e-13
// relative for well-conditioned matrices).
#pragma once

#include <cstdint>
#include <functional>

namespace qf::kernels {

// Rows of the O(n³) updates are dealt to workers in strips of this many rows.
inline constexpr int64_t kCholeskyStrip = 64;

// One factorization made jointly by `parts` cooperating processes (data-parallel ranks), each
// holding the whole matrix: strip t (rows [64 t, 64 t + 64)) of the O(n³) updates belongs to
// part t mod parts, so each part does about 1/parts of the work; the small diagonal blocks and
// panels are made by every part. Each entry keeps its chain of operations, so every part ends
// with the one-part result, bit for bit. parts == 1: no sharing, `share` is not called.
struct CholeskySplit {
  int part = 0, parts = 1;
  // Called by every part at the same points with the same arguments: rows [r0, n) x columns
  // [c0, c1) of a (row-major, n columns), each row from the part that owns its strip
  // (CholeskyStripPart), to every part.
  std::function<void(double* a, int64_t n, int64_t r0, int64_t c0, int64_t c1)> share;
};
// The part that owns row `row`'s strip.
inline int CholeskyStripPart(int64_t row, int parts) { return int((row / kCholeskyStrip) % parts); }

// In place on a[n, n] (row-major; only the lower triangle is read): L with A = L Lᵀ, then L⁻¹,
// in the lower triangle; the strict upper triangle is set to zero. Returns 0, or j + 1 when the
// leading minor of order j + 1 is not positive definite (a is then partly overwritten).
// Row-major lower is LAPACK's column-major upper: this is dpotrf('U') then dtrtri('U', 'N') on
// the same buffer. With a split, every part calls it on the same matrix (see CholeskySplit).
int CholeskyInverseLower(double* a, int64_t n, const CholeskySplit& split = {});

// The same, unblocked plain loops (single-threaded reference for tests).
int CholeskyInverseLowerRef(double* a, int64_t n);

// C[i, j] continues a chain over p in [0, k): acc = fma(s · A(i, p), B[p, j], acc), starting
// from C[i, j], with A(i, p) = a[i · a_rs + p · a_cs], B row-major (ldb), C row-major (ldc);
// s = +1 or -1. Rows of C are spread over the threads (serial inside a parallel region).
// Exposed for tests.
void GemmAccF64(double s, int64_t m, int64_t n, int64_t k, const double* a, int64_t a_rs,
                int64_t a_cs, const double* b, int64_t ldb, double* c, int64_t ldc);

}  // namespace qf::kernels
