// Thread-count independence of every result qforge promises it for: fp32 GEMM products,
// Hessians, GPTQ codes, the ggml prefill tiles, the forward pass (perplexity, KLD). Each is
// computed with 1, 2 and 3 threads and compared bit for bit.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <random>
#include <vector>

#include "eval/perplexity.h"
#include "formats/ggml_blocks.h"
#include "formats/scheme.h"
#include "kernels/cpu/f32_gemm.h"
#include "kernels/ops.h"
#include "kernels/qgemm.h"
#include "methods/gptq.h"
#include "methods/hessian.h"
#include "model/model.h"
#include "test_util.h"

namespace qf {
namespace {

constexpr int kThreadCounts[] = {1, 2, 3};

std::vector<float> Random(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Runs fn() once per thread count and expects the same bytes each time; `what` names the case.
template <class Fn>
void ExpectSameForEveryThreadCount(const std::string& what, Fn&& fn) {
  const int before = omp_get_max_threads();
  kernels::SetThreads(kThreadCounts[0]);
  const auto first = fn();
  for (int t : kThreadCounts) {
    kernels::SetThreads(t);
    const auto again = fn();
    ASSERT_EQ(first.size(), again.size()) << what;
    for (size_t i = 0; i < first.size(); ++i)
      ASSERT_EQ(std::memcmp(&first[i], &again[i], sizeof(first[i])), 0)
          << what << ": element " << i << " differs with " << t << " threads vs "
          << kThreadCounts[0] << " (" << first[i] << " vs " << again[i] << ")";
  }
  kernels::SetThreads(before);
}

TEST(Determinism, F32Gemm) {
  struct Case {
    int64_t m, n, k;
  };
  for (const Case c : {Case{5, 300, 64}, Case{512, 1536, 512}, Case{700, 256, 1536}}) {
    const auto a = Random(size_t(c.m * c.k), 1), b = Random(size_t(c.n * c.k), 2);
    for (const kernels::BLayout layout : {kernels::BLayout::kNT, kernels::BLayout::kNN}) {
      const bool nt = layout == kernels::BLayout::kNT;
      ExpectSameForEveryThreadCount(
          fmt::format("F32Gemm {} {}x{}x{}", nt ? "NT" : "NN", c.m, c.n, c.k), [&] {
            std::vector<float> y(size_t(c.m * c.n));
            kernels::F32Gemm(layout, c.m, c.n, c.k, 1.0f, a.data(), c.k, b.data(), nt ? c.k : c.n,
                             y.data(), c.n);
            return y;
          });
    }
  }
}

// The Hessian (several row chunks, K across the tile sizes) and the GPTQ codes solved from it.
TEST(Determinism, HessianAndGptqCodes) {
  for (int64_t k : {512, 1536}) {
    const int64_t m = methods::HessianAccumulator::kChunkRows + 904, n = 256;
    const auto x = Random(size_t(m * k), uint64_t(k));
    auto hessian = [&] {
      methods::HessianAccumulator h(k);
      h.Add(x.data(), m);
      return h;
    };
    ExpectSameForEveryThreadCount(fmt::format("Hessian K={}", k),
                                  [&] { return hessian().matrix(); });
    const auto w = Random(size_t(n * k), 7, 0.02f);
    const methods::HessianAccumulator h = hessian();
    const QuantScheme scheme = ParseScheme("int4-g128-asym").value();
    ExpectSameForEveryThreadCount(fmt::format("GPTQ codes K={}", k), [&] {
      auto q = methods::Gptq(w, n, k, h, scheme, {});
      EXPECT_TRUE(q.ok());
      std::vector<float> out(q->scales);
      for (uint8_t c : q->codes) out.push_back(float(c));
      return out;
    });
  }
}

// Prefill on ggml blocks: decoded tiles times the activations by F32Gemm (or the integer kernels).
TEST(Determinism, GgmlPrefillTiles) {
  const GgmlBlockType* t = FindGgmlBlockType("Q4_K");
  ASSERT_NE(t, nullptr);
  const int64_t rows = 1040, cols = 512, m = 100;
  const auto wf = Random(size_t(rows * cols), 3, 0.02f);
  auto blocks = std::make_shared<std::vector<std::byte>>(GgmlRowsBytes(*t, rows, cols).value());
  ASSERT_TRUE(QuantizeRowsGgml(*t, wf.data(), rows, cols, nullptr, blocks->data()).ok());
  const GgmlTensor w = kernels::ForKernels(GgmlTensor{
      t, rows, cols, size_t(cols / t->block) * t->block_bytes, blocks->data(), blocks, false});
  const auto x = Random(size_t(m * cols), 4);
  ExpectSameForEveryThreadCount("Q4_K prefill", [&] {
    std::vector<float> y(size_t(m * rows));
    kernels::MatMulGgmlNT(x.data(), w, nullptr, y.data(), m);
    return y;
  });
}

// The whole forward pass of the bundled model: perplexity and KL divergence (itself vs itself
// is 0 whatever happens, so against a copy run with another thread count it is the logits).
TEST(Determinism, PerplexityOfTheBundledModel) {
  auto model = model::Model::Load(testing::BundledModel());
  ASSERT_TRUE(model.ok()) << model.error().message();
  std::mt19937 rng(11);
  std::vector<int32_t> tokens(4 * 96 + 1);
  for (auto& id : tokens) id = int32_t(rng() % uint32_t(model->config().vocab_size));
  eval::WindowOptions win;
  win.ctx = 96;
  ExpectSameForEveryThreadCount("perplexity", [&] {
    auto r = eval::Perplexity(*model, tokens, win);
    EXPECT_TRUE(r.ok());
    return std::vector<double>{r->ppl, r->mean_nll, r->ppl_stderr};
  });
}

}  // namespace
}  // namespace qf
