// Vectorised elementwise math for the forward pass (Highway, dispatched once per call to the
// best target this CPU supports). References: the *Ref functions, plain loops on std::exp.
// Contract: results agree with the references to a few float ULPs per element.
#pragma once

#include <cstdint>

namespace qf::kernels {

float MaxValue(const float* x, int64_t n);
// out[i] = exp(x[i] - shift) when out is non-null; returns Σ exp(x[i] - shift), summed in
// float within blocks of 256 and across blocks in double.
double ExpShiftSum(const float* x, float* out, int64_t n, float shift);
// g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i].
void SiluMulVec(float* g, const float* u, int64_t n);

float MaxValueRef(const float* x, int64_t n);
double ExpShiftSumRef(const float* x, float* out, int64_t n, float shift);
void SiluMulRef(float* g, const float* u, int64_t n);

}  // namespace qf::kernels
