// Speed of the compressed-tensors kernels on one thread (kernels/cpu/int_dot, int8_gemm): the
// decoding GEMV on the kernels' layout of each integer scheme, in ns per weight, and the int8
// GEMM (W8A8), the weight-only prefill (A16 GEMM) and the fp8 GEMM against fp32 sgemm on the
// same [m, k] x [n, k]ᵀ, in GMAC/s.
// Usage: build/int_kernels_bench [rows=2048] [cols=2048] [m=64]
// rows x cols is meant to fit in L2 for the kernels' own cost (the default: 2 MiB of int4).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"

#include "formats/quantize.h"
#include "kernels/cpu/a16_gemm.h"
#include "kernels/cpu/fp8_gemm.h"
#include "kernels/cpu/int8_gemm.h"
#include "kernels/ops.h"
#include "kernels/qgemm.h"

using qf::bench::BestSeconds;

int main(int argc, char** argv) {
  using namespace qf;
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 2048;
  const int64_t k = argc > 2 ? std::atoll(argv[2]) : 2048;
  const int64_t m = argc > 3 ? std::atoll(argv[3]) : 64;
  if (n <= 0 || k <= 0 || k % 128 != 0 || m <= 0) {
    std::fprintf(stderr, "rows, m positive; cols a positive multiple of 128\n");
    return 1;
  }
  kernels::SetThreads(1);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> w(static_cast<size_t>(n * k)), x(static_cast<size_t>(m * k)),
      y(static_cast<size_t>(m * n));
  for (auto& v : w) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  std::printf("%-20s %12s %12s\n", "scheme", "gemv ns/w", "gemv4 ns/w");
  for (const char* spec : {"int4-g128-sym", "int4-g128-asym", "int4-g32-sym", "int3-g128-asym",
                           "int2-g64-asym", "int8-channel-sym", "int8-g128-sym"}) {
    auto q = Quantize(w, n, k, *ParseScheme(spec));
    const kernels::QuantMatrix mat = kernels::ToKernelLayout(*q, ActQuant{});
    const kernels::IntRows rows = mat.Rows(0, n);
    const double t1 = BestSeconds(10, [&] { kernels::IntGemv(rows, x.data(), 1, y.data(), n); });
    const double t4 = BestSeconds(5, [&] { kernels::IntGemv(rows, x.data(), 4, y.data(), n); });
    std::printf("%-20s %12.4f %12.4f\n", spec, t1 * 1e9 / double(n * k),
                t4 * 1e9 / double(n * k) / 4);
  }
  // W8A8: the int8 GEMM against fp32 sgemm, both one thread, m tokens.
  auto q8 = Quantize(w, n, k, *ParseScheme("int8-channel-sym"));
  ActQuant a;
  a.scheme = *ParseActScheme("int8-token");
  const kernels::QuantMatrix mat8 = kernels::ToKernelLayout(*q8, a);
  const double macs = double(m) * double(n) * double(k);
  const double ti =
      BestSeconds(3, [&] { kernels::MatMulQuantNT(x.data(), mat8, a, nullptr, y.data(), m); });
  const double tf =
      BestSeconds(3, [&] { kernels::GemmNT(x.data(), w.data(), y.data(), m, n, k, n); });
  std::printf(
      "m=%lld: int8 GEMM (W8A8, activations quantized in) %.1f GMAC/s, fp32 sgemm %.1f "
      "GMAC/s (%.2fx)\n",
      static_cast<long long>(m), macs / ti * 1e-9, macs / tf * 1e-9, tf / ti);
  {  // each int8 GEMM path alone (the same integers), on activation bytes of any value
    const kernels::Int8Rows rows = mat8.Int8();
    const int64_t cols4 = kernels::Int8Cols4(k);
    std::vector<uint8_t> au(size_t(m * cols4));
    for (size_t i = 0; i < au.size(); ++i) au[i] = uint8_t(i * 37 % 256);
    std::vector<int32_t> acc(size_t(m * kernels::Int8Rows16(n)));
    std::printf("m=%lld: int8 kernels:", static_cast<long long>(m));
    for (kernels::Int8Path p : kernels::Int8GemmPaths()) {
      if (p == kernels::Int8Path::kPortable) continue;
      const double tp = BestSeconds(3, [&] {
        kernels::Int8GemmOn(p, rows, au.data(), m, 0, n, acc.data(), kernels::Int8Rows16(n));
      });
      std::printf(" %s %.1f GMAC/s", std::string(kernels::Int8PathName(p)).c_str(),
                  macs / tp * 1e-9);
    }
    std::printf("\n");
  }
  // Weight-only integer prefill: the A16 GEMM (16-bit activations) where it runs, else the
  // decoded tiles + sgemm, activations quantized and weights packed in.
  for (const char* spec : {"int4-g128-sym", "int4-g128-asym", "int8-channel-sym"}) {
    auto qw = Quantize(w, n, k, *ParseScheme(spec));
    const kernels::QuantMatrix matw = kernels::ToKernelLayout(*qw, ActQuant{});
    const double tw = BestSeconds(
        3, [&] { kernels::MatMulQuantNT(x.data(), matw, ActQuant{}, nullptr, y.data(), m); });
    std::printf("m=%lld: %s prefill (%s) %.1f GMAC/s (%.2fx sgemm)\n", static_cast<long long>(m),
                spec, kernels::A16GemmFast() ? "A16 GEMM" : "decoded tiles + sgemm",
                macs / tw * 1e-9, tf / tw);
  }
  // FP8 W8A8: the path Fp8Gemm runs (AMX where usable, else AVX512-BF16 or fp32 FMAs),
  // activations quantized in; then each path's kernel alone.
  auto qf8 = Quantize(w, n, k, *ParseScheme("fp8-e4m3-channel"));
  ActQuant af;
  af.scheme = *ParseActScheme("fp8-e4m3-token");
  const kernels::QuantMatrix matf = kernels::ToKernelLayout(*qf8, af);
  const double t8 =
      BestSeconds(3, [&] { kernels::MatMulQuantNT(x.data(), matf, af, nullptr, y.data(), m); });
  std::printf("m=%lld: fp8 GEMM (%s) %.1f GMAC/s (%.2fx sgemm)\n", static_cast<long long>(m),
              std::string(kernels::Fp8GemmPathName()).c_str(), macs / t8 * 1e-9, tf / t8);
  {
    const int64_t cols2 = kernels::Fp8GemmCols2(k);
    std::vector<uint16_t> a8(size_t(m * cols2), 0);
    for (int64_t t = 0; t < m; ++t)
      for (int64_t c = 0; c < k; ++c)
        a8[size_t(t * cols2 + c)] =
            uint16_t(BitsFromF32(F8E4M3Values()[size_t(t + c) % 0x7f]) >> 16);
    const kernels::Fp8Rows rows = matf.Fp8(0, n);
    const double tfma =
        BestSeconds(3, [&] { kernels::Fp8GemmFma(rows, a8.data(), m, y.data(), n); });
    std::printf("m=%lld: fp8 kernels: fp32 FMA %.1f GMAC/s", static_cast<long long>(m),
                macs / tfma * 1e-9);
    if (kernels::Fp8GemmBf16Available()) {
      const double tbf =
          BestSeconds(3, [&] { kernels::Fp8GemmBf16(rows, a8.data(), m, y.data(), n); });
      std::printf(", AVX512-BF16 %.1f GMAC/s (%s the contract's bits)", macs / tbf * 1e-9,
                  kernels::Fp8GemmBf16IsExact() ? "gives" : "does NOT give");
    }
    if (kernels::Fp8GemmAmxAvailable()) {
      const double tamx =
          BestSeconds(3, [&] { kernels::Fp8GemmAmx(rows, a8.data(), m, y.data(), n); });
      std::printf(", AMX-BF16 %.1f GMAC/s", macs / tamx * 1e-9);
    }
    std::printf("\n");
  }
  return 0;
}
