// Grid fitting: min-max (GPTQ quant.py find_params) and the optional clipping search.
// Contract: plain loops in fp32 in the reference's order of operations. The search error is a
// float sum within a row segment (as torch's fp32 sum in quant.py) and double across rows, so
// only near-ties between shrink steps can pick differently from torch.
#include "formats/grid.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/vec_math.h"

namespace qf {

Grid::Grid(const QuantScheme& scheme)
    : scheme_(scheme),
      is_int_(scheme.is_int()),
      e4m3_(scheme.kind == QuantKind::kFp8E4M3),
      maxq_(static_cast<float>((1 << scheme.bits) - 1)),
      fmax_(scheme.kind == QuantKind::kFp8E5M2 ? kF8E5M2Max : kF8E4M3Max),
      fp8_values_(scheme.kind == QuantKind::kFp8E5M2 ? F8E5M2Values().data()
                                                     : F8E4M3Values().data()) {}

void Grid::NormalizeRange(float* xmin, float* xmax) const {
  float lo = std::min(*xmin, 0.0f);
  float hi = std::max(*xmax, 0.0f);
  if (!is_int_) {
    hi = std::max(-lo, hi);  // amax
    lo = -hi;
  } else if (scheme_.symmetric) {
    hi = std::max(std::fabs(lo), hi);
    // quant.py only mirrors when xmin < 0: an all-positive row keeps xmin = 0, so its grid
    // [-zero, maxq - zero] * scale tops out at (maxq - zero) / maxq * xmax. Kept for parity.
    if (lo < 0.0f) lo = -hi;
  }
  if (is_int_ && lo == 0.0f && hi == 0.0f) {
    lo = -1.0f;
    hi = 1.0f;
  }
  *xmin = lo;
  *xmax = hi;
}

GroupParams Grid::ParamsFromNormalized(float xmin, float xmax) const {
  GroupParams p;
  if (!is_int_) {
    p.scale = xmax > 0.0f ? xmax / fmax_ : 1.0f;  // xmax = amax
    p.zero = 0.0f;
    return p;
  }
  p.scale = (xmax - xmin) / maxq_;
  p.zero = scheme_.symmetric ? (maxq_ + 1.0f) / 2.0f : RoundHalfEven(-xmin / p.scale);
  return p;
}

GroupParams Grid::FitRange(float xmin, float xmax) const {
  NormalizeRange(&xmin, &xmax);
  return ParamsFromNormalized(xmin, xmax);
}

void Grid::RoundSpan(const float* x, float* out, int64_t n, GroupParams p) const {
  if (is_int_) {
    for (int64_t i = 0; i < n; ++i) out[i] = p.scale * (IntCode(x[i], p) - p.zero);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = fp8_values_[EncodeFp8(x[i] / p.scale)] * p.scale;
  }
}

void Grid::EncodeSpan(const float* x, uint8_t* out, int64_t n, GroupParams p) const {
  if (is_int_) {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(IntCode(x[i], p));
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = EncodeFp8(x[i] / p.scale);
  }
}

void Grid::Fit(const float* w, int64_t rows, int64_t ld, int64_t c0, int64_t c1,
               std::span<GroupParams> out, const FitOptions& options) const {
  QF_CHECK(rows >= 1 && c0 >= 0 && c0 < c1 && c1 <= ld, "rows {} cols [{}, {}) ld {}", rows, c0, c1,
           ld);
  QF_CHECK(out.size() >= static_cast<size_t>(rows), "out {} < rows {}", out.size(), rows);
  QF_CHECK(options.importance.empty() || options.importance.size() >= static_cast<size_t>(c1),
           "importance has {} entries, need {}", options.importance.size(), c1);

  // Fits one parameter set over block rows [r0, r0 + nr).
  auto fit_block = [&](int64_t r0, int64_t nr) {
    float xmin = std::numeric_limits<float>::infinity();
    float xmax = -std::numeric_limits<float>::infinity();
    for (int64_t r = r0; r < r0 + nr; ++r) {
      const float* row = w + r * ld;
      for (int64_t c = c0; c < c1; ++c) {
        xmin = std::min(xmin, row[c]);
        xmax = std::max(xmax, row[c]);
      }
    }
    NormalizeRange(&xmin, &xmax);
    GroupParams best = ParamsFromNormalized(xmin, xmax);
    if (!options.clip) return best;
    const ClipSearch& clip = *options.clip;
    const int steps = static_cast<int>(clip.max_shrink * clip.grid);
    const float* imp = options.importance.empty() ? nullptr : options.importance.data() + c0;
    thread_local std::vector<float> rounded;
    rounded.resize(static_cast<size_t>(c1 - c0));
    double best_err = std::numeric_limits<double>::infinity();
    for (int i = 0; i < steps; ++i) {
      // Python: p = 1 - i / grid in double, then p * xmin on an fp32 tensor in fp32.
      const auto p = static_cast<float>(1.0 - static_cast<double>(i) / clip.grid);
      const GroupParams cand = ParamsFromNormalized(p * xmin, p * xmax);
      // Σ importance[c] · |Round(x) − x|^norm over the block (vectorised; float within a row).
      double err = 0.0;
      for (int64_t r = r0; r < r0 + nr; ++r) {
        const float* row = w + r * ld + c0;
        if (is_int_) {
          err += vec::IntRoundErrorSum(row, imp, c1 - c0, cand.scale, cand.zero, maxq_, clip.norm);
        } else {
          RoundSpan(row, rounded.data(), c1 - c0, cand);
          err += vec::PowErrorSum(row, rounded.data(), imp, c1 - c0, clip.norm);
        }
      }
      if (err < best_err) {
        best_err = err;
        best = cand;
      }
    }
    return best;
  };

  if (scheme_.granularity == Granularity::kTensor) {
    const GroupParams p = fit_block(0, rows);
    std::fill(out.begin(), out.begin() + rows, p);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) out[static_cast<size_t>(r)] = fit_block(r, 1);
}

}  // namespace qf
