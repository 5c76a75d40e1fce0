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

void RmsNormWeightBackward(const float* x, const float* dy, float* dweight, int64_t m, int64_t d,
                           float eps) {
  std::vector<double> r(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) {
    const float* xr = x + i * d;
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += double(xr[j]) * xr[j];
    r[size_t(i)] = 1.0 / std::sqrt(ss / double(d) + double(eps));
  }
  // Each column's sum runs over the rows in order, on one thread.
#pragma omp parallel for if (m * d > 65536)
  for (int64_t j = 0; j < d; ++j) {
    double acc = 0;
    for (int64_t i = 0; i < m; ++i) acc += double(dy[i * d + j]) * x[i * d + j] * r[size_t(i)];
    dweight[j] = float(double(dweight[j]) + acc);
  }
}

void SiluMulBackward(const float* gate, const float* up, const float* dh, float* dgate, float* dup,
                     int64_t m, int64_t f) {
  const int64_t n = m * f;
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float a = gate[i];
    const float sg = 1.0f / (1.0f + std::exp(-a));
    dup[i] = dh[i] * a * sg;
    dgate[i] = dh[i] * up[i] * sg * (1.0f + a * (1.0f - sg));
  }
}

void AttentionBackward(const float* q, const float* k, const float* v, const float* dout, float* dq,
                       float* dk, float* dv, int64_t t, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, int64_t window) {
  using kernels::BLayout;
  const int64_t D = head_dim, group = heads / kv_heads;
  const int64_t qs = heads * D, ks = kv_heads * D, td = t * D;
  const float scale = 1.0f / std::sqrt(float(D));
  // Each query head's share of dk and dv, summed per KV head in head order afterwards.
  std::vector<float> dk_h(static_cast<size_t>(heads * td)), dv_h(dk_h.size());
  auto gather = [&](const float* src, int64_t stride, int64_t col, float* dst) {
    for (int64_t i = 0; i < t; ++i) std::copy_n(src + i * stride + col, D, dst + i * D);
  };
  auto transpose = [&](const float* a, float* at) {
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j < t; ++j) at[j * t + i] = a[i * t + j];
  };
#pragma omp parallel
  {
    std::vector<float> qh(static_cast<size_t>(td)), kh(qh.size()), vh(qh.size()), doh(qh.size()),
        dqh(qh.size()), p(static_cast<size_t>(t * t)), dp(p.size()), pt(p.size());
    // One head per iteration; the products run serially inside (F32Gemm in a parallel region),
    // so each head's result is the same on any thread.
#pragma omp for schedule(static, 1)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kvh = h / group;
      gather(q, qs, h * D, qh.data());
      gather(k, ks, kvh * D, kh.data());
      gather(v, ks, kvh * D, vh.data());
      gather(dout, qs, h * D, doh.data());
      // P = softmax(scale · Q Kᵀ) over each query's visible keys, 0 elsewhere.
      kernels::F32Gemm(BLayout::kNT, t, t, D, scale, qh.data(), D, kh.data(), D, p.data(), t);
      kernels::F32Gemm(BLayout::kNT, t, t, D, 1.0f, doh.data(), D, vh.data(), D, dp.data(), t);
      for (int64_t i = 0; i < t; ++i) {
        const int64_t first = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
        const int64_t n = i + 1 - first;
        float* pr = p.data() + i * t;
        float* gr = dp.data() + i * t;
        const float mx = vec::MaxValue(pr + first, n);
        const float inv = float(1.0 / vec::ExpShiftSum(pr + first, pr + first, n, mx));
        double delta = 0;
        for (int64_t j = first; j <= i; ++j) {
          pr[j] *= inv;
          delta += double(pr[j]) * gr[j];
        }
        // dS = P ⊙ (dP − Σ_j P dP), the softmax's backward; masked entries 0.
        for (int64_t j = first; j <= i; ++j) gr[j] = pr[j] * (gr[j] - float(delta));
        std::fill(pr, pr + first, 0.0f);
        std::fill(pr + i + 1, pr + t, 0.0f);
        std::fill(gr, gr + first, 0.0f);
        std::fill(gr + i + 1, gr + t, 0.0f);
      }
      // dQ = scale · dS K, dK = scale · dSᵀ Q, dV = Pᵀ dO.
      kernels::F32Gemm(BLayout::kNN, t, D, t, scale, dp.data(), t, kh.data(), D, dqh.data(), D);
      for (int64_t i = 0; i < t; ++i) std::copy_n(dqh.data() + i * D, D, dq + i * qs + h * D);
      transpose(dp.data(), pt.data());
      kernels::F32Gemm(BLayout::kNN, t, D, t, scale, pt.data(), t, qh.data(), D,
                       dk_h.data() + h * td, D);
      transpose(p.data(), pt.data());
      kernels::F32Gemm(BLayout::kNN, t, D, t, 1.0f, pt.data(), t, doh.data(), D,
                       dv_h.data() + h * td, D);
    }
  }
  for (int64_t kvh = 0; kvh < kv_heads; ++kvh)
    for (int64_t i = 0; i < t; ++i)
      for (int64_t c = 0; c < D; ++c) {
        float sk = 0, sv = 0;
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
          sk += dk_h[size_t(h * td + i * D + c)];
          sv += dv_h[size_t(h * td + i * D + c)];
        }
        dk[i * ks + kvh * D + c] = sk;
        dv[i * ks + kvh * D + c] = sv;
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
