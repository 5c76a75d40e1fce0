// Folding the norms and rotating a checkpoint (see rotate.h).
#include "pipeline/rotate.h"

#include <unistd.h>

#include <chrono>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/dtype.h"
#include "core/mmap.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "methods/rotation.h"
#include "model/config.h"
#include "model/model.h"

namespace qf::pipeline {
namespace fs = std::filesystem;
using methods::Rotation;

namespace {

// What the rotation does to one tensor of the checkpoint.
enum class Role : uint8_t {
  kReads,    // a linear reading the stream after `norm` (norm folded in, rows rotated)
  kWrites,   // a linear writing the stream (columns rotated): down_proj
  kAttnOut,  // o_proj: writes the stream, and reads each head's values (heads with --heads)
  kValues,   // v_proj: reads the stream, and its head rows rotated with --heads
  kVBias,    // v_proj's bias, with --heads (its heads rotated; otherwise left as it is)
  kEmbed,    // embedding rows rotated
  kHead,     // lm_head: final norm folded, rows rotated
  kNorm,     // written as ones
};
struct Plan {
  Role role;
  std::string norm;  // kReads / kValues / kHead: the norm folded into its columns
};

std::vector<std::byte> Encode(std::span<const float> v, DType dtype) {
  std::vector<std::byte> b(v.size() * Info(dtype).bytes);
  ConvertFromF32(dtype, v.data(), v.size(), b.data());
  return b;
}

// config.json with tie_word_embeddings false (its other keys as they were).
Status WriteUntiedConfig(const fs::path& from, const fs::path& to) {
  QF_ASSIGN(const std::string text, ReadTextFile(from));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Err("{}: not a JSON object", from.string());
  j["tie_word_embeddings"] = false;
  QF_ASSIGN(AtomicFile f, AtomicFile::Create(to));
  QF_TRY(f.Write(j.dump(2) + "\n"));
  return f.Commit();
}

}  // namespace

std::string_view RotateName(const RotateOptions& opt) {
  return opt.heads ? "hadamard+heads" : "hadamard";
}

std::optional<RotateOptions> RotateFromName(std::string_view name, uint64_t seed) {
  for (const bool heads : {false, true}) {
    const RotateOptions opt{.heads = heads, .seed = seed};
    if (name == RotateName(opt)) return opt;
  }
  return std::nullopt;
}

Result<RotateReport> RotateModel(const fs::path& src, const fs::path& dst,
                                 const RotateOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  std::error_code ec;
  if (!fs::is_directory(src, ec))
    return Err("{}: rotation needs a model folder (config.json + *.safetensors)", src.string());
  QF_ASSIGN(const model::ModelConfig cfg, model::LoadHfConfig(src));
  QF_TRY(model::CheckUnquantized(src, "rotate"));
  QF_ASSIGN(const io::TensorStore store, io::TensorStore::Open(src));
  if (fs::exists(dst, ec) && fs::equivalent(src, dst, ec))
    return Err("{}: output folder must differ from the input", dst.string());
  const model::TensorNames& nm = *cfg.family->names;
  const int64_t H = cfg.hidden, D = cfg.head_dim;

  std::map<std::string, Plan> plan;
  plan[nm.embed] = {Role::kEmbed, ""};
  plan[nm.final_norm] = {Role::kNorm, ""};
  // Tied embeddings: lm_head is the embedding (as transformers ties them, whatever the files
  // hold), written as its own tensor with the final norm folded in.
  const bool tied = cfg.tie_embeddings;
  plan[nm.lm_head] = {Role::kHead, nm.final_norm};
  for (int64_t l = 0; l < cfg.layers; ++l) {
    auto name = [&](const char* pattern) { return model::LayerTensorName(pattern, l); };
    const std::string attn_norm = name(nm.attn_norm), ffn_norm = name(nm.ffn_norm);
    plan[attn_norm] = {Role::kNorm, ""};
    plan[ffn_norm] = {Role::kNorm, ""};
    plan[name(nm.q)] = {Role::kReads, attn_norm};
    plan[name(nm.k)] = {Role::kReads, attn_norm};
    plan[name(nm.v)] = {Role::kValues, attn_norm};
    if (opt.heads && nm.v_bias && store.Find(name(nm.v_bias)))
      plan[name(nm.v_bias)] = {Role::kVBias, ""};
    plan[name(nm.o)] = {Role::kAttnOut, ""};
    plan[name(nm.gate)] = {Role::kReads, ffn_norm};
    plan[name(nm.up)] = {Role::kReads, ffn_norm};
    plan[name(nm.down)] = {Role::kWrites, ""};
  }
  for (const auto& [name, p] : plan)
    if (!store.Find(name) && !(p.role == Role::kHead && tied))
      return Err("{}: missing tensor '{}'", src.string(), name);

  // 16-bit float sources keep the embedding and lm_head in their dtype (they are written as
  // they are, not quantized, by compressed-tensors); the linears to be quantized stay fp32.
  DType keep = store.Find(nm.embed)->dtype;
  if (keep != DType::kBF16 && keep != DType::kF16) keep = DType::kF32;

  const Rotation r(H, opt.seed);
  std::optional<Rotation> rh;
  if (opt.heads) rh.emplace(D, opt.seed + 1);

  fs::path tmp = dst;
  tmp += ".tmp-" + std::to_string(::getpid());
  QF_ASSIGN(ScratchFolder scratch, ScratchFolder::Create(tmp));
  QF_ASSIGN(io::TensorSpill spill, io::TensorSpill::Create(tmp));

  RotateReport rep;
  rep.untied = tied;
  std::map<std::string, const io::TensorInfo*> order;  // every tensor written, by name
  for (const io::TensorInfo& t : store.tensors()) order[t.name] = &t;
  if (tied) order[nm.lm_head] = nullptr;
  for (const auto& [name, info] : order) {
    const auto it = plan.find(name);
    if (it == plan.end()) {  // not touched by the rotation
      QF_TRY(spill.Add(name, info->dtype, info->shape, info->data));
      continue;
    }
    const Plan& p = it->second;
    const io::TensorInfo* t = info ? info : store.Find(nm.embed);  // tied lm_head: the embedding
    const std::vector<int64_t>& shape = t->shape;
    QF_ASSIGN(std::vector<float> w, model::ReadTensorF32(store, t->name, shape));
    DType out = DType::kF32;
    const int64_t rows = shape.empty() ? 0 : shape[0];
    const int64_t cols = shape.size() == 2 ? shape[1] : 1;
    switch (p.role) {
      case Role::kNorm:
        std::fill(w.begin(), w.end(), 1.0f);
        out = t->dtype;
        break;
      case Role::kEmbed:
      case Role::kHead:
      case Role::kReads:
      case Role::kValues: {
        if (shape.size() != 2 || cols != H)
          return Err("{}: tensor '{}' has shape {}, expected [*, {}]", t->file, name,
                     io::ShapeString(shape), H);
        if (!p.norm.empty()) {
          QF_ASSIGN(const std::vector<float> g, model::ReadTensorF32(store, p.norm, {H}));
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t j = 0; j < H; ++j) w[size_t(i * H + j)] *= g[size_t(j)];
        }
        methods::RotateRows(r, w, rows, H);
        if (p.role == Role::kValues && rh) {
          if (rows % D)
            return Err("{}: '{}' rows {} not whole heads of {}", t->file, name, rows, D);
          for (int64_t h = 0; h < rows / D; ++h)
            methods::RotateColumns(*rh, std::span(w).subspan(size_t(h * D * H), size_t(D * H)), D,
                                   H);
        }
        if (p.role == Role::kEmbed || p.role == Role::kHead) out = keep;
        break;
      }
      case Role::kWrites:
      case Role::kAttnOut:
        if (shape.size() != 2 || rows != H)
          return Err("{}: tensor '{}' has shape {}, expected [{}, *]", t->file, name,
                     io::ShapeString(shape), H);
        methods::RotateColumns(r, w, H, cols);
        if (p.role == Role::kAttnOut && rh) {
          if (cols % D)
            return Err("{}: '{}' columns {} not whole heads of {}", t->file, name, cols, D);
          for (int64_t i = 0; i < H; ++i)
            for (int64_t h = 0; h < cols / D; ++h) rh->Apply(w.data() + i * cols + h * D);
        }
        break;
      case Role::kVBias:  // planned with --heads only
        if (rows % D) return Err("{}: '{}' size {} not whole heads of {}", t->file, name, rows, D);
        for (int64_t h = 0; h < rows / D; ++h) rh->Apply(w.data() + h * D);
        break;
    }
    QF_TRY(spill.Add(name, out, shape, Encode(w, out)));
  }
  QF_ASSIGN(const std::vector<io::TensorToWrite> tensors, spill.Tensors());
  QF_TRY(io::WriteSafetensorsShards(tmp, tensors, {{"format", "pt"}}, io::kDefaultMaxShardBytes));
  // The other files (config, tokenizer, generation config) as they are.
  for (const fs::directory_entry& e : fs::directory_iterator(src)) {
    if (!e.is_regular_file()) continue;
    const std::string f = e.path().filename().string();
    if (f.ends_with(".safetensors") || f.ends_with(".safetensors.index.json")) continue;
    if (f == "config.json" && tied) {
      QF_TRY(WriteUntiedConfig(e.path(), tmp / f));
      continue;
    }
    fs::copy_file(e.path(), tmp / f, fs::copy_options::overwrite_existing, ec);
    if (ec) return Err("{}: cannot copy to {}: {}", e.path().string(), tmp.string(), ec.message());
  }
  QF_TRY(ReplaceFolder(tmp, dst));
  scratch.Release();
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

Result<RotatedCopy> RotatedCopy::Make(const fs::path& src, const fs::path& near,
                                      const RotateOptions& opt) {
  fs::path dir = near;
  dir += ".rotated-" + std::to_string(::getpid());
  RotatedCopy c;
  QF_ASSIGN(c.dir_, ScratchFolder::Create(dir));  // RotateModel replaces it when complete
  QF_ASSIGN(c.report_, RotateModel(src, dir, opt));
  return c;
}

}  // namespace qf::pipeline
