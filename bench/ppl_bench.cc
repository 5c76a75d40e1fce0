// Benchmark: `ppl` prefill throughput on a model (default: the bundled one) at 1 thread and all
// threads, beside this machine's sgemm GFLOP/s measured in the same run. Reports the median
// of repeated runs after a warm-up, and the ratio achieved / sgemm.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "eval/perplexity.h"
#include "kernels/ops.h"
#include "model/model.h"

namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// sgemm GFLOP/s at a square size large enough to reach BLAS peak (median of reps).
double SgemmGflops(int64_t n, int reps) {
  std::vector<float> a(size_t(n * n), 0.5f), b(size_t(n * n), 0.25f), c(size_t(n * n));
  qf::kernels::MatMulNT(a.data(), b.data(), nullptr, c.data(), n, n, n);  // warm-up
  std::vector<double> g;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    qf::kernels::MatMulNT(a.data(), b.data(), nullptr, c.data(), n, n, n);
    g.push_back(2.0 * double(n) * n * n / std::chrono::duration<double>(Clock::now() - t0).count() /
                1e9);
  }
  return Median(g);
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
  const std::string model_dir = argc > 1 ? argv[1] : QF_SOURCE_DIR "/models/llama-27m";
  const int64_t windows = argc > 2 ? std::atoll(argv[2]) : 8;
  const int64_t ctx = 512;
  auto m = qf::model::Model::Load(model_dir);
  if (!m.ok()) {
    std::fprintf(stderr, "ppl_bench: %s\n", m.error().message().c_str());
    return 1;
  }
  // Synthetic token stream: throughput does not depend on the ids.
  std::vector<int32_t> tokens(size_t(windows * ctx));
  for (size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = int32_t((i * 7919) % size_t(m->config().vocab_size));
  const double flops_per_token = qf::model::FlopsPerToken(m->config(), ctx);
  const int all = int(std::max(1u, std::thread::hardware_concurrency()));

  std::printf("cpu: %s, %d hardware threads\n", CpuName().c_str(), all);
  std::printf("model: %s, ctx %lld, %lld windows, %.1f MFLOP/token\n", model_dir.c_str(),
              (long long)ctx, (long long)windows, flops_per_token / 1e6);
  std::printf("%-8s %14s %14s %14s %8s\n", "threads", "sgemm GFLOP/s", "ppl tokens/s",
              "ppl GFLOP/s", "ratio");
  std::vector<int> thread_counts = {1};
  if (all > 1) thread_counts.push_back(all);
  for (int t : thread_counts) {
    qf::kernels::SetThreads(t);
    const double peak = SgemmGflops(1024, 9);
    qf::eval::WindowOptions opt{ctx, 1};
    (void)qf::eval::Perplexity(*m, tokens, opt);  // warm-up
    opt.max_windows = windows;
    std::vector<double> tps;
    for (int rep = 0; rep < 3; ++rep) {
      auto r = qf::eval::Perplexity(*m, tokens, opt);
      if (!r.ok()) {
        std::fprintf(stderr, "ppl_bench: %s\n", r.error().message().c_str());
        return 1;
      }
      tps.push_back(r->tokens_per_second);
    }
    const double med = Median(tps);
    const double gflops = med * flops_per_token / 1e9;
    std::printf("%-8d %14.1f %14.1f %14.1f %7.0f%%\n", t, peak, med, gflops, 100.0 * gflops / peak);
  }
  return 0;
}
