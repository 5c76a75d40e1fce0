// Equivalent transforms that move quantization difficulty between a linear's input and its
// weights, x' = x / s and W' = W · diag(s) (y = W x unchanged in exact arithmetic), with the
// 1/s folded into the operation that produces x: an RMSNorm weight, or the rows of the
// preceding linear (v → o, up → down). SmoothQuant and AWQ differ only in how s is chosen.
// Contract: folding leaves the fp output unchanged up to fp32 rounding; with a norm stored in
// bf16/f16 the weights absorb the storage rounding of the norm (see FoldIntoNorm).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/dtype.h"
#include "core/result.h"
#include "formats/scheme.h"
#include "methods/hessian.h"
#include "methods/observer.h"
#include "model/model.h"

namespace qf::methods {

// SmoothQuant (arXiv 2211.10438): s_j = max|X_j|^α / max_i |W_ij|^(1−α), the weight maximum
// over the rows of every linear in `next` (all read X), both clamped below at 1e-5.
std::vector<float> SmoothQuantScales(const ChannelObserver& x,
                                     std::span<const model::Linear* const> next, double alpha);

struct AwqSearch {
  std::vector<float> scales;  // [K], the best candidate
  double ratio = 0;           // its exponent α
  bool duo = false;           // its form (see AwqScales)
  double loss = 0;            // its output error
  double loss_plain = 0;      // output error without scaling (RTN)
};

// AWQ (arXiv 2306.00978) scale search: candidates s = mean|x|^α (and, "duo" form as in AutoAWQ
// and llm-compressor, s = mean|x|^α / (mean ŵ)^(1−α) with ŵ = |W| over its group maximum),
// α = i / grid for i = 0 .. grid − 1, each clamped at 1e-4 and normalised by √(max s · min s).
// The loss of a candidate is the output error of the linears reading x over all calibration
// tokens, Σ_lin ‖(Ŵ − W) X‖² = Σ_lin tr(ΔW H ΔWᵀ) with ΔW = Q(W diag s) diag(1/s) − W and H the
// Hessian (∝ XᵀX) of x: exact for the module outputs, at the cost of one K×K product per
// linear whatever the token count. The smallest loss wins (ties: the earlier candidate).
Result<AwqSearch> AwqScales(const ChannelObserver& x, const HessianAccumulator& h,
                            std::span<const model::Linear* const> next, const QuantScheme& scheme,
                            int grid = 20);

// norm[j] /= s[j], rounded to `storage` (the dtype the norm is written in); each next linear's
// column j is multiplied by norm_old[j] / norm_new[j] (= s[j] up to that rounding), so the
// product stays exact. The next linears must be fp32 (not yet quantized).
void FoldIntoNorm(std::vector<float>& norm, std::span<model::Linear* const> next,
                  std::span<const float> s, DType storage);

// Row j (and bias j) of `prev`, whose output is x, divided by s[j]; column j of each next linear
// multiplied by s[j]. For prev = up_proj the SwiGLU product silu(g) · u is linear in u, so the
// same fold applies to down_proj.
void FoldIntoRows(model::Linear& prev, std::span<model::Linear* const> next,
                  std::span<const float> s);

}  // namespace qf::methods
