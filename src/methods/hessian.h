// Calibration statistics for GPTQ: the average Hessian H = (2/n) Σ x xᵀ of one linear's
// inputs. Contract: memory O(K²) whatever the sample count; equals IST-DASLab/gptq add_batch
// (H *= n_old/n_new; H += (2/n_new) XᵀX) up to fp32 rounding inside one chunk; and the sum over
// chunks is kept in double-double (~106 bits), so H does not depend on how the chunks are
// grouped or ordered: accumulators that saw a split of the same Add calls, merged, give the
// bits of one that saw them all (data-parallel calibration's byte-identical Hessians), except
// when a sum falls within ~2^-104 of an fp64 rounding boundary.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace qf::methods {

// Average Hessian of a linear's inputs, H = (2/n) Σ x xᵀ over the n rows seen. Each chunk of
// at most kChunkRows rows of one Add call is reduced in fp32 by qforge's own GEMM
// (kernels::F32SyrkUpper: the same bits on every CPU; no fp64 copy of the activations; the fp32
// sum over <= 4096 products is accurate to ~1e-6 relative, far below GPTQ's 1% damping), and the
// chunks are summed in double-double.
class HessianAccumulator {
 public:
  static constexpr int64_t kChunkRows = 4096;

  explicit HessianAccumulator(int64_t k);

  // Adds x[M, K] (row-major, M tokens). M = 0 is a no-op (an expert no token was routed to).
  // Not after matrix().
  void Add(const float* x, int64_t m);
  // Adds another accumulator's samples (neither read by matrix() yet).
  void Merge(const HessianAccumulator& other);
  // Every rank's samples (core/dist.h: ranks folded in rank order as Merge does), on every rank.
  // One rank: nothing to do.
  void ReduceAcrossRanks();

  int64_t k() const { return k_; }
  int64_t samples() const { return samples_; }
  // [K, K], full symmetric: the first read turns the sum into H in place (frees the low
  // parts) and the accumulator is then read-only. Not safe to call concurrently with itself.
  const std::vector<double>& matrix() const;
  // H by move, for a consumer that transforms it in place (methods::FactorHessian): the
  // accumulator holds nothing afterwards (matrix() and Take() are then errors).
  std::vector<double> Take();

 private:
  // The upper triangle of the sum Σ XᵀX as double-double hi + lo, both packed row by row.
  void AddUpper(const float* part);
  int64_t k_;
  int64_t samples_ = 0;
  mutable std::vector<double> hi_;  // K(K+1)/2 high parts of the sum; then H, [K, K] full
  mutable std::vector<double> lo_;  // K(K+1)/2 low parts; empty once H is formed
  mutable bool final_ = false;
  bool taken_ = false;
  mutable std::vector<float> scratch_;  // [K, K] upper triangle of one chunk's XᵀX (until H)
};

}  // namespace qf::methods
