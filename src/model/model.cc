// Loading Hugging Face checkpoints (fp32, or quantized linears of a compressed-tensors folder,
// with their input_activations quantization; GGUF files go to model/gguf_model.cc), and the
// forward pass and batched decoding step, both through the decoder walk (decoder_walk.h).
// Contract: Load() never trusts the file: names, shapes and finiteness are checked per tensor.
#include "model/model.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "io/compressed_tensors.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "kernels/qgemm.h"
#include "model/decoder_walk.h"
#include "model/gguf_model.h"

namespace qf::model {

void Linear::Apply(const float* x, float* y, int64_t m) const {
  const float* b = bias.empty() ? nullptr : bias.data();
  if (quant) {
    kernels::MatMulQuantNT(x, *quant, act, b, y, m);
    return;
  }
  if (act.enabled()) {
    // Per thread: Apply is const and runs concurrently (one window per thread in ppl/kld).
    // Grown on demand, never shrunk: at most M·max(K) floats per thread.
    thread_local std::vector<float> xq;
    if (xq.size() < static_cast<size_t>(m * k)) xq.resize(static_cast<size_t>(m * k));
    QuantizeActivations(act, x, xq.data(), m, k);
    x = xq.data();
  }
  if (ggml) {
    kernels::MatMulGgmlNT(x, *ggml, b, y, m);
  } else if (!bf16.empty()) {
    kernels::MatMulBf16NT(x, bf16.data(), b, y, m, n, k);
  } else {
    kernels::MatMulNT(x, weight.data(), b, y, m, n, k);
  }
}

namespace {

// ReadTensorF32 into a vector of type Vec (std::vector, or AlignedVector for weights).
template <class Vec>
Result<Vec> ReadTensorInto(const io::TensorStore& store, const std::string& name,
                           const std::vector<int64_t>& shape) {
  const io::TensorInfo* t = store.Find(name);
  if (!t) return Err("{}: missing tensor '{}'", store.files().front().string(), name);
  if (t->shape != shape)
    return Err("{}: tensor '{}' has shape {}, expected {}", t->file, name,
               io::ShapeString(t->shape), io::ShapeString(shape));
  if (!Info(t->dtype).is_float)
    return Err("{}: tensor '{}' has dtype {}, expected a float type", t->file, name,
               Name(t->dtype));
  const int64_t n = t->numel();
  Vec out(static_cast<size_t>(n));
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
    const auto bad =
        std::find_if(out.begin(), out.end(), [](float v) { return !std::isfinite(v); });
    return Err("{}: tensor '{}' has a non-finite value ({}) at flat index {}", t->file, name, *bad,
               bad - out.begin());
  }
  return out;
}

}  // namespace

Result<std::vector<float>> ReadTensorF32(const io::TensorStore& store, const std::string& name,
                                         const std::vector<int64_t>& shape) {
  return ReadTensorInto<std::vector<float>>(store, name, shape);
}

Result<AlignedVector<float>> ReadWeightF32(const io::TensorStore& store, const std::string& name,
                                           const std::vector<int64_t>& shape) {
  return ReadTensorInto<AlignedVector<float>>(store, name, shape);
}

namespace {

// The input quantization of linear `module`: its config group's input_activations (none when the
// module is ignored or in no group), with <module>.input_scale for static rows.
Result<ActQuant> ReadActQuant(const io::TensorStore& store, const io::CompressedTensorsConfig& qcfg,
                              const std::string& module) {
  ActQuant act;
  const io::CtSchemeGroup* g = qcfg.FindGroup(module);
  if (!g) return act;
  const std::string where = fmt::format("{}: {} ({})", qcfg.source, module, g->name);
  if (g->output_activations) {
    return Err("{}: output_activations quantization is not supported", where);
  }
  if (!g->input_activations) return act;
  Result<ActScheme> s = io::ActSchemeFromCt(*g->input_activations);
  if (!s.ok()) return s.error().Context(where);
  act.scheme = *s;
  if (!s->dynamic) {
    QF_ASSIGN(std::optional<float> scale, io::ReadInputScale(store, module));
    if (!scale) {
      return Err("{}: static {} activations need tensor '{}.input_scale', which is missing", where,
                 s->name, module);
    }
    act.scale = *scale;
  }
  return act;
}

// A linear's weight: quantized when the checkpoint's quantization_config covers it (kept as
// codes + parameters), else fp32.
Result<Linear> ReadLinear(const io::TensorStore& store, const io::CompressedTensorsConfig* qcfg,
                          const char* weight_pattern, const char* bias_pattern, int64_t layer,
                          int64_t n, int64_t k) {
  Linear lin;
  lin.n = n;
  lin.k = k;
  const std::string weight = LayerTensorName(weight_pattern, layer);
  if (qcfg) {
    const std::string module = weight.substr(0, weight.size() - std::string(".weight").size());
    QF_ASSIGN(std::optional<QuantizedTensor> q,
              io::ReadQuantizedLinear(store, *qcfg, module, n, k));
    QF_ASSIGN(lin.act, ReadActQuant(store, *qcfg, module));
    if (q)
      lin.quant =
          std::make_shared<const kernels::QuantMatrix>(kernels::ToKernelLayout(*q, lin.act));
  }
  if (!lin.quant) {
    QF_ASSIGN(lin.weight, ReadWeightF32(store, weight, {n, k}));
  }
  if (bias_pattern) {
    QF_ASSIGN(lin.bias, ReadTensorF32(store, LayerTensorName(bias_pattern, layer), {n}));
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
    } else if (rs.type == RopeScaling::Type::kFactors) {
      f /= double(rs.freq_factors[size_t(i)]);  // llama.cpp: theta / freq_factor
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

const char* WeightPattern(const TensorNames& nm, LinearId id) {
  switch (id) {
    case LinearId::kQ:
      return nm.q;
    case LinearId::kK:
      return nm.k;
    case LinearId::kV:
      return nm.v;
    case LinearId::kO:
      return nm.o;
    case LinearId::kGate:
      return nm.gate;
    case LinearId::kUp:
      return nm.up;
    case LinearId::kDown:
      return nm.down;
  }
  return nm.q;
}

const Linear& Layer::operator[](LinearId id) const {
  switch (id) {
    case LinearId::kQ:
      return q;
    case LinearId::kK:
      return k;
    case LinearId::kV:
      return v;
    case LinearId::kO:
      return o;
    case LinearId::kGate:
      return gate;
    case LinearId::kUp:
      return up;
    case LinearId::kDown:
      return down;
  }
  return q;
}

Linear& Layer::operator[](LinearId id) {
  return const_cast<Linear&>(static_cast<const Layer&>(*this)[id]);
}

Result<Layer> ReadLayer(const io::TensorStore& store, const ModelConfig& c, int64_t l,
                        const io::CompressedTensorsConfig* qc) {
  const TensorNames& nm = *c.family->names;
  const char* qb = c.qkv_bias ? nm.q_bias : nullptr;
  const char* kb = c.qkv_bias ? nm.k_bias : nullptr;
  const char* vb = c.qkv_bias ? nm.v_bias : nullptr;
  Layer blk;
  QF_ASSIGN(blk.attn_norm, ReadTensorF32(store, LayerTensorName(nm.attn_norm, l), {c.hidden}));
  QF_ASSIGN(blk.q, ReadLinear(store, qc, nm.q, qb, l, c.q_dim(), c.hidden));
  QF_ASSIGN(blk.k, ReadLinear(store, qc, nm.k, kb, l, c.kv_dim(), c.hidden));
  QF_ASSIGN(blk.v, ReadLinear(store, qc, nm.v, vb, l, c.kv_dim(), c.hidden));
  QF_ASSIGN(blk.o, ReadLinear(store, qc, nm.o, nullptr, l, c.hidden, c.q_dim()));
  if (c.family->qk_norm) {
    QF_ASSIGN(blk.q_norm, ReadTensorF32(store, LayerTensorName(nm.q_norm, l), {c.head_dim}));
    QF_ASSIGN(blk.k_norm, ReadTensorF32(store, LayerTensorName(nm.k_norm, l), {c.head_dim}));
  }
  QF_ASSIGN(blk.ffn_norm, ReadTensorF32(store, LayerTensorName(nm.ffn_norm, l), {c.hidden}));
  QF_ASSIGN(blk.gate, ReadLinear(store, qc, nm.gate, nullptr, l, c.intermediate, c.hidden));
  QF_ASSIGN(blk.up, ReadLinear(store, qc, nm.up, nullptr, l, c.intermediate, c.hidden));
  QF_ASSIGN(blk.down, ReadLinear(store, qc, nm.down, nullptr, l, c.hidden, c.intermediate));
  return blk;
}

Result<Model> Model::Load(const std::filesystem::path& dir) {
  if (IsGgufFile(dir)) return LoadGguf(dir);
  Model m;
  m.path_ = dir;
  QF_ASSIGN(m.config_, LoadHfConfig(dir));
  QF_ASSIGN(io::TensorStore store, io::TensorStore::Open(dir));
  const ModelConfig& c = m.config_;
  const TensorNames& nm = *c.family->names;
  m.file_bytes_ = store.total_bytes();

  QF_ASSIGN(m.embed_, ReadTensorF32(store, nm.embed, {c.vocab_size, c.hidden}));
  QF_ASSIGN(m.final_norm_, ReadTensorF32(store, nm.final_norm, {c.hidden}));
  m.lm_head_.n = c.vocab_size;
  m.lm_head_.k = c.hidden;
  if (c.tie_embeddings && !store.Find(nm.lm_head)) {
    m.lm_head_.weight.assign(m.embed_.begin(), m.embed_.end());
  } else {
    QF_ASSIGN(m.lm_head_.weight, ReadWeightF32(store, nm.lm_head, {c.vocab_size, c.hidden}));
  }
  QF_ASSIGN(std::optional<io::CompressedTensorsConfig> qcfg, io::LoadQuantizationConfig(dir));
  const io::CompressedTensorsConfig* qc = qcfg ? &*qcfg : nullptr;
  if (qc) {
    // A quantized checkpoint's unquantized lm_head (compressed-tensors leaves it out of the
    // scheme) is run as stored when that is bf16: half the bytes per decoded token, the same
    // values (the fp model keeps fp32: the calibrated methods' arithmetic is unchanged).
    const io::TensorInfo* t =
        store.Find(c.tie_embeddings && !store.Find(nm.lm_head) ? nm.embed : nm.lm_head);
    if (t && t->dtype == DType::kBF16) {
      m.lm_head_.bf16.resize(m.lm_head_.weight.size());
      for (size_t i = 0; i < m.lm_head_.bf16.size(); ++i)
        m.lm_head_.bf16[i] = uint16_t(BitsFromF32(m.lm_head_.weight[i]) >> 16);
      AlignedVector<float>().swap(m.lm_head_.weight);
    }
  }
  for (int64_t l = 0; l < c.layers; ++l) {
    QF_ASSIGN(Layer blk, ReadLayer(store, c, l, qc));
    m.layers_.push_back(std::move(blk));
  }
  m.params_ = io::LogicalParameterCount(store);
  return m;
}

void Model::UseFloatActivationGemm() {
  const auto to_float = [](Linear& lin) {
    if (lin.quant && lin.quant->layout == kernels::QuantMatrix::Layout::kInt8x16)
      lin.quant = std::make_shared<const kernels::QuantMatrix>(
          kernels::ToKernelLayout(kernels::FromKernelLayout(*lin.quant), ActQuant{}));
    if (lin.quant && !lin.quant->float_prefill) {
      kernels::QuantMatrix q = *lin.quant;
      q.float_prefill = true;
      lin.quant = std::make_shared<const kernels::QuantMatrix>(std::move(q));
    }
    if (lin.ggml && !lin.ggml->float_prefill) {
      GgmlTensor g = *lin.ggml;
      g.float_prefill = true;
      lin.ggml = std::make_shared<const GgmlTensor>(std::move(g));
    }
  };
  for (Layer& blk : layers_)
    for (LinearId id : kBlockLinears) to_float(blk[id]);
  to_float(lm_head_);
}

double FlopsPerToken(const ModelConfig& c, int64_t ctx) {
  const double per_layer_linear = double(c.hidden) * double(c.q_dim() + 2 * c.kv_dim()) +
                                  double(c.q_dim()) * double(c.hidden) +
                                  3.0 * double(c.hidden) * double(c.intermediate);
  const double linear =
      double(c.layers) * per_layer_linear + double(c.hidden) * double(c.vocab_size);
  const double attention = double(c.layers) * 2.0 * double(c.q_dim()) * double(ctx + 1) / 2.0;
  return 2.0 * (linear + attention);
}

void RopeTables(const ModelConfig& c, int64_t positions, std::vector<float>* cos,
                std::vector<float>* sin) {
  const std::vector<double> inv = InverseFrequencies(c);
  const int64_t half = c.head_dim / 2;
  cos->resize(size_t(positions * half));
  sin->resize(size_t(positions * half));
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      // HF computes the angle in fp32; match its rounding so logits agree to ~1e-6.
      const float angle = float(p) * float(inv[size_t(i)]);
      (*cos)[size_t(p * half + i)] = std::cos(angle);
      (*sin)[size_t(p * half + i)] = std::sin(angle);
    }
}

KVCache Model::NewCache(int64_t capacity) const {
  const ModelConfig& c = config_;
  KVCache kv;
  kv.capacity = capacity;
  kv.k.assign(size_t(c.layers), std::vector<float>(size_t(capacity * c.kv_dim())));
  kv.v.assign(size_t(c.layers), std::vector<float>(size_t(capacity * c.kv_dim())));
  RopeTables(c, capacity, &kv.cos, &kv.sin);
  return kv;
}

Status Model::Forward(std::span<const int32_t> tokens, KVCache& cache, float* logits,
                      bool all_logits) const {
  const ModelConfig& c = config_;
  const int64_t m = int64_t(tokens.size());
  if (m == 0) return Err("forward: no tokens");
  if (cache.len + m > cache.capacity)
    return Err("forward: {} tokens exceed the context of {} ({} already cached)", m, cache.capacity,
               cache.len);
  for (int32_t t : tokens)
    if (t < 0 || t >= c.vocab_size)
      return Err("forward: token id {} outside vocabulary of {}", t, c.vocab_size);

  const int64_t H = c.hidden, F = c.intermediate;
  const int64_t qd = c.q_dim();
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
  Embed(embed_, H, tokens, x.data());
  // One buffer for the three [M, H] stage inputs and the projections (see BlockBuffers).
  const BlockBuffers b{x.data(), h.data(), q.data(), att.data(),
                       h.data(), h.data(), g.data(), u.data()};
  const SeqKv seq{&cache, {}};
  WalkStack(c, layers_, b, m, {&seq, 1});
  cache.len += m;

  const int64_t rows = all_logits ? m : 1;
  WalkHead(c, final_norm_, &lm_head_, x.data() + (m - rows) * H, h.data(), rows, logits);
  return Status::Ok();
}

Status Model::ForwardBatchStep(std::span<const int32_t> tokens, std::vector<KVCache>& caches,
                               float* logits) const {
  const ModelConfig& c = config_;
  const int64_t B = int64_t(tokens.size());
  if (B == 0 || int64_t(caches.size()) != B)
    return Err("forward: {} tokens for {} caches", B, caches.size());
  const int64_t pos = caches[0].len;
  for (const KVCache& kv : caches)
    if (kv.len != pos || pos + 1 > kv.capacity)
      return Err("forward: batched caches out of step or full");
  for (int32_t t : tokens)
    if (t < 0 || t >= c.vocab_size)
      return Err("forward: token id {} outside vocabulary of {}", t, c.vocab_size);
  WalkScratch sc(c, B);
  Embed(embed_, c.hidden, tokens, sc.x.data());
  std::vector<SeqKv> seqs;
  for (KVCache& kv : caches) seqs.push_back({&kv, {}});
  WalkStack(c, layers_, sc.Buffers(), B, seqs);
  for (KVCache& kv : caches) kv.len = pos + 1;
  WalkHead(c, final_norm_, &lm_head_, sc.x.data(), sc.h.data(), B, logits);
  return Status::Ok();
}

}  // namespace qf::model
