// HF folder or GGUF -> quantized GGUF (see quantize_gguf.h): plan the tensors, choose each one's
// ggml type from the mix, encode its blocks (RTN, importance-weighted or GPTQ), write atomically.
#include "pipeline/quantize_gguf.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cctype>
#include <cstdio>
#include <cstring>

#include "core/dist.h"
#include "core/dtype.h"
#include "formats/ggml_blocks.h"
#include "io/gguf.h"
#include "pipeline/gguf_convert.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "methods/gptq.h"
#include "model/config.h"
#include "model/gguf_model.h"

namespace qf::pipeline {
using methods::GptqGgml;
using methods::GptqOptions;

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

// The ordering llama-quantize writes tensors in: non-block tensors first, then block by block,
// by name within each (llama_model_loader's weight_name_comparer).
bool LoaderOrder(const std::string& a, const std::string& b) {
  const int64_t la = LayerOf(a), lb = LayerOf(b);
  return la != lb ? la < lb : a < b;
}

Status CheckImatrix(const GgufQuantizeOptions& opt) {
  for (const auto& [name, imp] : opt.imatrix)
    for (float v : imp)
      if (!std::isfinite(v) || v < 0)
        return Err("imatrix entry '{}' has a non-finite or negative value", name);
  return Status::Ok();
}

// quantize.imatrix.* as llama-quantize records them (nothing without an importance matrix).
Status AddImatrixKeys(const GgufQuantizeOptions& opt, io::GgufWriter* w) {
  if (opt.imatrix.empty()) return Status::Ok();
  QF_TRY(w->Set("quantize.imatrix.file", io::GgufValue(opt.imatrix_file)));
  QF_TRY(w->Set("quantize.imatrix.dataset", io::GgufValue(opt.imatrix_dataset)));
  QF_TRY(w->Set("quantize.imatrix.entries_count", io::GgufValue(int32_t(opt.imatrix.size()))));
  return w->Set("quantize.imatrix.chunks_count", io::GgufValue(int32_t(opt.imatrix_chunks)));
}

// The .gguf source (see the header).
Result<GgufQuantizeReport> QuantizeGgufFile(const fs::path& src, const fs::path& out,
                                            const GgufQuantizeOptions& opt,
                                            const std::function<void(size_t, size_t)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  if (opt.gptq || opt.qat)
    return Err(
        "{}: --method {} needs the model folder (config.json + *.safetensors): its "
        "calibration pass runs the fp weights",
        src.string(), opt.qat ? "qat" : "gptq");
  QF_ASSIGN(io::GgufFile f, io::GgufFile::Open(src));
  QF_ASSIGN(model::ModelConfig cfg, model::GgufModelConfig(f));
  std::vector<const io::GgufTensorInfo*> tensors;
  for (const io::GgufTensorInfo& t : f.tensors()) tensors.push_back(&t);
  std::stable_sort(tensors.begin(), tensors.end(),
                   [](const io::GgufTensorInfo* a, const io::GgufTensorInfo* b) {
                     return LoaderOrder(a->name, b->name);
                   });
  MixContext ctx = opt.ctx;
  ctx.layers = cfg.layers;
  ctx.gqa = cfg.kv_heads > 0 ? cfg.heads / cfg.kv_heads : 1;
  ctx.has_imatrix = !opt.imatrix.empty();
  ctx.tied_embeddings = f.FindTensor("output.weight") == nullptr;
  QF_TRY(CheckImatrix(opt));

  io::GgufWriter w;
  for (const io::GgufKv& kv : f.metadata()) {
    if (kv.key == "general.file_type" || kv.key == "general.quantization_version" ||
        kv.key.rfind("quantize.", 0) == 0)
      continue;
    QF_TRY(w.Set(kv.key, kv.value));
  }
  QF_TRY(pipeline::AddGgufQuantizedFileType(uint32_t(opt.mix->ftype), &w));
  QF_TRY(AddImatrixKeys(opt, &w));

  GgufQuantizeReport rep;
  double qbits = 0;
  for (const io::GgufTensorInfo* t : tensors) {
    const io::GgmlTypeInfo& from = io::Info(t->type);
    std::string from_name(from.name);
    std::transform(from_name.begin(), from_name.end(), from_name.begin(),
                   [](unsigned char c) { return char(std::toupper(c)); });
    const int64_t numel = t->numel();
    const int64_t cols = t->shape.empty() ? 1 : t->shape.back();
    rep.total_params += numel;
    const GgmlBlockType* src_blocks = FindGgmlBlockType(from_name);
    const std::optional<DType> src_float = io::FloatDType(t->type);
    if (!src_float && !src_blocks)
      return Err("{}: tensor '{}' has type {}, which qforge cannot read", src.string(), t->name,
                 from.name);
    QF_ASSIGN(TypeChoice c, ChooseGgufType(*opt.mix, t->name, int(t->shape.size()), cols,
                                           LayerOf(t->name), ctx, src_float ? from_name : "F16"));
    if (t->shape.size() < 2) c = {from_name, false, ""};  // norms, biases: kept as they are
    QF_ASSIGN(const io::GgmlType gt, GgmlTypeOf(c.type));
    QF_ASSIGN(const uint64_t bytes, io::GgmlTensorBytes(gt, t->shape));
    GgufTensorReport tr{t->name, c.type, c.fallback, t->shape, bytes, false};
    const GgmlBlockType* bt = FindGgmlBlockType(c.type);
    const std::vector<float>* imp = nullptr;
    if (bt) {
      rep.quantized_params += numel;
      qbits += 8.0 * double(bytes);
      if (const auto it = opt.imatrix.find(t->name); it != opt.imatrix.end()) {
        if (int64_t(it->second.size()) != cols)
          return Err("imatrix entry '{}' has {} values, the tensor has {} columns", t->name,
                     it->second.size(), cols);
        tr.used_imatrix = true;
        imp = &it->second;
      }
    }
    if (gt == t->type) {  // unchanged: the bytes as they are
      QF_TRY(w.AddTensor(t->name, gt, t->shape, t->data));
      rep.tensors.push_back(tr);
      continue;
    }
    if (src_blocks && !opt.allow_requantize)
      return Err(
          "{}: tensor '{}' is already {}; quantizing it again to {} loses more: pass "
          "--allow-requantize to do it anyway",
          src.string(), t->name, from_name, c.type);
    const std::string name = t->name;
    QF_TRY(w.AddTensor(
        t->name, gt, t->shape,
        [t, src_blocks, bt, gt, imp, numel, cols, name](std::span<std::byte> o) -> Status {
          std::vector<float> x(static_cast<size_t>(numel));
          if (src_blocks) {
            QF_TRY(DequantizeRowsGgml(*src_blocks, t->data.data(), numel / cols, cols, x.data()));
          } else if (!ConvertToF32(*io::FloatDType(t->type), t->data.data(), size_t(numel),
                                   x.data())) {
            return Err("tensor '{}': cannot convert to f32", name);
          }
          for (int64_t i = 0; i < numel; ++i)
            if (!std::isfinite(x[size_t(i)]))
              return Err("tensor '{}' has a non-finite value ({}) at flat index {}", name,
                         x[size_t(i)], i);
          if (bt)
            return QuantizeRowsGgml(*bt, x.data(), numel / cols, cols, imp ? imp->data() : nullptr,
                                    o.data());
          const DType dt = *io::FloatDType(gt);
          if (o.size() != size_t(numel) * Info(dt).bytes)
            return Err("tensor '{}': size mismatch", name);
          ConvertFromF32(dt, x.data(), size_t(numel), o.data());
          return Status::Ok();
        }));
    rep.tensors.push_back(tr);
  }
  rep.bits_per_weight = rep.quantized_params ? qbits / double(rep.quantized_params) : 0.0;
  rep.file_bytes = w.FileSize();
  if (!opt.dry_run && dist::IsRoot()) QF_TRY(w.Write(out, progress));  // rank 0 writes
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace

Result<GgufQuantizeReport> QuantizeToGguf(const fs::path& src, const fs::path& out,
                                          const GgufQuantizeOptions& opt,
                                          const std::function<void(size_t, size_t)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!opt.mix) return Err("no GGUF mix given");
  if ((opt.gptq || opt.qat) && !opt.imatrix.empty())
    return Err(
        "--imatrix does not apply to --method gptq or qat (they calibrate on the model's "
        "activations)");
  std::error_code ec;
  if (opt.rotate) {
    if (model::IsGgufFile(src))
      return Err("{}: --rotate needs the model folder (config.json + *.safetensors)", src.string());
    if (!opt.imatrix.empty())
      return Err("--imatrix does not apply with --rotate (it was measured on the unrotated model)");
    if (!opt.dry_run) {  // the types chosen do not depend on the rotation
      QF_ASSIGN(const RotatedCopy rotated, RotatedCopy::Make(src, out, *opt.rotate));
      GgufQuantizeOptions on_rotated = opt;
      on_rotated.rotate.reset();
      if (on_rotated.general_name.empty()) on_rotated.general_name = GgufFolderName(src);
      QF_ASSIGN(GgufQuantizeReport rep, QuantizeToGguf(rotated.path(), out, on_rotated, progress));
      rep.seconds_rotate = rotated.report().seconds;
      rep.seconds += rep.seconds_rotate;
      return rep;
    }
  }
  if (model::IsGgufFile(src)) return QuantizeGgufFile(src, out, opt, progress);
  if (!fs::is_directory(src, ec))
    return Err("{}: expected a model folder (config.json + *.safetensors) or a .gguf file",
               src.string());
  QF_ASSIGN(model::ModelConfig cfg, model::LoadHfConfig(src));
  QF_TRY(model::CheckUnquantized(src, "quantize"));
  QF_ASSIGN(io::TensorStore store, io::TensorStore::Open(src));
  QF_ASSIGN(std::vector<pipeline::GgufTensorPlan> plan, pipeline::PlanGgufTensors(cfg, store));
  // llama-quantize writes tensors in its loader's order: non-block tensors first, then block
  // by block, by name within each (llama_model_loader's weight_name_comparer).
  std::stable_sort(plan.begin(), plan.end(),
                   [](const pipeline::GgufTensorPlan& a, const pipeline::GgufTensorPlan& b) {
                     return LoaderOrder(a.name, b.name);
                   });

  MixContext ctx = opt.ctx;
  ctx.layers = cfg.layers;
  ctx.gqa = cfg.kv_heads > 0 ? cfg.heads / cfg.kv_heads : 1;
  ctx.has_imatrix = !opt.imatrix.empty() || opt.gptq;  // GPTQ weighs by diag(H)
  ctx.tied_embeddings = true;
  for (const auto& p : plan)
    if (p.name == "output.weight") ctx.tied_embeddings = false;
  QF_TRY(CheckImatrix(opt));

  // Every tensor's type first (the GPTQ pass needs them before anything is written).
  GgufQuantizeReport rep;
  std::vector<io::GgmlType> types;
  std::vector<const GgmlBlockType*> blocks;  // null: a float tensor
  std::map<std::string, size_t> by_source;   // Hugging Face name -> plan index
  double qbits = 0;
  for (const pipeline::GgufTensorPlan& p : plan) {
    const int64_t cols = p.shape.empty() ? 1 : p.shape.back();
    int64_t numel = 1;
    for (int64_t d : p.shape) numel *= d;
    rep.total_params += numel;
    QF_ASSIGN(TypeChoice c,
              ChooseGgufType(*opt.mix, p.name, int(p.shape.size()), cols, LayerOf(p.name), ctx,
                             p.is_float32_only ? "F32" : "F16"));
    if (p.is_float32_only) c = {"F32", false, ""};
    QF_ASSIGN(const io::GgmlType gt, GgmlTypeOf(c.type));
    QF_ASSIGN(const uint64_t bytes, io::GgmlTensorBytes(gt, p.shape));
    GgufTensorReport tr{p.name, c.type, c.fallback, p.shape, bytes, false};
    const GgmlBlockType* bt = FindGgmlBlockType(c.type);
    if (bt) {
      rep.quantized_params += numel;
      qbits += 8.0 * double(bytes);
      if (const auto it = opt.imatrix.find(p.name); it != opt.imatrix.end()) {
        if (int64_t(it->second.size()) != cols)
          return Err("imatrix entry '{}' has {} values, the tensor has {} columns", p.name,
                     it->second.size(), cols);
        tr.used_imatrix = true;
      }
    }
    rep.tensors.push_back(tr);
    types.push_back(gt);
    blocks.push_back(bt);
    if (p.source) by_source[p.source->name] = types.size() - 1;
  }
  rep.bits_per_weight = rep.quantized_params ? qbits / double(rep.quantized_params) : 0.0;
  // QAT trains the decoder linears' blocks (methods::GgmlQatLinear: any type with codes).
  if (opt.qat) {
    bool trainable = false;
    for (size_t i = 0; i < plan.size(); ++i)
      trainable |= LayerOf(plan[i].name) >= 0 && blocks[i] && blocks[i]->codes;
    if (!trainable)
      return Err("--method qat: {} gives the decoder linears no quantized type", opt.mix->name);
  }

  // GPTQ / QAT: the solved tensors' bytes, in Hugging Face row order: by plan index, the entry
  // of the scratch file they went to as each was solved (rank 0 only: memory stays bounded by a
  // block; a tensor QAT trains again goes in once more and its latest entry counts).
  std::map<size_t, size_t> solved;
  std::optional<io::TensorSpill> spill;
  size_t spilled = 0;
  auto keep = [&](size_t i, const std::vector<std::byte>& q) -> Status {
    if (!dist::IsRoot()) return Status::Ok();  // rank 0 writes
    if (!spill) {
      std::error_code ec;
      const fs::path dir = fs::absolute(out, ec).parent_path();
      QF_ASSIGN(io::TensorSpill sp, io::TensorSpill::Create(dir));
      spill.emplace(std::move(sp));
    }
    QF_TRY(spill->Add(plan[i].name, DType::kU8, {int64_t(q.size())}, q));
    solved[i] = spilled++;
    return Status::Ok();
  };
  const std::string method = opt.qat ? (opt.gptq ? "gptq+qat" : "qat") : "gptq";
  if ((opt.gptq || opt.qat) && !opt.dry_run) {
    const auto head = by_source.find(cfg.family->names->lm_head);
    const bool lm_head = head != by_source.end() && plan[head->second].name == "output.weight" &&
                         blocks[head->second] != nullptr;
    GptqOptions gopt;
    gopt.damp = opt.damp;
    gopt.factor_across_ranks = dist::Size() > 1;  // every rank makes each factor
    auto solve = [&](const SolveRequest& r) -> Result<Solved> {
      const auto it = by_source.find(r.weight_name);
      if (it == by_source.end()) return Err("{}: not in the GGUF tensor plan", r.weight_name);
      const size_t i = it->second;
      Solved out;
      std::vector<float>& deq = out.weights;
      deq.resize(r.weight.size());
      if (!blocks[i]) {  // kept as a float type: run with its rounding
        const io::GgmlType gt = types[i];
        std::vector<std::byte> tmp(r.weight.size() * 4);
        if (gt != io::GgmlType::kF32) {
          const DType dt = *io::FloatDType(gt);
          tmp.resize(r.weight.size() * Info(dt).bytes);
          ConvertFromF32(dt, r.weight.data(), r.weight.size(), tmp.data());
          ConvertToF32(dt, tmp.data(), r.weight.size(), deq.data());
        } else {
          deq.assign(r.weight.begin(), r.weight.end());
        }
        return out;
      }
      const GgmlBlockType& bt = *blocks[i];
      std::vector<std::byte> q;
      if (opt.gptq) {
        // Rows spread over the ranks under mpirun in the sweep's row chunks (a row's blocks do
        // not depend on the slice it is solved in), then gathered; whole on one rank.
        const std::span<const double> h(r.hessian.matrix());
        const int64_t unit = methods::kGptqRowChunk;
        if (dist::SplitsRows(r.n, unit)) {
          const auto [r0, r1] = dist::ShareRows(r.n, unit);
          QF_ASSIGN(const uint64_t bytes, GgmlRowsBytes(bt, r.n, r.k));
          const size_t row_bytes = size_t(bytes) / size_t(r.n);
          q.resize(size_t(bytes));
          if (r1 > r0) {
            QF_ASSIGN(const std::vector<std::byte> part,
                      GptqGgml(r.weight.subspan(size_t(r0 * r.k), size_t((r1 - r0) * r.k)), r1 - r0,
                               r.k, h, bt, {}, gopt));
            std::copy(part.begin(), part.end(), q.begin() + r0 * int64_t(row_bytes));
          }
          dist::AllGatherRows(q, r.n, unit);
        } else {
          QF_ASSIGN(q, GptqGgml(r.weight, r.n, r.k, h, bt, {}, gopt));
        }
        rep.tensors[i].gptq = true;
      } else {  // QAT's plain start: the type's own rounding, as llama-quantize without imatrix
        QF_ASSIGN(const uint64_t bytes, GgmlRowsBytes(bt, r.n, r.k));
        q.resize(bytes);
        QF_TRY(QuantizeRowsGgml(bt, r.weight.data(), r.n, r.k, nullptr, q.data()));
      }
      QF_TRY(DequantizeRowsGgml(bt, q.data(), r.n, r.k, deq.data()));
      if (opt.qat && LayerOf(plan[i].name) >= 0) {  // QAT trains the blocks from here
        out.block_type = &bt;
        out.blocks = q;
      }
      QF_TRY(keep(i, q));
      return out;
    };
    // QAT's trained blocks, and the values those hold.
    auto write = [&](const std::string& weight_name,
                     std::span<const std::byte> q) -> Result<std::vector<float>> {
      const auto it = by_source.find(weight_name);
      if (it == by_source.end()) return Err("{}: not in the GGUF tensor plan", weight_name);
      const size_t i = it->second;
      const int64_t n = plan[i].shape[0], k = plan[i].shape[1];
      std::vector<float> held(size_t(n * k));
      QF_TRY(DequantizeRowsGgml(*blocks[i], q.data(), n, k, held.data()));
      rep.tensors[i].qat = true;
      QF_TRY(keep(i, std::vector<std::byte>(q.begin(), q.end())));
      return held;
    };
    QuantizeOptions qopt;
    qopt.method = method;
    qopt.calib = opt.calib;
    qopt.damp = opt.damp;
    qopt.seed = opt.calib.seed;
    qopt.qat = opt.qat_options;
    qopt.e2e_epochs = opt.e2e_epochs;
    qopt.qat_progress = opt.qat_progress;
    QF_ASSIGN(QuantizeReport cr, RunCalibratedSolver(src, qopt, lm_head, solve, write));
    for (const LinearReport& l : cr.linears)  // the pass measured each solved linear's error
      if (const auto it = by_source.find(l.module + ".weight"); it != by_source.end())
        rep.tensors[it->second].rel_mse = l.rel_mse;
    // Norms QAT trained (--block-norms, --e2e-norms, --e2e-final-norm) replace the source's
    // values in the plan.
    for (pipeline::GgufTensorPlan& p : plan)
      if (p.source)
        if (const auto it = cr.trained_norms.find(p.source->name); it != cr.trained_norms.end()) {
          p.values = it->second;
          p.source = nullptr;
        }
    rep.calibrated = std::move(cr);
  }

  io::GgufWriter w;
  QF_TRY(pipeline::AddGgufModelMetadata(
      cfg, opt.general_name.empty() ? GgufFolderName(src) : opt.general_name, std::nullopt, &w));
  QF_TRY(pipeline::AddGgufTokenizer(src, cfg, &w));
  QF_TRY(pipeline::AddGgufQuantizedFileType(uint32_t(opt.mix->ftype), &w));
  QF_TRY(AddImatrixKeys(opt, &w));
  if (opt.gptq || opt.qat) {
    const QuantizeReport* cr = rep.calibrated ? &*rep.calibrated : nullptr;
    QF_TRY(w.Set("quantize.qforge.method", io::GgufValue(method)));
    QF_TRY(w.Set("quantize.qforge.calibration",
                 io::GgufValue(opt.calib.text_path.empty() ? std::string("sampled from the model")
                                                           : opt.calib.text_path)));
    QF_TRY(w.Set("quantize.qforge.samples", io::GgufValue(int32_t(cr ? cr->calib_samples : 0))));
    QF_TRY(w.Set("quantize.qforge.seqlen",
                 io::GgufValue(
                     int32_t(cr && cr->calib_samples ? cr->calib_tokens / cr->calib_samples : 0))));
    QF_TRY(w.Set("quantize.qforge.seed", io::GgufValue(int32_t(opt.calib.seed))));
    if (opt.qat) {
      QF_TRY(w.Set("quantize.qforge.qat_epochs", io::GgufValue(int32_t(opt.qat_options.epochs))));
      QF_TRY(w.Set("quantize.qforge.e2e_epochs", io::GgufValue(int32_t(opt.e2e_epochs))));
    }
  }
  std::vector<io::TensorToWrite> solved_bytes;  // the scratch file, mapped read-only
  if (spill) {
    QF_ASSIGN(solved_bytes, spill->Tensors());
  }
  for (size_t i = 0; i < plan.size(); ++i) {
    const pipeline::GgufTensorPlan& p = plan[i];
    const io::GgmlType gt = types[i];
    const GgmlBlockType* bt = blocks[i];
    const int64_t cols = p.shape.empty() ? 1 : p.shape.back();
    int64_t numel = 1;
    for (int64_t d : p.shape) numel *= d;
    // Dry runs add the tensors too (fills run only in Write) so that FileSize() is exact.
    if (!bt) {
      QF_TRY(w.AddTensor(p.name, gt, p.shape, [&p, gt](std::span<std::byte> o) {
        return pipeline::FillGgufFloatTensor(p, gt, o);
      }));
      continue;
    }
    if (const auto it = solved.find(i); it != solved.end()) {
      const std::span<const std::byte> q = solved_bytes[it->second].data;
      QF_TRY(
          w.AddTensor(p.name, gt, p.shape, [&p, q, numel, cols](std::span<std::byte> o) -> Status {
            const int64_t rows = numel / cols;
            const size_t row_bytes = q.size() / size_t(rows);
            if (o.size() != q.size()) return Err("{}: size mismatch", p.name);
            for (int64_t r = 0; r < rows; ++r)
              std::memcpy(o.data() + size_t(r) * row_bytes,
                          q.data() + size_t(pipeline::GgufSourceRow(p, r, rows)) * row_bytes,
                          row_bytes);
            return Status::Ok();
          }));
      continue;
    }
    const std::vector<float>* imp = nullptr;
    if (const auto it = opt.imatrix.find(p.name); it != opt.imatrix.end()) imp = &it->second;
    QF_TRY(w.AddTensor(p.name, gt, p.shape,
                       [&p, bt, imp, numel, cols](std::span<std::byte> o) -> Status {
                         std::vector<float> x(static_cast<size_t>(numel));
                         QF_TRY(pipeline::FillGgufFloatTensor(
                             p, io::GgmlType::kF32, std::as_writable_bytes(std::span(x))));
                         return QuantizeRowsGgml(*bt, x.data(), numel / cols, cols,
                                                 imp ? imp->data() : nullptr, o.data());
                       }));
  }
  rep.file_bytes = w.FileSize();
  if (!opt.dry_run && dist::IsRoot()) QF_TRY(w.Write(out, progress));  // rank 0 writes
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace qf::pipeline
