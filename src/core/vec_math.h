// SIMD primitives on float arrays (Highway, dispatched once per call to the best target this
// CPU supports): used by the forward ops (kernels), the clip search (formats) and bench. They
// know nothing of formats or models. References: the *Ref functions, plain loops on std::exp.
#pragma once

#include <cstdint>

namespace qf::vec {

float MaxValue(const float* x, int64_t n);
// out[i] = exp(x[i] - shift) when out is non-null; returns Σ exp(x[i] - shift), summed in
// float within blocks of 256 and across blocks in double.
double ExpShiftSum(const float* x, float* out, int64_t n, float shift);
// g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i].
void SiluMulVec(float* g, const float* u, int64_t n);
// One query's attention pieces (decoding): out[j] = scale · Σ_c q[c] k[j · stride + c] for
// j < n (d floats each), and out[c] = Σ_j p[j] v[j · stride + c] for c < d (j in order). The
// reference is kernels::AttentionRef.
void DotKeys(const float* q, const float* k, int64_t stride, int64_t n, int64_t d, float scale,
             float* out);
void WeightedRows(const float* p, const float* v, int64_t stride, int64_t n, int64_t d, float* out);

// Σ_i w[i] · |q[i] − x[i]|^p (w null: all 1), the clip search's error; |d|^p as d·d for p = 2,
// else exp(p · log |d|) (0 for d = 0); summed in float within blocks of 256, then in double.
double PowErrorSum(const float* x, const float* q, const float* w, int64_t n, float p);
// The same error for the integer grid, rounding fused in: q[i] = scale · (c − zero) with
// c = clamp(rne(x[i] / scale) + zero, 0, maxq), the bits formats' Grid::Round gives for finite x.
double IntRoundErrorSum(const float* x, const float* w, int64_t n, float scale, float zero,
                        float maxq, float p);

// y[r] = Σ_j w[r * k + j] · x[j] for r < n: one token against n rows of fp32 weights (decoding's
// GEMV for float weights: row after row in memory order, x from L1, each row's products in four
// float accumulators, summed in float). The reference is MatMulNTRef (kernels/ops.h) with m = 1.
void GemvRows(const float* w, const float* x, int64_t n, int64_t k, float* y);
// The same with bf16 weights (bit patterns), widened in registers: GemvRows' bits on the
// widened floats.
void GemvRowsBf16(const uint16_t* w, const float* x, int64_t n, int64_t k, float* y);

float MaxValueRef(const float* x, int64_t n);
double PowErrorSumRef(const float* x, const float* q, const float* w, int64_t n, float p);
double IntRoundErrorSumRef(const float* x, const float* w, int64_t n, float scale, float zero,
                           float maxq, float p);
double ExpShiftSumRef(const float* x, float* out, int64_t n, float shift);
void SiluMulRef(float* g, const float* u, int64_t n);

}  // namespace qf::vec
