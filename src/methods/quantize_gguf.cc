#include "methods/quantize_gguf.h"

#include <chrono>
#include <cstdio>

#include "formats/ggml_blocks.h"
#include "io/gguf.h"
#include "io/gguf_convert.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace qf::methods {
namespace {

namespace fs = std::filesystem;

// The N of "blk.N.", or -1.
int64_t LayerOf(const std::string& name) {
  int layer = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1) return -1;
  return layer;
}

Result<io::GgmlType> GgmlTypeOf(const std::string& name) {
  const io::GgmlTypeInfo* t = io::FindGgmlType(std::string_view(name));
  if (!t) return Err("unknown ggml type '{}'", name);
  return t->type;
}

}  // namespace

Result<GgufQuantizeReport> QuantizeToGguf(const fs::path& src, const fs::path& out,
                                          const GgufQuantizeOptions& opt,
                                          const std::function<void(size_t, size_t)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!opt.mix) return Err("no GGUF mix given");
  std::error_code ec;
  if (!fs::is_directory(src, ec))
    return Err("{}: expected a model folder (config.json + *.safetensors)", src.string());
  QF_ASSIGN(model::ModelConfig cfg, model::LoadHfConfig(src));
  QF_ASSIGN(io::TensorStore store, io::TensorStore::Open(src));
  QF_ASSIGN(std::vector<io::GgufTensorPlan> plan, io::PlanGgufTensors(cfg, store));

  MixContext ctx = opt.ctx;
  ctx.layers = cfg.layers;
  ctx.gqa = cfg.kv_heads > 0 ? cfg.heads / cfg.kv_heads : 1;
  ctx.has_imatrix = !opt.imatrix.empty();
  ctx.tied_embeddings = true;
  for (const auto& p : plan)
    if (p.name == "output.weight") ctx.tied_embeddings = false;
  for (const auto& [name, imp] : opt.imatrix)
    for (float v : imp)
      if (!std::isfinite(v) || v < 0) return Err("imatrix entry '{}' has a non-finite or negative value", name);

  GgufQuantizeReport rep;
  io::GgufWriter w;
  std::string name = (fs::absolute(src, ec).lexically_normal()).filename().string();
  if (name.empty()) name = fs::absolute(src, ec).lexically_normal().parent_path().filename().string();
  QF_TRY(io::AddGgufModelMetadata(cfg, name, uint32_t(opt.mix->ftype), &w));
  QF_TRY(io::AddGgufTokenizer(src, cfg, &w));
  if (ctx.has_imatrix) {
    QF_TRY(w.Set("quantize.imatrix.file", io::GgufValue(opt.imatrix_file)));
    QF_TRY(w.Set("quantize.imatrix.dataset", io::GgufValue(opt.imatrix_dataset)));
    QF_TRY(w.Set("quantize.imatrix.entries_count", io::GgufValue(int32_t(opt.imatrix.size()))));
    QF_TRY(w.Set("quantize.imatrix.chunks_count", io::GgufValue(int32_t(opt.imatrix_chunks))));
  }
  double qbits = 0;
  for (const io::GgufTensorPlan& p : plan) {
    const int64_t cols = p.shape.empty() ? 1 : p.shape.back();
    int64_t numel = 1;
    for (int64_t d : p.shape) numel *= d;
    rep.total_params += numel;
    QF_ASSIGN(TypeChoice c, ChooseGgufType(*opt.mix, p.name, int(p.shape.size()), cols,
                                           LayerOf(p.name), ctx, p.is_float32_only ? "F32" : "F16"));
    if (p.is_float32_only) c = {"F32", false, ""};
    QF_ASSIGN(const io::GgmlType gt, GgmlTypeOf(c.type));
    QF_ASSIGN(const uint64_t bytes, io::GgmlTensorBytes(gt, p.shape));
    GgufTensorReport tr{p.name, c.type, c.fallback, p.shape, bytes, false};
    const GgmlBlockType* bt = FindGgmlBlockType(c.type);
    const std::vector<float>* imp = nullptr;
    if (bt) {
      rep.quantized_params += numel;
      qbits += 8.0 * double(bytes);
      if (const auto it = opt.imatrix.find(p.name); it != opt.imatrix.end()) {
        if (int64_t(it->second.size()) != cols)
          return Err("imatrix entry '{}' has {} values, the tensor has {} columns", p.name,
                     it->second.size(), cols);
        imp = &it->second;
        tr.used_imatrix = true;
      }
    }
    rep.tensors.push_back(tr);
    // Dry runs add the tensors too (fills run only in Write) so that FileSize() is exact.
    if (!bt) {
      QF_TRY(w.AddTensor(p.name, gt, p.shape, [&p, gt](std::span<std::byte> o) {
        return io::FillGgufFloatTensor(p, gt, o);
      }));
      continue;
    }
    QF_TRY(w.AddTensor(p.name, gt, p.shape, [&p, bt, imp, numel, cols](std::span<std::byte> o) -> Status {
      std::vector<float> x(static_cast<size_t>(numel));
      QF_TRY(io::FillGgufFloatTensor(p, io::GgmlType::kF32,
                                     std::as_writable_bytes(std::span(x))));
      return QuantizeRowsGgml(*bt, x.data(), numel / cols, cols, imp ? imp->data() : nullptr, o.data());
    }));
  }
  rep.bits_per_weight = rep.quantized_params ? qbits / double(rep.quantized_params) : 0.0;
  rep.file_bytes = w.FileSize();
  if (!opt.dry_run) QF_TRY(w.Write(out, progress));
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace qf::methods
