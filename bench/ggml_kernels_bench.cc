// Per-type speed of the ggml block kernels (kernels/cpu/ggml_dot) on one thread: the decoding
// GEMV (one token) on the blocks as in a file and, for the types that have one, on the
// interleaved compute layout (GgmlInterleave: what a loaded model runs), and the prefill tile
// decoder, in ns per weight, on a [rows, cols] matrix of
// encoded random weights small enough to stay in L2 (the kernels' own cost, not memory's).
// Usage: build/ggml_kernels_bench [rows=1536] [cols=512] [TYPE ...]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"

#include "formats/ggml_blocks.h"
#include "kernels/cpu/ggml_dot.h"

using qf::bench::BestSeconds;

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 1536;
  const int64_t cols = argc > 2 ? std::atoll(argv[2]) : 512;
  std::vector<std::string> names;
  for (int i = 3; i < argc; ++i) names.emplace_back(argv[i]);
  if (names.empty())
    for (const auto& t : qf::GgmlBlockTypes())
      if (!t.activation_only) names.emplace_back(t.name);
  if (rows <= 0 || cols <= 0 || cols % 256 != 0) {
    std::fprintf(stderr, "rows must be positive and cols a positive multiple of 256\n");
    return 1;
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> w(static_cast<size_t>(rows * cols)), x(static_cast<size_t>(cols)),
      y(static_cast<size_t>(rows)), tile(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  std::printf("%-8s %10s %12s %16s %14s\n", "type", "bytes", "gemv ns/w", "interleaved ns/w",
              "decode ns/w");
  for (const auto& name : names) {
    const qf::GgmlBlockType* t = qf::FindGgmlBlockType(name);
    if (!t || t->activation_only) {
      std::fprintf(stderr, "unknown model type %s\n", name.c_str());
      return 1;
    }
    std::vector<std::byte> b(qf::GgmlRowsBytes(*t, rows, cols).value());
    if (!qf::QuantizeRowsGgml(*t, w.data(), rows, cols, nullptr, b.data()).ok()) return 1;
    const qf::kernels::GgmlRows g{t, b.data(), b.size() / size_t(rows), rows, cols};
    const int reps = int(std::max<int64_t>(1, 20'000'000 / (rows * cols)));
    const double gemv =
        BestSeconds(reps, [&] { qf::kernels::GgmlGemv(g, x.data(), 1, y.data(), rows); });
    const double dec = BestSeconds(reps, [&] { qf::kernels::GgmlDecodeRows(g, tile.data()); });
    const double n = double(rows * cols);
    char il[32] = "-";
    if (qf::kernels::GgmlInterleaves(*t) && rows % qf::kernels::kGgmlInterleaveRows == 0) {
      std::vector<std::byte> ib(b.size());
      qf::kernels::GgmlInterleave(*t, b.data(), rows, cols, ib.data());
      qf::kernels::GgmlRows gi = g;
      gi.data = ib.data();
      gi.interleaved = true;
      const double s =
          BestSeconds(reps, [&] { qf::kernels::GgmlGemv(gi, x.data(), 1, y.data(), rows); });
      std::snprintf(il, sizeof il, "%.4f", s / n * 1e9);
    }
    std::printf("%-8s %10zu %12.4f %16s %14.4f\n", name.c_str(), b.size(), gemv / n * 1e9, il,
                dec / n * 1e9);
  }
  return 0;
}
