// fp32 forward-pass kernels: GEMM, norms, RoPE, SwiGLU, attention, and their references.
// The fast versions parallelise with OpenMP over work splits that depend only on the shapes, and
// their products (kernels/cpu/f32_gemm: one fma chain per output) do not depend on the split:
// results are the same for every thread count, and no BLAS library's kernel choice enters them.
#include "kernels/ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/vec_math.h"
#include "kernels/cpu/f32_gemm.h"

namespace qf::kernels {
namespace {

// Queries per attention tile: small enough to skip most of the masked upper triangle.
constexpr int64_t kAttnQueryTile = 64;
}  // namespace

void SetThreads(int threads) { omp_set_num_threads(std::max(1, threads)); }

void GemmNT(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
            int64_t ldy) {
  if (m <= kGemmNTGemvTokens) {  // decode: the GEMM would pack all of W for each call
    ForEachThreadRows(n, 64, kGemvRowMultiple, [&](int64_t r0, int64_t r1) {
      for (int64_t i = 0; i < m; ++i)
        vec::GemvRows(w + r0 * k, x + i * k, r1 - r0, k, y + i * ldy + r0);
    });
    return;
  }
  F32Gemm(BLayout::kNT, m, n, k, 1.0f, x, k, w, k, y, ldy);
}

void MatMulNT(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n,
              int64_t k) {
  GemmNT(x, w, y, m, n, k, n);
  if (bias) {
#pragma omp parallel for if (m * n > 65536)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) y[i * n + j] += bias[j];
  }
}

void ForEachThreadRows(int64_t n, int64_t min_rows, int64_t multiple,
                       const std::function<void(int64_t, int64_t)>& fn) {
  const bool nested = omp_in_parallel();
  const int threads = nested ? 1 : omp_get_max_threads();
  const int64_t per =
      (std::max(min_rows, (n + threads - 1) / threads) + multiple - 1) / multiple * multiple;
  const int64_t chunks = (n + per - 1) / per;
#pragma omp parallel for schedule(static) if (chunks > 1 && !nested)
  for (int64_t c = 0; c < chunks; ++c) fn(c * per, std::min(n, c * per + per));
}

void MatMulNTRef(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n,
                 int64_t k) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = bias ? bias[j] : 0.0;
      for (int64_t p = 0; p < k; ++p) acc += double(x[i * k + p]) * w[j * k + p];
      y[i * n + j] = float(acc);
    }
}

void RmsNorm(const float* x, const float* weight, float* out, int64_t m, int64_t d, float eps) {
#pragma omp parallel for if (m > 16)
  for (int64_t i = 0; i < m; ++i) {
    const float* xr = x + i * d;
    float ss = 0.0f;
    for (int64_t j = 0; j < d; ++j) ss += xr[j] * xr[j];
    const float inv = 1.0f / std::sqrt(ss / float(d) + eps);
    float* o = out + i * d;
    for (int64_t j = 0; j < d; ++j) o[j] = xr[j] * inv * weight[j];
  }
}

namespace {

// Rotates each pair (j, j + head_dim/2) of every head by the position's angle θ (kInverse: by
// −θ, the transpose, which is RoPE's backward pass).
template <bool kInverse>
void RotatePairs(float* x, int64_t m, int64_t heads, int64_t head_dim, int64_t pos0,
                 const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for if (m > 16)
  for (int64_t i = 0; i < m; ++i) {
    const float* c = cos + (pos0 + i) * half;
    const float* s = sin + (pos0 + i) * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (i * heads + h) * head_dim;
      for (int64_t j = 0; j < half; ++j) {
        const float a = v[j], b = v[j + half];
        if constexpr (kInverse) {
          v[j] = a * c[j] + b * s[j];
          v[j + half] = b * c[j] - a * s[j];
        } else {
          v[j] = a * c[j] - b * s[j];
          v[j + half] = b * c[j] + a * s[j];
        }
      }
    }
  }
}

}  // namespace

void Rope(float* x, int64_t m, int64_t heads, int64_t head_dim, int64_t pos0, const float* cos,
          const float* sin) {
  RotatePairs<false>(x, m, heads, head_dim, pos0, cos, sin);
}

void RopeInverse(float* x, int64_t m, int64_t heads, int64_t head_dim, int64_t pos0,
                 const float* cos, const float* sin) {
  RotatePairs<true>(x, m, heads, head_dim, pos0, cos, sin);
}

void SiluMul(float* gate, const float* up, int64_t m, int64_t f) {
#pragma omp parallel for if (m * f > 65536)
  for (int64_t i = 0; i < m; ++i) vec::SiluMulVec(gate + i * f, up + i * f, f);
}

namespace {

// Softmax over row[0, len) in place, with entries at index >= len treated as masked.
void SoftmaxRow(float* row, int64_t begin, int64_t len) {
  const float mx = vec::MaxValue(row + begin, len - begin);
  const float inv = float(1.0 / vec::ExpShiftSum(row + begin, row + begin, len - begin, mx));
  for (int64_t j = 0; j < begin; ++j) row[j] = 0.0f;
  for (int64_t j = begin; j < len; ++j) row[j] *= inv;
}

}  // namespace

void Attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t m,
               int64_t pos0, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window) {
  const int64_t group = heads / kv_heads;
  const int64_t q_stride = heads * head_dim, kv_stride = kv_heads * head_dim;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const int64_t tiles = (m + kAttnQueryTile - 1) / kAttnQueryTile;
#pragma omp parallel
  {
    std::vector<float> scores;
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t r0 = t * kAttnQueryTile, r1 = std::min(m, r0 + kAttnQueryTile);
        const int64_t rows = r1 - r0;
        const int64_t keys = pos0 + r1;  // keys visible to the last query of the tile
        const int64_t first = window > 0 ? std::max<int64_t>(0, pos0 + r0 - window + 1) : 0;
        const int64_t span = keys - first;
        scores.resize(size_t(rows * span));
        const float* qh = q + r0 * q_stride + h * head_dim;
        const float* kh = k_cache + first * kv_stride + (h / group) * head_dim;
        const float* vh = v_cache + first * kv_stride + (h / group) * head_dim;
        if (rows == 1) {  // one query (decoding): dot products, no GEMM to pack for
          float* row = scores.data();
          vec::DotKeys(qh, kh, kv_stride, span, head_dim, scale, row);
          SoftmaxRow(row, 0, span);  // span = the query's visible keys exactly
          vec::WeightedRows(row, vh, kv_stride, span, head_dim, out + r0 * q_stride + h * head_dim);
          continue;
        }
        F32Gemm(BLayout::kNT, rows, span, head_dim, scale, qh, q_stride, kh, kv_stride,
                scores.data(), span);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t pos = pos0 + r0 + r;
          const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) - first : 0;
          float* row = scores.data() + r * span;
          SoftmaxRow(row, lo, pos + 1 - first);
          for (int64_t j = pos + 1 - first; j < span; ++j) row[j] = 0.0f;
        }
        F32Gemm(BLayout::kNN, rows, head_dim, span, 1.0f, scores.data(), span, vh, kv_stride,
                out + r0 * q_stride + h * head_dim, q_stride);
      }
    }
  }
}

void AttentionRef(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t m,
                  int64_t pos0, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window) {
  const int64_t group = heads / kv_heads;
  const int64_t q_stride = heads * head_dim, kv_stride = kv_heads * head_dim;
  std::vector<double> p;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t pos = pos0 + i;
    const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
    for (int64_t h = 0; h < heads; ++h) {
      const float* qv = q + i * q_stride + h * head_dim;
      const int64_t kvh = h / group;
      p.assign(size_t(pos + 1), 0.0);
      double mx = -1e300;
      for (int64_t j = first; j <= pos; ++j) {
        double d = 0;
        for (int64_t c = 0; c < head_dim; ++c)
          d += double(qv[c]) * k_cache[j * kv_stride + kvh * head_dim + c];
        p[j] = d / std::sqrt(double(head_dim));
        mx = std::max(mx, p[j]);
      }
      double sum = 0;
      for (int64_t j = first; j <= pos; ++j) sum += (p[j] = std::exp(p[j] - mx));
      for (int64_t c = 0; c < head_dim; ++c) {
        double acc = 0;
        for (int64_t j = first; j <= pos; ++j)
          acc += p[j] * v_cache[j * kv_stride + kvh * head_dim + c];
        out[i * q_stride + h * head_dim + c] = float(acc / sum);
      }
    }
  }
}

double LogSumExp(const float* x, int64_t n) {
  const float mx = vec::MaxValue(x, n);
  return double(mx) + std::log(vec::ExpShiftSum(x, nullptr, n, mx));
}

}  // namespace qf::kernels
