// Loading Hugging Face checkpoints into fp32 and the shared decoder forward pass.
// Contract: Load() never trusts the file: names, shapes and finiteness are checked per tensor.
#include "model/model.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "io/safetensors.h"
#include "kernels/ops.h"
#include "kernels/qgemm.h"

namespace qf::model {

void Linear::Apply(const float* x, float* y, int64_t m) const {
  const float* b = bias.empty() ? nullptr : bias.data();
  if (quant) {
    kernels::MatMulDequantNT(x, *quant, b, y, m);
  } else {
    kernels::MatMulNT(x, weight.data(), b, y, m, n, k);
  }
}

namespace {

std::string ShapeString(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

Result<std::vector<float>> ReadTensorF32(const io::TensorStore& store, const std::string& name,
                                         const std::vector<int64_t>& shape) {
  const io::TensorInfo* t = store.Find(name);
  if (!t) return Err("{}: missing tensor '{}'", store.files().front().string(), name);
  if (t->shape != shape)
    return Err("{}: tensor '{}' has shape {}, expected {}", t->file, name, ShapeString(t->shape),
               ShapeString(shape));
  if (!Info(t->dtype).is_float)
    return Err("{}: tensor '{}' has dtype {}, expected a float type", t->file, name,
               Name(t->dtype));
  const int64_t n = t->numel();
  std::vector<float> out(static_cast<size_t>(n));
  const size_t elem = Info(t->dtype).bytes;
  constexpr int64_t kChunk = 1 << 16;
  bool finite = true;
#pragma omp parallel for reduction(&& : finite)
  for (int64_t c = 0; c < n; c += kChunk) {
    const int64_t len = std::min(kChunk, n - c);
    ConvertToF32(t->dtype, t->data.data() + c * elem, size_t(len), out.data() + c);
    for (int64_t i = 0; i < len; ++i) finite = finite && std::isfinite(out[c + i]);
  }
  if (!finite) {
    const auto bad = std::find_if(out.begin(), out.end(), [](float v) { return !std::isfinite(v); });
    return Err("{}: tensor '{}' has a non-finite value ({}) at flat index {}", t->file, name,
               *bad, bad - out.begin());
  }
  return out;
}

namespace {

Result<std::vector<float>> ReadF32(const io::TensorStore& store, const std::string& name,
                                   const std::vector<int64_t>& shape) {
  return ReadTensorF32(store, name, shape);
}

Result<Linear> ReadLinear(const io::TensorStore& store, const char* weight_pattern,
                          const char* bias_pattern, int64_t layer, int64_t n, int64_t k) {
  Linear lin;
  lin.n = n;
  lin.k = k;
  QF_ASSIGN(lin.weight, ReadF32(store, LayerTensorName(weight_pattern, layer), {n, k}));
  if (bias_pattern) {
    QF_ASSIGN(lin.bias, ReadF32(store, LayerTensorName(bias_pattern, layer), {n}));
  }
  return lin;
}

// Inverse RoPE frequencies for the config's scaling (HF conventions).
std::vector<double> InverseFrequencies(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  const RopeScaling& rs = c.rope_scaling;
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(c.rope_theta, double(2 * i) / double(c.head_dim));
    if (rs.type == RopeScaling::Type::kLinear) {
      f /= rs.factor;
    } else if (rs.type == RopeScaling::Type::kLlama3) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      const double low_wavelen = double(rs.original_max_position) / rs.low_freq_factor;
      const double high_wavelen = double(rs.original_max_position) / rs.high_freq_factor;
      if (wavelen > low_wavelen) {
        f /= rs.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (double(rs.original_max_position) / wavelen - rs.low_freq_factor) /
                              (rs.high_freq_factor - rs.low_freq_factor);
        f = (1.0 - smooth) * f / rs.factor + smooth * f;
      }
    }
    inv[size_t(i)] = f;
  }
  return inv;
}

}  // namespace

Result<Model> Model::Load(const std::filesystem::path& dir) {
  Model m;
  m.path_ = dir;
  QF_ASSIGN(m.config_, LoadHfConfig(dir));
  QF_ASSIGN(io::TensorStore store, io::TensorStore::Open(dir));
  const ModelConfig& c = m.config_;
  const TensorNames& nm = *c.family->names;
  m.file_bytes_ = store.total_bytes();

  QF_ASSIGN(m.embed_, ReadF32(store, nm.embed, {c.vocab_size, c.hidden}));
  QF_ASSIGN(m.final_norm_, ReadF32(store, nm.final_norm, {c.hidden}));
  m.lm_head_.n = c.vocab_size;
  m.lm_head_.k = c.hidden;
  if (c.tie_embeddings && !store.Find(nm.lm_head)) {
    m.lm_head_.weight = m.embed_;
  } else {
    QF_ASSIGN(m.lm_head_.weight, ReadF32(store, nm.lm_head, {c.vocab_size, c.hidden}));
  }
  const char* qb = c.qkv_bias ? nm.q_bias : nullptr;
  const char* kb = c.qkv_bias ? nm.k_bias : nullptr;
  const char* vb = c.qkv_bias ? nm.v_bias : nullptr;
  for (int64_t l = 0; l < c.layers; ++l) {
    Layer L;
    QF_ASSIGN(L.attn_norm, ReadF32(store, LayerTensorName(nm.attn_norm, l), {c.hidden}));
    QF_ASSIGN(L.q, ReadLinear(store, nm.q, qb, l, c.q_dim(), c.hidden));
    QF_ASSIGN(L.k, ReadLinear(store, nm.k, kb, l, c.kv_dim(), c.hidden));
    QF_ASSIGN(L.v, ReadLinear(store, nm.v, vb, l, c.kv_dim(), c.hidden));
    QF_ASSIGN(L.o, ReadLinear(store, nm.o, nullptr, l, c.hidden, c.q_dim()));
    if (c.family->qk_norm) {
      QF_ASSIGN(L.q_norm, ReadF32(store, LayerTensorName(nm.q_norm, l), {c.head_dim}));
      QF_ASSIGN(L.k_norm, ReadF32(store, LayerTensorName(nm.k_norm, l), {c.head_dim}));
    }
    QF_ASSIGN(L.ffn_norm, ReadF32(store, LayerTensorName(nm.ffn_norm, l), {c.hidden}));
    QF_ASSIGN(L.gate, ReadLinear(store, nm.gate, nullptr, l, c.intermediate, c.hidden));
    QF_ASSIGN(L.up, ReadLinear(store, nm.up, nullptr, l, c.intermediate, c.hidden));
    QF_ASSIGN(L.down, ReadLinear(store, nm.down, nullptr, l, c.hidden, c.intermediate));
    m.layers_.push_back(std::move(L));
  }
  for (const auto& t : store.tensors()) m.params_ += t.numel();
  return m;
}

double FlopsPerToken(const ModelConfig& c, int64_t ctx) {
  const double per_layer_linear =
      double(c.hidden) * double(c.q_dim() + 2 * c.kv_dim()) + double(c.q_dim()) * double(c.hidden) +
      3.0 * double(c.hidden) * double(c.intermediate);
  const double linear = double(c.layers) * per_layer_linear + double(c.hidden) * double(c.vocab_size);
  const double attention = double(c.layers) * 2.0 * double(c.q_dim()) * double(ctx + 1) / 2.0;
  return 2.0 * (linear + attention);
}

KVCache Model::NewCache(int64_t capacity) const {
  const ModelConfig& c = config_;
  KVCache kv;
  kv.capacity = capacity;
  kv.k.assign(size_t(c.layers), std::vector<float>(size_t(capacity * c.kv_dim())));
  kv.v.assign(size_t(c.layers), std::vector<float>(size_t(capacity * c.kv_dim())));
  const std::vector<double> inv = InverseFrequencies(c);
  const int64_t half = c.head_dim / 2;
  kv.cos.resize(size_t(capacity * half));
  kv.sin.resize(size_t(capacity * half));
  for (int64_t p = 0; p < capacity; ++p)
    for (int64_t i = 0; i < half; ++i) {
      // HF computes the angle in fp32; match its rounding so logits agree to ~1e-6.
      const float angle = float(p) * float(inv[size_t(i)]);
      kv.cos[size_t(p * half + i)] = std::cos(angle);
      kv.sin[size_t(p * half + i)] = std::sin(angle);
    }
  return kv;
}

Status Model::Forward(std::span<const int32_t> tokens, KVCache& cache, float* logits,
                      bool all_logits) const {
  const ModelConfig& c = config_;
  const int64_t m = int64_t(tokens.size());
  if (m == 0) return Err("forward: no tokens");
  if (cache.len + m > cache.capacity)
    return Err("forward: {} tokens exceed the context of {} ({} already cached)", m,
               cache.capacity, cache.len);
  for (int32_t t : tokens)
    if (t < 0 || t >= c.vocab_size) return Err("forward: token id {} outside vocabulary of {}", t, c.vocab_size);

  const int64_t H = c.hidden, F = c.intermediate, D = c.head_dim;
  const int64_t qd = c.q_dim(), kvd = c.kv_dim(), pos0 = cache.len;
  auto grow = [](std::vector<float>& v, int64_t n) -> std::vector<float>& {
    if (int64_t(v.size()) < n) v.resize(size_t(n));
    return v;
  };
  std::vector<float>& x = grow(cache.x, m * H);
  std::vector<float>& h = grow(cache.h, m * H);
  std::vector<float>& q = grow(cache.q, m * qd);
  std::vector<float>& att = grow(cache.att, m * qd);
  std::vector<float>& g = grow(cache.g, m * F);
  std::vector<float>& u = grow(cache.u, m * F);
  for (int64_t i = 0; i < m; ++i)
    std::copy_n(embed_.data() + int64_t(tokens[size_t(i)]) * H, H, x.data() + i * H);

  const float eps = float(c.rms_eps);
  for (const Layer& L : layers_) {
    const size_t li = size_t(&L - layers_.data());
    float* kc = cache.k[li].data() + pos0 * kvd;
    float* vc = cache.v[li].data() + pos0 * kvd;
    kernels::RmsNorm(x.data(), L.attn_norm.data(), h.data(), m, H, eps);
    L.q.Apply(h.data(), q.data(), m);
    L.k.Apply(h.data(), kc, m);
    L.v.Apply(h.data(), vc, m);
    if (!L.q_norm.empty()) {
      kernels::RmsNorm(q.data(), L.q_norm.data(), q.data(), m * c.heads, D, eps);
      kernels::RmsNorm(kc, L.k_norm.data(), kc, m * c.kv_heads, D, eps);
    }
    kernels::Rope(q.data(), m, c.heads, D, pos0, cache.cos.data(), cache.sin.data());
    kernels::Rope(kc, m, c.kv_heads, D, pos0, cache.cos.data(), cache.sin.data());
    kernels::Attention(q.data(), cache.k[li].data(), cache.v[li].data(), att.data(), m, pos0,
                       c.heads, c.kv_heads, D, c.sliding_window);
    L.o.Apply(att.data(), h.data(), m);
    for (int64_t i = 0; i < m * H; ++i) x[size_t(i)] += h[size_t(i)];

    kernels::RmsNorm(x.data(), L.ffn_norm.data(), h.data(), m, H, eps);
    L.gate.Apply(h.data(), g.data(), m);
    L.up.Apply(h.data(), u.data(), m);
    kernels::SiluMul(g.data(), u.data(), m, F);
    L.down.Apply(g.data(), h.data(), m);
    for (int64_t i = 0; i < m * H; ++i) x[size_t(i)] += h[size_t(i)];
  }
  cache.len += m;

  const int64_t rows = all_logits ? m : 1;
  const float* last = x.data() + (m - rows) * H;
  kernels::RmsNorm(last, final_norm_.data(), h.data(), rows, H, eps);
  lm_head_.Apply(h.data(), logits, rows);
  return Status::Ok();
}

}  // namespace qf::model
