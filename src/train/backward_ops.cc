// Backward passes of the forward ops (see backward_ops.h).
#include "train/backward_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/vec_math.h"
#include "kernels/cpu/f32_gemm.h"

namespace qf::train {

void RmsNormBackward(const float* x, const float* weight, const float* dy, float* dx, int64_t m,
                     int64_t d, float eps, bool accumulate) {
#pragma omp parallel for if (m > 16)
  for (int64_t i = 0; i < m; ++i) {
    const float* xr = x + i * d;
    const float* g = dy + i * d;
    double ss = 0, gx = 0;
    for (int64_t j = 0; j < d; ++j) {
      ss += double(xr[j]) * xr[j];
      gx += double(g[j]) * weight[j] * xr[j];
    }
    const double r = 1.0 / std::sqrt(ss / double(d) + double(eps));
    const double c = r * r * r * gx / double(d);
    float* o = dx + i * d;
    for (int64_t j = 0; j < d; ++j) {
      const float v = float(r * double(g[j]) * weight[j] - c * xr[j]);
      o[j] = accumulate ? o[j] + v : v;
    }
  }
}

void RopeBackward(float* dy, int64_t m, int64_t heads, int64_t head_dim, int64_t pos0,
                  const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for if (m > 16)
  for (int64_t i = 0; i < m; ++i) {
    const float* c = cos + (pos0 + i) * half;
    const float* s = sin + (pos0 + i) * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = dy + (i * heads + h) * head_dim;
      for (int64_t j = 0; j < half; ++j) {
        const float a = v[j], b = v[j + half];
        v[j] = a * c[j] + b * s[j];
        v[j + half] = b * c[j] - a * s[j];
      }
    }
  }
}

void SiluMulBackward(const float* gate, const float* up, const float* dh, float* dgate,
                     float* dup, int64_t m, int64_t f) {
  const int64_t n = m * f;
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float a = gate[i];
    const float sg = 1.0f / (1.0f + std::exp(-a));
    dup[i] = dh[i] * a * sg;
    dgate[i] = dh[i] * up[i] * sg * (1.0f + a * (1.0f - sg));
  }
}

void AttentionBackward(const float* q, const float* k, const float* v, const float* dout,
                       float* dq, float* dk, float* dv, int64_t t, int64_t heads,
                       int64_t kv_heads, int64_t head_dim, int64_t window) {
  const int64_t D = head_dim, group = heads / kv_heads;
  const int64_t qs = heads * D, ks = kv_heads * D;
  const float scale = 1.0f / std::sqrt(float(D));
  for (int64_t i = 0; i < t; ++i) std::fill_n(dk + i * ks, ks, 0.0f);
  for (int64_t i = 0; i < t; ++i) std::fill_n(dv + i * ks, ks, 0.0f);
  // One KV head per iteration: it owns its dk/dv columns, its query heads' dq columns.
#pragma omp parallel for schedule(static, 1)
  for (int64_t kvh = 0; kvh < kv_heads; ++kvh) {
    std::vector<float> p(static_cast<size_t>(t)), dp(static_cast<size_t>(t));
    const float* kh = k + kvh * D;
    const float* vh = v + kvh * D;
    float* dkh = dk + kvh * D;
    float* dvh = dv + kvh * D;
    for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
      for (int64_t i = 0; i < t; ++i) {
        const int64_t first = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
        const int64_t n = i + 1 - first;
        const float* qi = q + i * qs + h * D;
        const float* doi = dout + i * qs + h * D;
        float* s = p.data() + first;
        float* g = dp.data() + first;
        vec::DotKeys(qi, kh + first * ks, ks, n, D, scale, s);
        const float mx = vec::MaxValue(s, n);
        const double sum = vec::ExpShiftSum(s, s, n, mx);
        const float inv = float(1.0 / sum);
        for (int64_t j = 0; j < n; ++j) s[j] *= inv;
        vec::DotKeys(doi, vh + first * ks, ks, n, D, 1.0f, g);
        double delta = 0;
        for (int64_t j = 0; j < n; ++j) delta += double(s[j]) * g[j];
        for (int64_t j = 0; j < n; ++j) g[j] = s[j] * (g[j] - float(delta));
        float* dqi = dq + i * qs + h * D;
        vec::WeightedRows(g, kh + first * ks, ks, n, D, dqi);
        for (int64_t c = 0; c < D; ++c) dqi[c] *= scale;
        for (int64_t j = 0; j < n; ++j) {
          float* dkj = dkh + (first + j) * ks;
          float* dvj = dvh + (first + j) * ks;
          const float gs = g[j] * scale, pj = s[j];
          for (int64_t c = 0; c < D; ++c) dkj[c] += gs * qi[c];
          for (int64_t c = 0; c < D; ++c) dvj[c] += pj * doi[c];
        }
      }
    }
  }
}

void LinearBackward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                    int64_t m, int64_t n, int64_t k, bool accumulate_dx, float* dyt,
                    float* dw_tmp) {
  using kernels::BLayout;
  if (dx) {
    if (accumulate_dx) {
      kernels::F32Gemm(BLayout::kNN, m, k, n, 1.0f, dy, n, w, k, dw_tmp, k);
      const int64_t len = m * k;
#pragma omp parallel for if (len > 65536)
      for (int64_t i = 0; i < len; ++i) dx[i] += dw_tmp[i];
    } else {
      kernels::F32Gemm(BLayout::kNN, m, k, n, 1.0f, dy, n, w, k, dx, k);
    }
  }
  if (!dw) return;
  // dw += dyᵀ x: dy transposed to [n, m], then one product over the m rows.
#pragma omp parallel for if (m * n > 65536)
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) dyt[j * m + i] = dy[i * n + j];
  kernels::F32Gemm(BLayout::kNN, n, k, m, 1.0f, dyt, m, x, k, dw_tmp, k);
  const int64_t len = n * k;
#pragma omp parallel for if (len > 65536)
  for (int64_t i = 0; i < len; ++i) dw[i] += dw_tmp[i];
}

}  // namespace qf::train
