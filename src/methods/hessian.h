// Calibration statistics for GPTQ: the running-average Hessian H = (2/n) Σ x xᵀ of one
// linear's inputs. Contract: memory O(K²) whatever the sample count; equals IST-DASLab/gptq
// add_batch (H *= n_old/n_new; H += (2/n_new) XᵀX) up to fp32 rounding inside one chunk.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace qf::methods {

// Running-average Hessian of a linear's inputs, H = (2/n) Σ x xᵀ over the n rows seen.
// Each chunk of at most kChunkRows rows is reduced with fp32 BLAS syrk (half the time of
// dsyrk and no fp64 copy of the activations; the fp32 sum over ≤ 4096 products is accurate to
// ~1e-6 relative, far below GPTQ's 1% damping), and the chunks are combined in fp64 so that
// the average does not drift however many batches are added.
class HessianAccumulator {
 public:
  static constexpr int64_t kChunkRows = 4096;

  explicit HessianAccumulator(int64_t k);

  // Adds x[M, K] (row-major, M tokens). M = 0 is a no-op (an expert no token was routed to).
  void Add(const float* x, int64_t m);
  // Adds another accumulator's samples (data-parallel calibration): H = (n₁H₁ + n₂H₂)/(n₁+n₂).
  void Merge(const HessianAccumulator& other);

  int64_t k() const { return k_; }
  int64_t samples() const { return samples_; }
  // [K, K], full symmetric. Add/Merge update the upper triangle only; the lower one is filled
  // here, once per read (a strided K² copy per Add would cost more than small batches' syrk).
  // Not safe to call concurrently with itself.
  const std::vector<double>& matrix() const;

 private:
  int64_t k_;
  int64_t samples_ = 0;
  mutable std::vector<double> h_;  // [K, K]; lower triangle valid when !stale_
  mutable bool stale_ = false;
  std::vector<float> scratch_;  // [K, K] upper triangle of one chunk's XᵀX
};

}  // namespace qf::methods
