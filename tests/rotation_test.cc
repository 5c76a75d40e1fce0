// methods/rotation: the randomised Hadamard rotation is orthogonal for every size (powers of two
// and sizes with an odd factor), a Hadamard matrix up to signs where the size is a power of two,
// deterministic in its seed, and RotateRows / RotateColumns apply it to rows / columns.
#include "methods/rotation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "test_util.h"

namespace qf::methods {
namespace {

// The matrix of R, column j = R e_j, as [n, n] row-major.
std::vector<double> Matrix(const Rotation& r) {
  const int64_t n = r.size();
  std::vector<double> m(size_t(n * n));
  std::vector<float> e(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    std::fill(e.begin(), e.end(), 0.0f);
    e[size_t(j)] = 1.0f;
    r.Apply(e.data());
    for (int64_t i = 0; i < n; ++i) m[size_t(i * n + j)] = e[size_t(i)];
  }
  return m;
}

TEST(Rotation, IsOrthogonalForEverySize) {
  for (const int64_t n : {1, 2, 6, 24, 64, 96, 448}) {
    SCOPED_TRACE(n);
    const std::vector<double> m = Matrix(Rotation(n, 7));
    double worst = 0;
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b) {
        double dot = 0;
        for (int64_t i = 0; i < n; ++i) dot += m[size_t(i * n + a)] * m[size_t(i * n + b)];
        worst = std::max(worst, std::abs(dot - (a == b ? 1.0 : 0.0)));
      }
    EXPECT_LT(worst, 1e-5);
  }
}

TEST(Rotation, PowersOfTwoAreSignedHadamardMatrices) {
  // Every entry ±1/√n: each weight spreads evenly over every channel. Rows and columns both
  // carry signs (the random diagonal), so seeds differ.
  for (const int64_t n : {2, 64, 512}) {
    SCOPED_TRACE(n);
    const std::vector<double> m = Matrix(Rotation(n, 3));
    for (const double v : m) EXPECT_NEAR(std::abs(v), 1.0 / std::sqrt(double(n)), 1e-6);
  }
  EXPECT_NE(Matrix(Rotation(64, 3)), Matrix(Rotation(64, 4)));
  EXPECT_EQ(Matrix(Rotation(96, 3)), Matrix(Rotation(96, 3)));
}

TEST(Rotation, RowsAndColumnsKeepTheProduct) {
  // A linear reading the rotated stream (rows rotated) times the rotated input equals the
  // original product; a linear writing it (columns rotated) gives the rotated output.
  const int64_t n = 24, k = 24, m = 40;
  const Rotation r(k, 11);
  const std::vector<float> w = qf::testing::RandomNormal(size_t(m * k), 1);
  std::vector<float> x = qf::testing::RandomNormal(size_t(k), 2);
  std::vector<float> wr = w, xr = x;
  RotateRows(r, wr, m, k);
  r.Apply(xr.data());
  for (int64_t i = 0; i < m; ++i) {
    double a = 0, b = 0;
    for (int64_t j = 0; j < k; ++j) {
      a += double(w[size_t(i * k + j)]) * x[size_t(j)];
      b += double(wr[size_t(i * k + j)]) * xr[size_t(j)];
    }
    EXPECT_NEAR(a, b, 1e-4 * (1 + std::abs(a)));
  }
  // Columns: (R W) z = R (W z).
  const std::vector<float> v = qf::testing::RandomNormal(size_t(n * m), 3);
  const std::vector<float> z = qf::testing::RandomNormal(size_t(m), 4);
  std::vector<float> vr = v;
  RotateColumns(r, vr, n, m);
  std::vector<float> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t j = 0; j < m; ++j) s += double(v[size_t(i * m + j)]) * z[size_t(j)];
    y[size_t(i)] = float(s);
  }
  r.Apply(y.data());
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t j = 0; j < m; ++j) s += double(vr[size_t(i * m + j)]) * z[size_t(j)];
    EXPECT_NEAR(s, y[size_t(i)], 1e-4 * (1 + std::abs(s)));
  }
}

}  // namespace
}  // namespace qf::methods
