// The sampler (see sampler.h).
#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace qf::model {

int32_t Sampler::Sample(const float* logits, int64_t vocab) {
  if (opt_.temperature <= 0.0f) return int32_t(std::max_element(logits, logits + vocab) - logits);
  if ((opt_.top_k <= 0 || opt_.top_k >= vocab) && opt_.top_p >= 1.0f) {
    // Plain temperature sampling: inverse CDF in id order, no sort needed.
    const double mx = *std::max_element(logits, logits + vocab);
    std::vector<double> p(static_cast<size_t>(vocab));
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i)
      sum += p[size_t(i)] = std::exp((double(logits[i]) - mx) / opt_.temperature);
    const double u = double(rng_() >> 11) * 0x1.0p-53 * sum;
    double cum = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      cum += p[size_t(i)];
      if (u < cum) return int32_t(i);
    }
    return int32_t(vocab - 1);
  }
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  // Order by logit, ties by id, so the candidate list is the same everywhere.
  auto before = [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  };
  const int64_t k = opt_.top_k > 0 ? std::min(opt_.top_k, vocab) : vocab;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), before);
  idx.resize(size_t(k));
  std::vector<double> p(idx.size());
  const double mx = logits[idx[0]];
  double sum = 0;
  for (size_t i = 0; i < idx.size(); ++i)
    sum += p[i] = std::exp((double(logits[idx[i]]) - mx) / opt_.temperature);
  size_t keep = idx.size();
  if (opt_.top_p < 1.0f) {
    double cum = 0;
    for (size_t i = 0; i < idx.size(); ++i) {
      cum += p[i] / sum;
      if (cum >= opt_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  const double total = std::accumulate(p.begin(), p.begin() + long(keep), 0.0);
  const double u = double(rng_() >> 11) * 0x1.0p-53 * total;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += p[i];
    if (u < cum) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace qf::model
