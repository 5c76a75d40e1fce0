// GGUF metadata -> ModelConfig, and Model::LoadGguf: the inverse of pipeline/gguf_convert.cc (and
// of llama.cpp's converter), with ggml block weights left in the file mapping (see gguf_model.h).
#include "model/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "core/dtype.h"
#include "core/memory.h"
#include "formats/ggml_blocks.h"
#include "io/safetensors.h"
#include "kernels/qgemm.h"
#include "model/model.h"

namespace qf::model {
namespace {

using io::GgmlType;
using io::GgufFile;
using io::GgufTensorInfo;

// An optional integer key: fallback when absent, an Error when of another type or < 0.
Result<int64_t> OptInt(const GgufFile& f, const std::string& key, int64_t fallback) {
  if (f.Find(key) == nullptr) return fallback;
  QF_ASSIGN(int64_t v, f.GetInt(key));
  if (v < 0) return Err("{}: key '{}' must be non-negative, got {}", f.path().string(), key, v);
  return v;
}

Result<int64_t> ReqInt(const GgufFile& f, const std::string& key) {
  QF_ASSIGN(int64_t v, f.GetInt(key));
  if (v <= 0) return Err("{}: key '{}' must be positive, got {}", f.path().string(), key, v);
  return v;
}

Result<double> OptFloat(const GgufFile& f, const std::string& key, double fallback) {
  if (f.Find(key) == nullptr) return fallback;
  return f.GetFloat(key);
}

std::string RunnableTypes() {
  std::string s = "F32, F16, BF16";
  for (const GgmlBlockType& t : GgmlBlockTypes()) {
    if (!t.activation_only) s += fmt::format(", {}", t.name);
  }
  return s;
}

// File row r of each head (ggml's interleaved RoPE pairs 2i, 2i+1) holds Hugging Face row
// s = i + (r % 2) * head/2 (rotate-half pairs i, i + head/2): the inverse of
// FillGgufFloatTensor's permutation. Rows are `row_bytes` wide and independent (whole blocks).
std::vector<std::byte> UnpermuteRows(const std::byte* in, int64_t rows, size_t row_bytes,
                                     int64_t heads) {
  std::vector<std::byte> out(static_cast<size_t>(rows) * row_bytes);
  const int64_t head = rows / heads;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t hd = r / head, rem = r % head;
    const int64_t s = hd * head + (rem % 2) * (head / 2) + rem / 2;
    std::memcpy(out.data() + size_t(s) * row_bytes, in + size_t(r) * row_bytes, row_bytes);
  }
  return out;
}

// Reads the tensors of one GGUF file, remembering which were used.
class GgufReader {
 public:
  explicit GgufReader(std::shared_ptr<const GgufFile> f) : f_(std::move(f)) {}

  const GgufFile& file() const { return *f_; }
  std::string where() const { return f_->path().string(); }

  Result<const GgufTensorInfo*> Find(const std::string& name, const std::vector<int64_t>& shape) {
    const GgufTensorInfo* t = f_->FindTensor(name);
    if (!t) return Err("{}: missing tensor '{}'", where(), name);
    if (t->shape != shape) {
      return Err("{}: tensor '{}' has shape {}, expected {}", where(), name,
                 io::ShapeString(t->shape), io::ShapeString(shape));
    }
    used_.insert(name);
    return t;
  }

  // Any runnable type as fp32 (block types decoded), checked finite; rows unpermuted for
  // permute_heads > 0 (1-D tensors are rows of one value).
  template <class Vec = std::vector<float>>
  Result<Vec> ReadF32(const std::string& name, const std::vector<int64_t>& shape,
                      int64_t permute_heads = 0) {
    QF_ASSIGN(const GgufTensorInfo* t, Find(name, shape));
    const int64_t n = t->numel();
    const int64_t cols = shape.size() >= 2 ? shape.back() : 1;
    const int64_t rows = n / std::max<int64_t>(cols, 1);
    Vec out(static_cast<size_t>(n));
    if (const auto dt = FloatDType(t->type)) {
      if (!ConvertToF32(*dt, t->data.data(), size_t(n), out.data()))
        return Err("{}: tensor '{}': cannot convert {} to f32", where(), name,
                   io::Info(t->type).name);
    } else {
      QF_ASSIGN(const GgmlBlockType* bt, BlockType(*t));
      QF_TRY(DequantizeRowsGgml(*bt, t->data.data(), rows, cols, out.data()));
    }
    const auto bad =
        std::find_if(out.begin(), out.end(), [](float v) { return !std::isfinite(v); });
    if (bad != out.end()) {
      return Err("{}: tensor '{}' has a non-finite value ({}) at flat index {}", where(), name,
                 *bad, bad - out.begin());
    }
    if (permute_heads > 0) {
      std::vector<std::byte> p = UnpermuteRows(reinterpret_cast<const std::byte*>(out.data()), rows,
                                               size_t(cols) * sizeof(float), permute_heads);
      std::memcpy(out.data(), p.data(), p.size());
    }
    return out;
  }

  // A linear [n, k]: fp32 for float types, else ggml blocks in the mapping (or, permuted, in
  // an owned copy).
  Result<Linear> ReadLinear(const std::string& weight, const std::string* bias, int64_t n,
                            int64_t k, int64_t permute_heads) {
    Linear lin;
    lin.n = n;
    lin.k = k;
    QF_ASSIGN(const GgufTensorInfo* t, Find(weight, {n, k}));
    if (FloatDType(t->type)) {
      QF_ASSIGN(lin.weight, ReadF32<AlignedVector<float>>(weight, {n, k}, permute_heads));
    } else {
      QF_ASSIGN(const GgmlBlockType* bt, BlockType(*t));
      auto g = std::make_shared<GgmlTensor>();
      g->type = bt;
      g->rows = n;
      g->cols = k;
      g->row_bytes = size_t(k / bt->block) * bt->block_bytes;
      if (t->data.size() != size_t(n) * g->row_bytes)
        return Err("{}: tensor '{}' has {} bytes, expected {}", where(), weight, t->data.size(),
                   size_t(n) * g->row_bytes);
      if (permute_heads > 0) {
        auto owned = std::make_shared<const std::vector<std::byte>>(
            UnpermuteRows(t->data.data(), n, g->row_bytes, permute_heads));
        g->data = owned->data();
        g->owner = owned;
      } else {
        g->data = t->data.data();
        g->owner = f_;
      }
      // The GEMV's compute layout where it has one (Q4_0, Q4_K: 16 rows interleaved).
      *g = kernels::ForKernels(std::move(*g));
      lin.ggml = std::move(g);
    }
    if (bias) {
      QF_ASSIGN(lin.bias, ReadF32(*bias, {n}, permute_heads));
    }
    return lin;
  }

  // The first tensor no reader asked for, or null.
  const GgufTensorInfo* Unused() const {
    for (const GgufTensorInfo& t : f_->tensors()) {
      if (!used_.count(t.name)) return &t;
    }
    return nullptr;
  }
  void MarkUsed(const std::string& name) { used_.insert(name); }

 private:
  Result<const GgmlBlockType*> BlockType(const GgufTensorInfo& t) const {
    const GgmlBlockType* bt = FindGgmlBlockType(int(t.type));
    if (bt == nullptr || bt->activation_only || bt->decode == nullptr) {
      return Err("{}: tensor '{}' has ggml type {}, which qforge cannot run (supported: {})",
                 where(), t.name, io::Info(t.type).name, RunnableTypes());
    }
    if (t.shape.empty() || t.shape.back() % bt->block != 0)
      return Err("{}: tensor '{}': rows are not whole {} blocks", where(), t.name, bt->name);
    return bt;
  }

  std::shared_ptr<const GgufFile> f_;
  std::set<std::string> used_;
};

Result<RopeScaling> GgufRopeScaling(const GgufFile& f, const std::string& arch,
                                    const ModelConfig& c) {
  RopeScaling rs;
  const std::string src = f.path().string();
  std::string type = "none";
  if (f.Find(arch + ".rope.scaling.type")) {
    QF_ASSIGN(type, f.GetString(arch + ".rope.scaling.type"));
  }
  double factor = 0;
  QF_ASSIGN(factor, OptFloat(f, arch + ".rope.scaling.factor", 0.0));
  if (type == "none" && f.Find(arch + ".rope.scale_linear")) {  // older files
    QF_ASSIGN(factor, f.GetFloat(arch + ".rope.scale_linear"));
    type = factor != 1.0 ? "linear" : "none";
  }
  if (type == "linear") {
    if (!(factor >= 1.0))
      return Err("{}: key '{}.rope.scaling.factor' must be >= 1 for linear scaling", src, arch);
    rs.type = RopeScaling::Type::kLinear;
    rs.factor = factor;
  } else if (type != "none") {
    return Err(
        "{}: unsupported rope scaling type '{}' (supported: none, linear, and "
        "rope_freqs.weight)",
        src, type);
  }
  if (const GgufTensorInfo* t = f.FindTensor("rope_freqs.weight")) {
    if (rs.type != RopeScaling::Type::kNone)
      return Err("{}: both rope scaling type '{}' and rope_freqs.weight", src, type);
    const int64_t half = c.head_dim / 2;
    if (t->type != GgmlType::kF32 || t->shape != std::vector<int64_t>{half})
      return Err("{}: tensor 'rope_freqs.weight' must be f32 [{}], got {} {}", src, half,
                 io::Info(t->type).name, io::ShapeString(t->shape));
    rs.type = RopeScaling::Type::kFactors;
    rs.freq_factors.resize(static_cast<size_t>(half));
    std::memcpy(rs.freq_factors.data(), t->data.data(), size_t(half) * sizeof(float));
    for (float v : rs.freq_factors) {
      if (!(v > 0) || !std::isfinite(v))
        return Err("{}: tensor 'rope_freqs.weight' has a factor {} (expected > 0)", src, v);
    }
  }
  return rs;
}

}  // namespace

bool IsGgufFile(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  if (path.extension() == ".gguf") return true;
  char magic[4] = {};
  std::ifstream in(path, std::ios::binary);
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

Result<ModelConfig> GgufModelConfig(const GgufFile& f) {
  const std::string src = f.path().string();
  QF_ASSIGN(const std::string arch, f.GetString("general.architecture"));
  ModelConfig c;
  c.family = FindFamilyByGgufArch(arch);
  if (!c.family) {
    return Err("{}: general.architecture '{}' is not supported (supported: {})", src, arch,
               SupportedGgufArchitectures());
  }
  const std::string p = arch + ".";
  QF_ASSIGN(c.layers, ReqInt(f, p + "block_count"));
  QF_ASSIGN(c.hidden, ReqInt(f, p + "embedding_length"));
  QF_ASSIGN(c.intermediate, ReqInt(f, p + "feed_forward_length"));
  QF_ASSIGN(c.heads, ReqInt(f, p + "attention.head_count"));
  QF_ASSIGN(c.kv_heads, OptInt(f, p + "attention.head_count_kv", c.heads));
  if (c.kv_heads == 0 || c.heads % c.kv_heads != 0) {
    return Err("{}: attention.head_count {} is not a multiple of attention.head_count_kv {}", src,
               c.heads, c.kv_heads);
  }
  QF_ASSIGN(const int64_t experts, OptInt(f, p + "expert_count", 0));
  if (experts > 0)
    return Err("{}: mixture-of-experts models ({}expert_count {}) are not supported", src, p,
               experts);
  QF_ASSIGN(c.head_dim, OptInt(f, p + "attention.key_length", 0));
  if (c.head_dim == 0) {
    if (c.hidden % c.heads != 0)
      return Err(
          "{}: embedding_length {} is not divisible by head_count {} and there is no "
          "attention.key_length",
          src, c.hidden, c.heads);
    c.head_dim = c.hidden / c.heads;
  }
  if (c.head_dim % 2 != 0) return Err("{}: head size {} must be even for RoPE", src, c.head_dim);
  QF_ASSIGN(const int64_t value_length, OptInt(f, p + "attention.value_length", c.head_dim));
  if (value_length != c.head_dim)
    return Err("{}: attention.value_length {} differs from the key length {}", src, value_length,
               c.head_dim);
  QF_ASSIGN(const int64_t rot, OptInt(f, p + "rope.dimension_count", c.head_dim));
  if (rot != c.head_dim)
    return Err(
        "{}: rope.dimension_count {} differs from the head size {} (partial RoPE is not "
        "supported)",
        src, rot, c.head_dim);
  QF_ASSIGN(c.max_position, ReqInt(f, p + "context_length"));
  QF_ASSIGN(c.rms_eps, f.GetFloat(p + "attention.layer_norm_rms_epsilon"));
  QF_ASSIGN(c.rope_theta, OptFloat(f, p + "rope.freq_base", 10000.0));
  if (!(c.rms_eps > 0) || !(c.rope_theta > 0))
    return Err("{}: layer_norm_rms_epsilon and rope.freq_base must be positive", src);
  QF_ASSIGN(c.rope_scaling, GgufRopeScaling(f, arch, c));

  const TensorNames& nm = GgufTensorNames();
  const GgufTensorInfo* embd = f.FindTensor(nm.embed);
  if (!embd) return Err("{}: missing tensor '{}'", src, nm.embed);
  if (embd->shape.size() != 2 || embd->shape[1] != c.hidden)
    return Err("{}: tensor '{}' has shape {}, expected [vocab, {}]", src, nm.embed,
               io::ShapeString(embd->shape), c.hidden);
  c.vocab_size = embd->shape[0];
  if (c.vocab_size <= 0) return Err("{}: tensor '{}' has no rows", src, nm.embed);
  QF_TRY(CheckDimensions(c, src));
  QF_ASSIGN(const int64_t n_vocab, OptInt(f, p + "vocab_size", c.vocab_size));
  if (n_vocab != c.vocab_size)
    return Err("{}: {}vocab_size {} differs from the {} rows of '{}'", src, p, n_vocab,
               c.vocab_size, nm.embed);
  if (const io::GgufValue* tokens = f.Find("tokenizer.ggml.tokens")) {
    if (int64_t(tokens->array_size()) != c.vocab_size)
      return Err("{}: tokenizer.ggml.tokens has {} tokens for the {} rows of '{}'", src,
                 tokens->array_size(), c.vocab_size, nm.embed);
  }
  c.tie_embeddings = f.FindTensor(nm.lm_head) == nullptr;
  c.qkv_bias = c.family->qkv_bias || f.FindTensor(LayerTensorName(nm.q_bias, 0)) != nullptr;
  c.sliding_window = 0;  // llama.cpp attends to the whole context for these architectures
  QF_ASSIGN(c.bos_id, OptInt(f, "tokenizer.ggml.bos_token_id", -1));
  QF_ASSIGN(c.eos_id, OptInt(f, "tokenizer.ggml.eos_token_id", -1));
  return c;
}

Result<Model> Model::LoadGguf(const std::filesystem::path& file) {
  QF_ASSIGN(GgufFile opened, GgufFile::Open(file));
  auto f = std::make_shared<const GgufFile>(std::move(opened));
  Model m;
  m.path_ = file;
  m.file_bytes_ = f->file_size();
  QF_ASSIGN(m.config_, GgufModelConfig(*f));
  const ModelConfig& c = m.config_;
  const TensorNames& nm = GgufTensorNames();
  GgufReader r(f);
  if (c.rope_scaling.type == RopeScaling::Type::kFactors) r.MarkUsed("rope_freqs.weight");

  // q/k rows in ggml's interleaved RoPE order (convert_hf_to_gguf.py's LlamaModel).
  const bool permuted = c.family->gguf_llama_layout;
  QF_ASSIGN(m.embed_, r.ReadF32(nm.embed, {c.vocab_size, c.hidden}));
  QF_ASSIGN(m.final_norm_, r.ReadF32(nm.final_norm, {c.hidden}));
  QF_ASSIGN(m.lm_head_, r.ReadLinear(c.tie_embeddings ? nm.embed : nm.lm_head, nullptr,
                                     c.vocab_size, c.hidden, 0));
  for (int64_t l = 0; l < c.layers; ++l) {
    auto name = [l](const char* pattern) { return LayerTensorName(pattern, l); };
    const std::string qb = name(nm.q_bias), kb = name(nm.k_bias), vb = name(nm.v_bias);
    const int64_t qh = permuted ? c.heads : 0, kh = permuted ? c.kv_heads : 0;
    Layer blk;
    QF_ASSIGN(blk.attn_norm, r.ReadF32(name(nm.attn_norm), {c.hidden}));
    QF_ASSIGN(blk.q, r.ReadLinear(name(nm.q), c.qkv_bias ? &qb : nullptr, c.q_dim(), c.hidden, qh));
    QF_ASSIGN(blk.k,
              r.ReadLinear(name(nm.k), c.qkv_bias ? &kb : nullptr, c.kv_dim(), c.hidden, kh));
    QF_ASSIGN(blk.v, r.ReadLinear(name(nm.v), c.qkv_bias ? &vb : nullptr, c.kv_dim(), c.hidden, 0));
    QF_ASSIGN(blk.o, r.ReadLinear(name(nm.o), nullptr, c.hidden, c.q_dim(), 0));
    if (c.family->qk_norm) {
      QF_ASSIGN(blk.q_norm, r.ReadF32(name(nm.q_norm), {c.head_dim}));
      QF_ASSIGN(blk.k_norm, r.ReadF32(name(nm.k_norm), {c.head_dim}));
    }
    QF_ASSIGN(blk.ffn_norm, r.ReadF32(name(nm.ffn_norm), {c.hidden}));
    QF_ASSIGN(blk.gate, r.ReadLinear(name(nm.gate), nullptr, c.intermediate, c.hidden, 0));
    QF_ASSIGN(blk.up, r.ReadLinear(name(nm.up), nullptr, c.intermediate, c.hidden, 0));
    QF_ASSIGN(blk.down, r.ReadLinear(name(nm.down), nullptr, c.hidden, c.intermediate, 0));
    m.layers_.push_back(std::move(blk));
  }
  if (const GgufTensorInfo* t = r.Unused()) {
    return Err("{}: tensor '{}' is not part of a '{}' model qforge runs", file.string(), t->name,
               c.family->gguf_arch);
  }
  for (const GgufTensorInfo& t : f->tensors()) {
    if (t.name != "rope_freqs.weight") m.params_ += t.numel();
  }
  return m;
}

}  // namespace qf::model
