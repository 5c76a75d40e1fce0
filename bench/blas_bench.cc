// Benchmark: qforge's own fp32 GEMM (kernels/cpu/f32_gemm.h; thread-count independent) against
// one OpenBLAS call that splits the work itself (the library's threading: fast, but its result
// may depend on the thread count and the CPU's kernel family), on the shapes qforge runs:
// prefill GEMMs Y = X·Wᵀ of llama-27m and Llama-3.2-1B blocks, and the Hessian XᵀX of 4096
// calibration rows (qforge's F32SyrkUpper against one ssyrk). Prints GFLOP/s (median of reps after
// a warm-up) per thread count, CPU and OpenBLAS core type. Built only where OpenBLAS is installed:
// qforge itself links no BLAS.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cpu/f32_gemm.h"
#include "kernels/ops.h"

namespace {

using Clock = std::chrono::steady_clock;

// Median seconds of `reps` timed calls after one warm-up.
double MedianSeconds(const std::function<void()>& fn, int reps) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::string CpuName() {
  FILE* f = std::fopen("/proc/cpuinfo", "r");
  char line[512];
  std::string name = "unknown";
  while (f && std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, "model name", 10) == 0) {
      name = std::strchr(line, ':') + 2;
      name.pop_back();
      break;
    }
  }
  if (f) std::fclose(f);
  return name;
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 5;
  const int max_threads = omp_get_num_procs();
  std::printf("CPU %s, %d cores, OpenBLAS core %s, median of %d\n", CpuName().c_str(), max_threads,
              openblas_get_corename(), reps);
  struct Gemm {
    const char* what;
    int64_t m, n, k;
  };
  const Gemm gemms[] = {{"27m q/o  512x512x512", 512, 512, 512},
                        {"27m gate 512x1536x512", 512, 1536, 512},
                        {"27m down 512x512x1536", 512, 512, 1536},
                        {"1B gate  512x8192x2048", 512, 8192, 2048},
                        {"1B down  512x2048x8192", 512, 2048, 8192}};
  std::printf("%-24s %7s %15s %14s %7s\n", "GEMM X[M,K]·W[N,K]ᵀ", "threads", "F32Gemm GFLOP/s",
              "1 call GFLOP/s", "ratio");
  for (int threads = 1; threads <= max_threads; threads *= 2) {
    qf::kernels::SetThreads(threads);
    for (const Gemm& g : gemms) {
      std::vector<float> x(size_t(g.m * g.k), 0.5f), w(size_t(g.n * g.k), 0.25f),
          y(size_t(g.m * g.n));
      const double flop = 2.0 * double(g.m) * g.n * g.k;
      const double one = MedianSeconds(
          [&] {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(g.m), int(g.n), int(g.k), 1.0f,
                        x.data(), int(g.k), w.data(), int(g.k), 0.0f, y.data(), int(g.n));
          },
          reps);
      const double own = MedianSeconds(
          [&] {
            qf::kernels::F32Gemm(qf::kernels::BLayout::kNT, g.m, g.n, g.k, 1.0f, x.data(), g.k,
                                 w.data(), g.k, y.data(), g.n);
          },
          reps);
      std::printf("%-24s %7d %15.1f %14.1f %7.2f\n", g.what, threads, flop / own / 1e9,
                  flop / one / 1e9, one / own);
    }
  }
  std::printf("\n%-24s %7s %14s %14s %7s\n", "Hessian XᵀX, X[4096,K]", "threads", "own GFLOP/s",
              "1 syrk GFLOP/s", "ratio");
  for (int threads = 1; threads <= max_threads; threads *= 2) {
    qf::kernels::SetThreads(threads);
    for (int64_t k : {512, 1536, 2048, 8192}) {
      const int64_t m = 4096;
      std::vector<float> x(size_t(m * k), 0.5f), c(size_t(k * k));
      const double flop = double(m) * k * k;  // the upper triangle
      const double own =
          MedianSeconds([&] { qf::kernels::F32SyrkUpper(x.data(), m, k, c.data()); }, reps);
      const double one = MedianSeconds(
          [&] {
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, int(k), int(m), 1.0f, x.data(),
                        int(k), 0.0f, c.data(), int(k));
          },
          reps);
      std::printf("K=%-22lld %7d %14.1f %14.1f %7.2f\n", (long long)k, threads, flop / own / 1e9,
                  flop / one / 1e9, one / own);
    }
  }
  return 0;
}
