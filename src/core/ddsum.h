// Double-double sums (hi + lo, ~106 bits): a sum of many fp64 terms that does not depend on how
// the terms are grouped, up to ~2^-104 relative. Data-parallel statistics use it so that N ranks
// folding their partial sums in rank order give one process's bits (core/dist.h).
#pragma once

namespace qf {

// (hi, lo) += x: hi the rounded sum, the exact rounding error (TwoSum) into lo.
inline void DdAdd(double& hi, double& lo, double x) {
  const double s = hi + x, b = s - hi;
  lo += (hi - (s - b)) + (x - b);
  hi = s;
}

// (hi, lo) += (x_hi, x_lo): another double-double sum.
inline void DdAdd(double& hi, double& lo, double x_hi, double x_lo) {
  DdAdd(hi, lo, x_hi);
  lo += x_lo;
}

}  // namespace qf
