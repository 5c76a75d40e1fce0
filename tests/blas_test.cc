// kernels/blas against plain loops (every transpose, strided, shapes across the tile grid),
// the LAPACK wrapper, and the one-runtime promise: a single OpenBLAS mapped in the process
// (with or without Debian's pthread build installed beside it).
#include "kernels/blas.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace qf::kernels {
namespace {

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// fp32 accumulation over K unit-normal products: |error| <= K·eps·Σ|a·b|; Σ|a·b| ~ 0.64 K.
double Tolerance(int64_t k) {
  return double(k) * 6e-8 * (0.64 * double(k) + 8.0 * std::sqrt(double(k)));
}

TEST(Blas, SgemmMatchesReferenceForEveryTransposeAndTile) {
  SetThreads(2);
  struct Case {
    int64_t m, n, k;
  };
  // Around the tile bounds: GemmTileRows caps at 512 rows, GemmTileCols at 64..256 columns.
  for (const Case c : {Case{1, 1, 1}, Case{3, 5, 7}, Case{17, 300, 33}, Case{513, 70, 19},
                       Case{600, 257, 64}, Case{40, 1100, 128}}) {
    for (Trans ta : {Trans::kNo, Trans::kYes}) {
      for (Trans tb : {Trans::kNo, Trans::kYes}) {
        // Strides wider than the rows, so the tile offsets are exercised with lda != K.
        const int64_t lda = (ta == Trans::kYes ? c.m : c.k) + 3;
        const int64_t ldb = (tb == Trans::kYes ? c.k : c.n) + 5, ldc = c.n + 2;
        const int64_t a_rows = ta == Trans::kYes ? c.k : c.m,
                      b_rows = tb == Trans::kYes ? c.n : c.k;
        const uint64_t seed = uint64_t(c.m * 7919 + c.n * 31 + c.k);
        const auto a = Random(size_t(a_rows * lda), seed),
                   b = Random(size_t(b_rows * ldb), seed + 1);
        auto y = Random(size_t(c.m * ldc), seed + 2), r = y;
        Sgemm(ta, tb, c.m, c.n, c.k, 0.5f, a.data(), lda, b.data(), ldb, 0.25f, y.data(), ldc);
        SgemmRef(ta, tb, c.m, c.n, c.k, 0.5f, a.data(), lda, b.data(), ldb, 0.25f, r.data(), ldc);
        for (int64_t i = 0; i < c.m; ++i)
          for (int64_t j = 0; j < ldc; ++j) {
            const size_t p = size_t(i * ldc + j);
            // Padding columns (j >= n) must be untouched: r kept them too.
            ASSERT_NEAR(y[p], r[p], j < c.n ? Tolerance(c.k) : 0.0)
                << c.m << "x" << c.n << "x" << c.k << " ta=" << int(ta) << " tb=" << int(tb)
                << " at (" << i << ", " << j << ") seed " << seed;
          }
      }
    }
  }
}

// Shared libraries of a BLAS or LAPACK kind mapped into this process (real paths).
std::set<std::string> MappedBlasLibraries() {
  std::ifstream maps("/proc/self/maps");
  std::set<std::string> libs;
  std::string line;
  while (std::getline(maps, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string base = path.substr(path.rfind('/') + 1);
    for (const char* prefix :
         {"libopenblas", "libblas", "liblapack", "libcblas", "libmkl", "libblis"})
      if (base.rfind(prefix, 0) == 0) libs.insert(path);
  }
  return libs;
}

TEST(Blas, OneOpenBlasRuntime) {
  SetThreads(2);
  // Call into BLAS first, so anything loaded lazily is mapped by now.
  const auto a = Random(64 * 64, 5);
  std::vector<float> c(64 * 64);
  Sgemm(Trans::kNo, Trans::kYes, 64, 64, 64, 1.0f, a.data(), 64, a.data(), 64, 0.0f, c.data(), 64);
  const std::set<std::string> libs = MappedBlasLibraries();
  std::string listed;
  for (const std::string& l : libs) listed += "\n  " + l;
  ASSERT_EQ(libs.size(), 1u) << "BLAS/LAPACK libraries mapped:" << listed;
  EXPECT_NE(libs.begin()->find("openblas-openmp"), std::string::npos)
      << "expected the OpenMP build of OpenBLAS:" << listed;
}

// Under OPENBLAS_CORETYPE (ctest's *_Haswell / *_SkylakeX variants), the library really runs
// that kernel family, so the determinism tests cover it.
TEST(Blas, RunsTheRequestedCoreType) {
  const char* want = std::getenv("OPENBLAS_CORETYPE");
  const std::string core = BlasCoreName();
  std::printf("OpenBLAS core: %s (OPENBLAS_CORETYPE=%s)\n", core.c_str(), want ? want : "unset");
  ASSERT_FALSE(core.empty());
  if (!want || !*want) GTEST_SKIP() << "OPENBLAS_CORETYPE is not set";
  std::string a = core, b = want;
  for (auto* s : {&a, &b})
    for (char& ch : *s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace qf::kernels
