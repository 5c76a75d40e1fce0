// Channel statistics (see observer.h): fp32 partial sums over blocks of rows, accumulated in
// fp64 in row order, so the thread count of the caller never changes a bit.
#include "methods/observer.h"

#include <algorithm>
#include <cmath>

#include "core/dist.h"

namespace qf::methods {

ChannelObserver::ChannelObserver(int64_t k)
    : k_(k),
      absmax_(static_cast<size_t>(k), 0.0f),
      abs_sum_(static_cast<size_t>(k), 0.0),
      sq_sum_(static_cast<size_t>(k), 0.0) {}

void ChannelObserver::Add(const float* x, int64_t m) {
  // One row at a time into fp32 partials of at most 64 rows, then fp64: exact enough for a
  // statistic and vectorizable.
  constexpr int64_t kRows = 64;
  std::vector<float> a(static_cast<size_t>(k_)), s(static_cast<size_t>(k_));
  for (int64_t i0 = 0; i0 < m; i0 += kRows) {
    std::fill(a.begin(), a.end(), 0.0f);
    std::fill(s.begin(), s.end(), 0.0f);
    for (int64_t i = i0; i < std::min(m, i0 + kRows); ++i) {
      const float* row = x + i * k_;
      for (int64_t j = 0; j < k_; ++j) {
        const float v = std::fabs(row[j]);
        a[j] += v;
        s[j] += v * v;
        absmax_[j] = std::max(absmax_[j], v);
      }
    }
    for (int64_t j = 0; j < k_; ++j) {
      abs_sum_[j] += a[j];
      sq_sum_[j] += s[j];
    }
  }
  rows_ += m;
}

void ChannelObserver::ReduceAcrossRanks() {
  if (dist::Size() == 1) return;
  // [rows, absmax (K), abs_sum (K), sq_sum (K)]
  const size_t k = size_t(k_);
  std::vector<double> p(1 + 3 * k);
  p[0] = double(rows_);
  for (size_t j = 0; j < k; ++j) {
    p[1 + j] = absmax_[j];
    p[1 + k + j] = abs_sum_[j];
    p[1 + 2 * k + j] = sq_sum_[j];
  }
  dist::FoldInRankOrder(p, [k](std::span<double> acc, std::span<const double> part) {
    acc[0] += part[0];
    for (size_t j = 0; j < k; ++j) {
      acc[1 + j] = std::max(acc[1 + j], part[1 + j]);
      acc[1 + k + j] += part[1 + k + j];
      acc[1 + 2 * k + j] += part[1 + 2 * k + j];
    }
  });
  rows_ = int64_t(p[0]);
  for (size_t j = 0; j < k; ++j) {
    absmax_[j] = float(p[1 + j]);
    abs_sum_[j] = p[1 + k + j];
    sq_sum_[j] = p[1 + 2 * k + j];
  }
}

float ChannelObserver::tensor_absmax() const {
  return absmax_.empty() ? 0.0f : *std::max_element(absmax_.begin(), absmax_.end());
}

std::vector<float> ChannelObserver::MeanAbs() const {
  std::vector<float> out(static_cast<size_t>(k_));
  for (int64_t j = 0; j < k_; ++j) out[j] = rows_ ? float(abs_sum_[j] / double(rows_)) : 0.0f;
  return out;
}

std::vector<float> ChannelObserver::MeanSquare() const {
  std::vector<float> out(static_cast<size_t>(k_));
  for (int64_t j = 0; j < k_; ++j) out[j] = rows_ ? float(sq_sum_[j] / double(rows_)) : 0.0f;
  return out;
}

}  // namespace qf::methods
