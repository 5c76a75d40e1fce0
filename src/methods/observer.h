// Per-input-channel statistics of a linear's input X[M, K], gathered on the calibration pass
// (SmoothQuant's max|x_j|, AWQ's mean|x_j|, the static activation scale's max|x|, the clip
// search's importance mean x_j²). Contract: the result depends only on the rows added and
// their order (sums in fp64), never on the thread count of the caller.
#pragma once

#include <cstdint>
#include <vector>

namespace qf::methods {

class ChannelObserver {
 public:
  explicit ChannelObserver(int64_t k);

  void Add(const float* x, int64_t m);  // m rows of k values
  // Every rank's rows (core/dist.h: sums and maxima folded in rank order), on every rank.
  void ReduceAcrossRanks();

  int64_t k() const { return k_; }
  int64_t rows() const { return rows_; }
  const std::vector<float>& absmax() const { return absmax_; }  // max_i |x_ij|, [K]
  float tensor_absmax() const;                                  // max over all of X
  std::vector<float> MeanAbs() const;                           // Σ_i |x_ij| / M, [K]
  std::vector<float> MeanSquare() const;                        // Σ_i x_ij² / M, [K]

 private:
  int64_t k_;
  int64_t rows_ = 0;
  std::vector<float> absmax_;
  std::vector<double> abs_sum_, sq_sum_;
};

}  // namespace qf::methods
