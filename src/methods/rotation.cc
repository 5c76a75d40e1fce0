// The randomised Hadamard rotation (see rotation.h).
#include "methods/rotation.h"

#include <cmath>

#include "core/result.h"

namespace qf::methods {
namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// In-place unnormalised Walsh–Hadamard transform over p blocks of m contiguous floats each
// (the H ⊗ I_m part of the rotation): butterflies between block i and block i + h.
void Hadamard(float* v, int64_t p, int64_t m) {
  for (int64_t h = 1; h < p; h *= 2)
    for (int64_t i = 0; i < p; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        float* a = v + j * m;
        float* b = v + (j + h) * m;
        for (int64_t c = 0; c < m; ++c) {
          const float x = a[c], y = b[c];
          a[c] = x + y;
          b[c] = x - y;
        }
      }
}

}  // namespace

Rotation::Rotation(int64_t n, uint64_t seed) : n_(n), p_(1), m_(n) {
  QF_CHECK(n > 0, "rotation of size {}", n);
  while (m_ % 2 == 0) {
    m_ /= 2;
    p_ *= 2;
  }
  uint64_t state = seed;
  signs_.resize(size_t(n));
  for (float& s : signs_) s = (SplitMix64(state) >> 63) ? -1.0f : 1.0f;
  // Q: Gram–Schmidt (twice, for orthogonality to double precision) of uniform rows in [-1, 1).
  q_.resize(size_t(m_ * m_));
  for (double& x : q_) x = double(SplitMix64(state) >> 11) * 0x1.0p-52 - 1.0;
  for (int64_t i = 0; i < m_; ++i) {
    double* row = q_.data() + i * m_;
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t j = 0; j < i; ++j) {
        const double* prev = q_.data() + j * m_;
        double dot = 0;
        for (int64_t c = 0; c < m_; ++c) dot += row[c] * prev[c];
        for (int64_t c = 0; c < m_; ++c) row[c] -= dot * prev[c];
      }
    double norm = 0;
    for (int64_t c = 0; c < m_; ++c) norm += row[c] * row[c];
    norm = std::sqrt(norm);
    QF_CHECK(norm > 1e-6, "rotation: degenerate row {}", i);
    for (int64_t c = 0; c < m_; ++c) row[c] /= norm;
  }
}

void Rotation::Apply(float* v) const {
  for (int64_t i = 0; i < n_; ++i) v[i] *= signs_[size_t(i)];
  if (m_ > 1) {  // I_p ⊗ Q: each block of m by Q (in double)
    std::vector<double> tmp(static_cast<size_t>(m_));
    for (int64_t b = 0; b < p_; ++b) {
      float* blk = v + b * m_;
      for (int64_t r = 0; r < m_; ++r) {
        const double* q = q_.data() + r * m_;
        double s = 0;
        for (int64_t c = 0; c < m_; ++c) s += q[c] * blk[c];
        tmp[size_t(r)] = s;
      }
      for (int64_t r = 0; r < m_; ++r) blk[r] = float(tmp[size_t(r)]);
    }
  }
  Hadamard(v, p_, m_);
  const float scale = float(1.0 / std::sqrt(double(p_)));
  for (int64_t i = 0; i < n_; ++i) v[i] *= scale;
}

void RotateRows(const Rotation& r, std::span<float> w, int64_t rows, int64_t cols) {
  QF_CHECK(cols == r.size() && int64_t(w.size()) == rows * cols, "RotateRows: shape");
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows; ++i) r.Apply(w.data() + i * cols);
}

void RotateColumns(const Rotation& r, std::span<float> w, int64_t rows, int64_t cols) {
  QF_CHECK(rows == r.size() && int64_t(w.size()) == rows * cols, "RotateColumns: shape");
#pragma omp parallel
  {
    std::vector<float> col(static_cast<size_t>(rows));
#pragma omp for schedule(static)
    for (int64_t j = 0; j < cols; ++j) {
      for (int64_t i = 0; i < rows; ++i) col[size_t(i)] = w[size_t(i * cols + j)];
      r.Apply(col.data());
      for (int64_t i = 0; i < rows; ++i) w[size_t(i * cols + j)] = col[size_t(i)];
    }
  }
}

}  // namespace qf::methods
