// FP8 × FP8 GEMM for W8A8-FP8 (FP8, FP8-dynamic) on AVX512-BF16: E4M3 weights and e4m3
// activation values are exact in bf16 (4 significant bits), so vdpbf16ps multiplies them
// exactly and sums pairs of products into fp32 lanes; the scales come after, once per output.
// Weights stay E4M3 bytes (kernels/cpu/fp8_dot.h Fp8Rows); each block of 16 rows is widened to
// bf16 pairs in a per-thread buffer (16 · cols · 2 bytes) right before the tokens pass over it.
// Contract: acc[t, r] = Σ_k a[t, k] · w[r, k] with every product exact and the sums in fp32
// (pairs, then the lanes, in the kernel's order); within fp32 rounding of Fp8GemmRef (double).
#pragma once

#include <cstdint>

#include "kernels/cpu/fp8_dot.h"

namespace qf::kernels {

// Whether this CPU runs Fp8Gemm (AVX512F, AVX512BW, AVX512-BF16).
bool Fp8GemmAvailable();
// Columns of the activation rows: cols rounded up to even (pairs).
inline int64_t Fp8GemmCols2(int64_t cols) { return (cols + 1) / 2 * 2; }
// acc[t * ldacc + r] = Σ_k a[t, k] · e4m3(w[r, k]) for r < w.rows, t < m, without the weight
// scales. a: bf16 bits, Fp8GemmCols2(cols) per token (the padding column 0).
void Fp8Gemm(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc);
void Fp8GemmRef(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc);

}  // namespace qf::kernels
