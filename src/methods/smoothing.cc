// Choosing and folding smoothing scales (see smoothing.h): SmoothQuant's closed form, AWQ's grid
// search on the block's observed inputs, and the folds into a norm or the preceding linear.
#include "methods/smoothing.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "formats/quantize.h"
#include "core/dist.h"
#include "core/dtype.h"
#include "kernels/cpu/f32_gemm.h"

namespace qf::methods {

std::vector<float> SmoothQuantScales(const ChannelObserver& x,
                                     std::span<const model::Linear* const> next, double alpha) {
  const int64_t k = x.k();
  std::vector<float> wmax(static_cast<size_t>(k), 0.0f);
  for (const model::Linear* lin : next)
    for (int64_t i = 0; i < lin->n; ++i) {
      const float* row = lin->weight.data() + i * k;
      for (int64_t j = 0; j < k; ++j) wmax[j] = std::max(wmax[j], std::fabs(row[j]));
    }
  std::vector<float> s(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) {
    const double a = std::max(double(x.absmax()[j]), 1e-5);
    const double w = std::max(double(wmax[j]), 1e-5);
    s[j] = float(std::pow(a, alpha) / std::pow(w, 1.0 - alpha));
  }
  return s;
}

namespace {

// mean over rows of |W| / (its group's max|W| + 1e-6), over all linears: AutoAWQ's w_mean.
std::vector<float> NormalizedWeightMean(std::span<const model::Linear* const> next, int64_t k,
                                        int64_t g) {
  std::vector<double> sum(static_cast<size_t>(k), 0.0);
  int64_t rows = 0;
  for (const model::Linear* lin : next) {
    for (int64_t i = 0; i < lin->n; ++i) {
      const float* row = lin->weight.data() + i * k;
      for (int64_t c0 = 0; c0 < k; c0 += g) {
        float mx = 0;
        for (int64_t j = c0; j < c0 + g; ++j) mx = std::max(mx, std::fabs(row[j]));
        for (int64_t j = c0; j < c0 + g; ++j) sum[j] += std::fabs(row[j]) / (mx + 1e-6f);
      }
    }
    rows += lin->n;
  }
  std::vector<float> out(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) out[j] = float(sum[j] / double(std::max<int64_t>(rows, 1)));
  return out;
}

}  // namespace

Result<AwqSearch> AwqScales(const ChannelObserver& x, const HessianAccumulator& h,
                            std::span<const model::Linear* const> next, const QuantScheme& scheme,
                            int grid) {
  const int64_t k = x.k();
  if (h.k() != k) return Err("AWQ: Hessian has {} columns, input {}", h.k(), k);
  if (h.samples() == 0 || x.rows() == 0) return Err("AWQ: no calibration tokens observed");
  if (grid < 1) return Err("AWQ: grid must be positive");
  for (const model::Linear* lin : next)
    if (lin->k != k || lin->weight.size() != size_t(lin->n * k))
      return Err("AWQ: linear [{}, {}] does not read a {}-column input", lin->n, lin->k, k);
  QF_ASSIGN(const ResolvedScheme first, ResolveScheme(scheme, next.front()->n, k));
  const int64_t g = ColumnsPerParam(first.scheme, k);
  const std::vector<float> x_mean = x.MeanAbs();
  const std::vector<float> w_mean = NormalizedWeightMean(next, k, g);
  const std::vector<double>& hd = h.matrix();
  std::vector<float> hf(hd.begin(), hd.end());

  // Candidate c: form duo = c / grid (0 plain, 1 duo), α = (c % grid) / grid.
  const int candidates = 2 * grid;
  auto scales_of = [&](int c) {
    const bool duo = c >= grid;
    const double ratio = double(c % grid) / grid;
    std::vector<float> s(static_cast<size_t>(k));
    float mx = 0, mn = std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < k; ++j) {
      double v = std::pow(double(x_mean[j]), ratio);
      if (duo) v /= std::pow(double(w_mean[j]), 1.0 - ratio) + 1e-4;
      s[j] = float(std::max(v, 1e-4));
      mx = std::max(mx, s[j]);
      mn = std::min(mn, s[j]);
    }
    const float norm = std::sqrt(mx * mn);
    for (float& v : s) v /= norm;
    return s;
  };
  std::vector<double> loss(static_cast<size_t>(candidates), 0.0);
  std::vector<std::string> errors(static_cast<size_t>(candidates));
  // Under mpirun each rank scores its share of the candidates (core/dist.h) and the losses are
  // gathered: every rank then picks the same one (a candidate's loss does not depend on where
  // it was computed); `failed` marks a candidate that could not be scored.
  const auto [c0, c1] = dist::Share(candidates);
  std::vector<double> failed(static_cast<size_t>(candidates), 0.0);
#pragma omp parallel for schedule(dynamic, 1)
  for (int c = int(c0); c < int(c1); ++c) {
    const std::vector<float> s = scales_of(c);
    double total = 0;
    for (const model::Linear* lin : next) {
      const int64_t n = lin->n;
      std::vector<float> ws(lin->weight.begin(), lin->weight.end());
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j) ws[i * k + j] *= s[j];
      auto fq = QuantizeDequantize(ws, n, k, scheme);
      if (!fq.ok()) {
        errors[c] = fq.error().message();
        break;
      }
      std::vector<float>& d = fq->weights;  // ΔW = Q(W s) / s − W
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j) d[i * k + j] = d[i * k + j] / s[j] - lin->weight[i * k + j];
      std::vector<float> e(d.size());
      kernels::F32Gemm(kernels::BLayout::kNN, n, k, k, 1.0f, d.data(), k, hf.data(), k, e.data(),
                       k);
      double sum = 0;
      for (size_t i = 0; i < d.size(); ++i) sum += double(d[i]) * e[i];
      total += sum;
    }
    loss[c] = total;
    failed[c] = errors[c].empty() ? 0.0 : 1.0;
  }
  dist::AllGatherRows(loss, candidates, 1);
  dist::AllGatherRows(failed, candidates, 1);
  for (const std::string& e : errors)
    if (!e.empty()) return Err("AWQ: {}", e);
  for (int c = 0; c < candidates; ++c)
    if (failed[c] != 0.0) return Err("AWQ: scale candidate {} failed on another rank", c);
  int best = 0;
  for (int c = 1; c < candidates; ++c)
    if (loss[c] < loss[best]) best = c;
  AwqSearch out;
  out.scales = scales_of(best);
  out.ratio = double(best % grid) / grid;
  out.duo = best >= grid;
  out.loss = loss[best];
  out.loss_plain = loss[0];
  return out;
}

void FoldIntoNorm(std::vector<float>& norm, std::span<model::Linear* const> next,
                  std::span<const float> s, DType storage) {
  const int64_t k = int64_t(norm.size());
  std::vector<float> col(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) {
    const float old = norm[j];
    const float now = RoundScaleForStorage(old / s[j], storage);
    col[j] = now != 0.0f ? old / now : s[j];
    norm[j] = now;
  }
  for (model::Linear* lin : next)
    for (int64_t i = 0; i < lin->n; ++i)
      for (int64_t j = 0; j < k; ++j) lin->weight[i * k + j] *= col[j];
}

void FoldIntoRows(model::Linear& prev, std::span<model::Linear* const> next,
                  std::span<const float> s) {
  const int64_t k = prev.n;
  for (int64_t j = 0; j < k; ++j) {
    const float inv = 1.0f / s[j];
    for (int64_t c = 0; c < prev.k; ++c) prev.weight[j * prev.k + c] *= inv;
    if (!prev.bias.empty()) prev.bias[j] *= inv;
  }
  for (model::Linear* lin : next)
    for (int64_t i = 0; i < lin->n; ++i)
      for (int64_t j = 0; j < k; ++j) lin->weight[i * k + j] *= s[j];
}

}  // namespace qf::methods
