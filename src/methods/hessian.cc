// Average Hessian (see hessian.h): fp32 XᵀX per chunk, summed in double-double, scaled once.
// Contract: the result does not depend on the thread count or the CPU (kernels::F32SyrkUpper:
// each entry of a chunk's XᵀX is one fma chain over its rows, whatever the SIMD target).
#include "methods/hessian.h"

#include <algorithm>

#include "core/ddsum.h"
#include "core/dist.h"
#include "core/result.h"
#include "kernels/cpu/f32_gemm.h"

namespace qf::methods {
namespace {

// Index of (i, j), j >= i, in a row-by-row packed upper triangle of a K × K matrix.
inline size_t Packed(int64_t k, int64_t i, int64_t j) {
  return size_t(i * k - i * (i - 1) / 2 + (j - i));
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t k)
    : k_(k),
      hi_(static_cast<size_t>(k * (k + 1) / 2), 0.0),
      lo_(static_cast<size_t>(k * (k + 1) / 2), 0.0) {
  QF_CHECK(k >= 1, "K = {}", k);
}

void HessianAccumulator::AddUpper(const float* part) {
  for (int64_t i = 0; i < k_; ++i) {
    double* hi = hi_.data() + Packed(k_, i, i) - i;  // hi[j] for j >= i
    double* lo = lo_.data() + Packed(k_, i, i) - i;
    const float* p = part + i * k_;
    for (int64_t j = i; j < k_; ++j) DdAdd(hi[j], lo[j], double(p[j]));
  }
}

void HessianAccumulator::Add(const float* x, int64_t m) {
  QF_CHECK(m >= 0, "M = {}", m);
  QF_CHECK(!final_, "HessianAccumulator::Add after matrix()");
  if (m == 0) return;
  const size_t kk = static_cast<size_t>(k_ * k_);
  if (scratch_.size() != kk) scratch_.assign(kk, 0.0f);
  for (int64_t r0 = 0; r0 < m; r0 += kChunkRows) {
    const int64_t rows = std::min(kChunkRows, m - r0);
    // scratch (upper) = X_chunkᵀ X_chunk; X_chunk is [rows, K] row-major.
    kernels::F32SyrkUpper(x + r0 * k_, rows, k_, scratch_.data());
    AddUpper(scratch_.data());
    samples_ += rows;
  }
}

const std::vector<double>& HessianAccumulator::matrix() const {
  QF_CHECK(!taken_, "HessianAccumulator::matrix after Take()");
  if (!final_) {
    // H's upper triangle in the packed high parts, the low parts and the chunk scratch freed,
    // then the full matrix: the peak is K(K+1)/2 + K² doubles, not the sum's 2 · K(K+1)/2 + K².
    const double c = samples_ ? 2.0 / static_cast<double>(samples_) : 0.0;
    for (size_t q = 0; q < hi_.size(); ++q) hi_[q] = (hi_[q] + lo_[q]) * c;
    lo_ = {};
    scratch_ = {};
    std::vector<double> h(static_cast<size_t>(k_ * k_));
    for (int64_t i = 0; i < k_; ++i)
      std::copy_n(hi_.data() + Packed(k_, i, i), k_ - i, h.data() + i * k_ + i);
    hi_ = std::move(h);
    // The lower triangle mirrored in square tiles (a row-by-row copy would write one cache line
    // per entry at K = 8192).
    constexpr int64_t kTile = 64;
    for (int64_t i0 = 0; i0 < k_; i0 += kTile)
      for (int64_t j0 = 0; j0 <= i0; j0 += kTile)
        for (int64_t i = i0; i < std::min(k_, i0 + kTile); ++i)
          for (int64_t j = j0; j < std::min(i, j0 + kTile); ++j)
            hi_[size_t(i * k_ + j)] = hi_[size_t(j * k_ + i)];
    final_ = true;
  }
  return hi_;
}

std::vector<double> HessianAccumulator::Take() {
  matrix();
  taken_ = true;
  return std::move(hi_);
}

void HessianAccumulator::Merge(const HessianAccumulator& other) {
  QF_CHECK(other.k_ == k_, "merging K = {} into K = {}", other.k_, k_);
  QF_CHECK(!final_ && !other.final_, "HessianAccumulator::Merge after matrix()");
  for (size_t q = 0; q < hi_.size(); ++q) DdAdd(hi_[q], lo_[q], other.hi_[q], other.lo_[q]);
  samples_ += other.samples_;
}

void HessianAccumulator::ReduceAcrossRanks() {
  if (dist::Size() == 1) return;
  QF_CHECK(!final_, "HessianAccumulator::ReduceAcrossRanks after matrix()");
  std::vector<double> n{double(samples_)};
  dist::SumInRankOrder(n);
  samples_ = int64_t(n[0]);
  // The packed (hi, lo) pairs, folded as Merge does, in bands of kBand entries (the exchange
  // buffers stay at a few tens of MiB whatever K).
  constexpr size_t kBand = size_t{1} << 21;
  std::vector<double> p;
  for (size_t q0 = 0; q0 < hi_.size(); q0 += kBand) {
    const size_t nq = std::min(kBand, hi_.size() - q0);
    p.resize(2 * nq);
    for (size_t q = 0; q < nq; ++q) {
      p[2 * q] = hi_[q0 + q];
      p[2 * q + 1] = lo_[q0 + q];
    }
    dist::FoldInRankOrder(p, [](std::span<double> acc, std::span<const double> part) {
      for (size_t q = 0; q + 1 < acc.size(); q += 2)
        DdAdd(acc[q], acc[q + 1], part[q], part[q + 1]);
    });
    for (size_t q = 0; q < nq; ++q) {
      hi_[q0 + q] = p[2 * q];
      lo_[q0 + q] = p[2 * q + 1];
    }
  }
}

}  // namespace qf::methods
