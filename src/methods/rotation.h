// Orthogonal rotations that leave a model's fp output unchanged and spread its weights'
// outliers over every channel before quantization (QuaRot, arXiv 2404.00456; SpinQuant's R1 and
// R2, arXiv 2405.16406). With the RMSNorm weights folded into the linears that read each norm,
// the residual stream x can be replaced by R x for any orthogonal R: an RMSNorm with unit
// weights commutes with R (|R x| = |x|), every linear reading the stream gets W' = W Rᵀ and every
// linear writing it W' = R W (and bias' = R b), the embedding rows become R e. In the same way
// each attention head's values can be rotated by a head_dim rotation (v_proj's rows of the head
// and o_proj's columns of it). Folded into the weights, nothing changes at run time: the model
// is a plain checkpoint of its architecture.
// Contract: Apply is an exactly orthogonal map up to fp32 rounding (‖R x‖ = ‖x‖, Rᵀ R = I),
// a deterministic function of (n, seed) on every CPU.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace qf::methods {

// R = (H ⊗ Q) · D / √p for n = p · m with p the largest power of two dividing n: D a diagonal
// of random signs, H the p × p Walsh–Hadamard matrix (applied by the fast transform) and Q an
// m × m random orthogonal matrix (Gram–Schmidt of uniform entries; 1 × 1 = [1] when n is a power
// of two, the randomised Hadamard rotation of QuaRot). Entries from SplitMix64(seed).
class Rotation {
 public:
  Rotation(int64_t n, uint64_t seed);
  int64_t size() const { return n_; }
  // v ← R v for one vector of size() floats.
  void Apply(float* v) const;

 private:
  int64_t n_, p_, m_;
  std::vector<float> signs_;  // [n]
  std::vector<double> q_;     // [m, m] row-major, orthonormal rows
};

// Each row of the row-major [rows, cols] matrix w replaced by R row (cols == R.size()): a
// linear that reads the rotated stream (W Rᵀ), or embedding rows. Rows on several threads.
void RotateRows(const Rotation& r, std::span<float> w, int64_t rows, int64_t cols);
// Each column replaced by R column (rows == R.size()): a linear that writes the stream (R W).
void RotateColumns(const Rotation& r, std::span<float> w, int64_t rows, int64_t cols);

}  // namespace qf::methods
