// FP8 × FP8 GEMM for W8A8-FP8 (FP8, FP8-dynamic): E4M3 weights times e4m3 activation values
// (bf16 bits), the scales applied by the caller, once per output. Weights stay E4M3 bytes
// (kernels/cpu/fp8_dot.h Fp8Rows) and are widened a block of rows at a time, right before the
// tokens pass over it.
//
// Numeric contract. Every product is exact (4-bit significands) and every sum is fp32.
// The exact paths give acc[t, r] as ONE fp32 chain over the column pairs in order, each pair
// taking its odd column first (vdpbf16ps's order), bit for bit on every CPU:
//   acc = 0; for q: acc = fma(a[2q+1], w[2q+1], acc); acc = fma(a[2q], w[2q], acc);
// as Fp8GemmRef computes it. Every partial sum is a multiple of 2^-18, so vdpbf16ps's flushing
// of subnormals never applies. Two exact paths: AVX512-BF16 (vdpbf16ps on 16-row blocks widened
// to bf16 pairs), and fp32 FMAs (F32Gemm) over weights and activations widened to fp32 with each
// pair's columns swapped. On some CPUs vdpbf16ps is the faster (AMD Zen 4: 32 products per
// instruction at the fp32 FMA rate), on others the slower (Intel Xeon with AVX512-BF16 measured
// here: a quarter of the FMA rate per instruction), so the exact path is chosen by timing both
// once per process (Fp8GemmUsesBf16) - which cannot change a bit: a CPU whose vdpbf16ps rounded
// otherwise would run the fp32 path (Fp8GemmBf16IsExact).
// The AMX path (Intel AMX-BF16: tdpbf16ps, 16 tokens × 16 rows × 32 columns per instruction,
// several times the FMA path's rate) sums each 32-column step inside the tile unit, in an order
// and with roundings Intel does not specify: measured on a Xeon (family 6 model 207), it matches
// neither the pair chain nor one rounding per step. So its bits differ from the exact paths' by
// fp32 accumulation error (within cols · 2^-24 · Σ|products| of the exact sum: test), and are
// the same on that CPU for a given token and row whatever the call (token count, row range,
// threads). Fp8Gemm runs it wherever the CPU and the OS allow AMX tiles (Fp8GemmAmxAvailable) -
// by availability, not by a timing, so which bits a CPU gives never depends on a measurement.
#pragma once

#include <cstdint>
#include <string_view>

#include "kernels/cpu/fp8_dot.h"

namespace qf::kernels {

// Whether this CPU has the AVX512-BF16 path (AVX512F, AVX512BW, AVX512-BF16).
bool Fp8GemmBf16Available();
// Whether this CPU has AMX-BF16 and the OS lets this process use the tiles (asked once).
bool Fp8GemmAmxAvailable();
// Whether the AVX512-BF16 path gives the contract's bits on this CPU (checked once per process on
// a fixed random problem against the fp32 path; false where the path is not available).
bool Fp8GemmBf16IsExact();
// Whether Fp8Gemm runs the AVX512-BF16 path: it is exact here and it was faster than the fp32
// path on that problem (timed once per process, the first time it is asked).
bool Fp8GemmUsesBf16();
// The path Fp8Gemm runs on this CPU, for reports: "amx-bf16", "avx512-bf16" or "fp32-fma".
std::string_view Fp8GemmPathName();
// Columns of the activation rows: cols rounded up to even (pairs).
inline int64_t Fp8GemmCols2(int64_t cols) { return (cols + 1) / 2 * 2; }
// acc[t * ldacc + r] = Σ_k a[t, k] · e4m3(w[r, k]) for r < w.rows, t < m, without the weight
// scales, summed as the contract says. a: bf16 bits, Fp8GemmCols2(cols) per token (the padding
// column 0). Single-threaded. Fp8GemmBf16 / Fp8GemmFma / Fp8GemmAmx run one path (Bf16, Amx:
// only where available); Fp8Gemm the chosen one; Fp8GemmRef the exact contract as a plain loop.
void Fp8Gemm(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc);
void Fp8GemmBf16(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc);
void Fp8GemmFma(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc);
// AMX-BF16 tile path: its own accumulation (see above); only where Fp8GemmAmxAvailable().
void Fp8GemmAmx(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc);
void Fp8GemmRef(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc);

}  // namespace qf::kernels
