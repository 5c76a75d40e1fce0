// Running-average Hessian (see hessian.h): fp32 XᵀX per chunk, fp64 running average.
// Contract: the result does not depend on the thread count (kernels::SyrkUpperXtX computes
// fixed tiles, each with one single-threaded BLAS call).
#include "methods/hessian.h"

#include <algorithm>

#include "core/result.h"
#include "kernels/blas.h"

namespace qf::methods {

HessianAccumulator::HessianAccumulator(int64_t k) : k_(k), h_(static_cast<size_t>(k * k), 0.0) {
  QF_CHECK(k >= 1, "K = {}", k);
}

void HessianAccumulator::Add(const float* x, int64_t m) {
  QF_CHECK(m >= 0, "M = {}", m);
  if (m == 0) return;
  const size_t kk = static_cast<size_t>(k_ * k_);
  if (scratch_.size() != kk) scratch_.assign(kk, 0.0f);
  for (int64_t r0 = 0; r0 < m; r0 += kChunkRows) {
    const int64_t rows = std::min(kChunkRows, m - r0);
    // scratch (upper) = X_chunkᵀ X_chunk; X_chunk is [rows, K] row-major.
    kernels::SyrkUpperXtX(x + r0 * k_, rows, k_, scratch_.data());
    const int64_t total = samples_ + rows;
    const double keep = static_cast<double>(samples_) / static_cast<double>(total);
    const double add = 2.0 / static_cast<double>(total);
    for (int64_t i = 0; i < k_; ++i) {
      double* h_row = h_.data() + i * k_;
      const float* s_row = scratch_.data() + i * k_;
      for (int64_t j = i; j < k_; ++j) h_row[j] = h_row[j] * keep + add * s_row[j];
    }
    samples_ = total;
  }
  stale_ = true;
}

const std::vector<double>& HessianAccumulator::matrix() const {
  if (stale_) {
    for (int64_t i = 0; i < k_; ++i) {
      for (int64_t j = 0; j < i; ++j) h_[i * k_ + j] = h_[j * k_ + i];
    }
    stale_ = false;
  }
  return h_;
}

void HessianAccumulator::Merge(const HessianAccumulator& other) {
  QF_CHECK(other.k_ == k_, "merging K = {} into K = {}", other.k_, k_);
  if (other.samples_ == 0) return;
  const int64_t total = samples_ + other.samples_;
  const double a = static_cast<double>(samples_) / static_cast<double>(total);
  const double b = static_cast<double>(other.samples_) / static_cast<double>(total);
  const std::vector<double>& oh = other.matrix();
  for (size_t i = 0; i < h_.size(); ++i) h_[i] = a * h_[i] + b * oh[i];
  samples_ = total;
}

}  // namespace qf::methods
