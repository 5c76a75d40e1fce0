// FP8 × FP8 GEMM for W8A8-FP8 (FP8, FP8-dynamic): E4M3 weights times e4m3 activation values
// (bf16 bits), the scales applied by the caller, once per output. Weights stay E4M3 bytes
// (kernels/cpu/fp8_dot.h Fp8Rows) and are widened a block of rows at a time, right before the
// tokens pass over it.
//
// Numeric contract (every path, every CPU, bit for bit): acc[t, r] is ONE fp32 chain over the
// column pairs in order, each pair taking its odd column first (vdpbf16ps's order):
//   acc = 0; for q: acc = fma(a[2q+1], w[2q+1], acc); acc = fma(a[2q], w[2q], acc);
// as Fp8GemmRef computes it. Every product is exact (4-bit significands) and every partial sum is
// a multiple of 2^-18, so vdpbf16ps's flushing of subnormals never applies.
// Two paths: AVX512-BF16 (vdpbf16ps on 16-row blocks widened to bf16 pairs), and fp32 FMAs
// (F32Gemm) over weights and activations widened to fp32 with each pair's columns swapped. On
// some CPUs vdpbf16ps is the faster (AMD Zen 4: 32 products per instruction at the fp32 FMA
// rate), on others the slower (Intel Xeon with AVX512-BF16 measured here: a quarter of the FMA
// rate per instruction), so the path is chosen by timing both once per process
// (Fp8GemmUsesBf16) - which cannot change a bit: a CPU whose vdpbf16ps rounded otherwise
// would run the fp32 path (Fp8GemmBf16IsExact).
#pragma once

#include <cstdint>

#include "kernels/cpu/fp8_dot.h"

namespace qf::kernels {

// Whether this CPU has the AVX512-BF16 path (AVX512F, AVX512BW, AVX512-BF16).
bool Fp8GemmBf16Available();
// Whether the AVX512-BF16 path gives the contract's bits on this CPU (checked once per process on
// a fixed random problem against the fp32 path; false where the path is not available).
bool Fp8GemmBf16IsExact();
// Whether Fp8Gemm runs the AVX512-BF16 path: it is exact here and it was faster than the fp32
// path on that problem (timed once per process, the first time it is asked).
bool Fp8GemmUsesBf16();
// Columns of the activation rows: cols rounded up to even (pairs).
inline int64_t Fp8GemmCols2(int64_t cols) { return (cols + 1) / 2 * 2; }
// acc[t * ldacc + r] = Σ_k a[t, k] · e4m3(w[r, k]) for r < w.rows, t < m, without the weight
// scales, summed as the contract says. a: bf16 bits, Fp8GemmCols2(cols) per token (the padding
// column 0). Single-threaded. Fp8GemmBf16 / Fp8GemmFma run one path (Bf16: only where
// available); Fp8Gemm the chosen one; Fp8GemmRef the contract as a plain loop.
void Fp8Gemm(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc);
void Fp8GemmBf16(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc);
void Fp8GemmFma(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc);
void Fp8GemmRef(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc);

}  // namespace qf::kernels
