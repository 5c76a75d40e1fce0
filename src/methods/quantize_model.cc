// Streaming quantization driver (see quantize_model.h). RTN: each linear is read as fp32,
// rounded through the scheme's Grid, and kept only as codes + parameters until the write.
#include "methods/quantize_model.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/sysinfo.h"
#include "formats/quantize.h"
#include "io/compressed_tensors.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"

namespace qf::methods {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The linears of one decoder layer, in the order GPTQ's true-sequential pass visits them.
std::vector<const char*> LayerLinears(const model::TensorNames& nm) {
  return {nm.q, nm.k, nm.v, nm.o, nm.gate, nm.up, nm.down};
}

std::string ModuleOf(const std::string& weight_name) {
  return weight_name.substr(0, weight_name.size() - std::string(".weight").size());
}

Result<bool> Ignored(const std::string& module, const std::vector<std::string>& ignore) {
  for (const std::string& pat : ignore) {
    if (pat.rfind("re:", 0) == 0) {
      try {
        if (std::regex_search(module, std::regex(pat.substr(3)))) return true;
      } catch (const std::regex_error& e) {
        return Err("--ignore '{}': bad regular expression: {}", pat, e.what());
      }
    } else if (module == pat) {
      return true;
    }
  }
  return false;
}

LinearReport Distortion(const std::string& module, const std::vector<float>& w,
                        const QuantizedTensor& q, const std::vector<float>& deq) {
  LinearReport r;
  r.module = module;
  r.scheme = std::string(q.scheme.name);
  r.fallback = q.fallback;
  r.n = q.rows;
  r.k = q.cols;
  double err = 0, ref = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double d = double(w[i]) - deq[i];
    err += d * d;
    ref += double(w[i]) * w[i];
  }
  r.rel_mse = ref > 0 ? err / ref : 0.0;
  r.snr_db = r.rel_mse > 0 ? -10.0 * std::log10(r.rel_mse) : INFINITY;
  return r;
}

// Storage bits of one quantized linear: codes plus its scales (and zeros), as written.
double StoredBits(const QuantizedTensor& q) {
  const double params = double(q.scales.size());
  const double per_param = 16.0 + (q.zeros.empty() ? 0.0 : double(q.scheme.bits));
  return double(q.rows) * double(q.cols) * q.scheme.bits + params * per_param;
}

// Writes into a sibling temporary folder, then swaps it in for `out`.
Status ReplaceFolder(const fs::path& tmp, const fs::path& out) {
  std::error_code ec;
  fs::path old;
  if (fs::exists(out, ec)) {
    old = out;
    old += ".old-" + std::to_string(::getpid());
    fs::rename(out, old, ec);
    if (ec) return Err("{}: cannot replace: {}", out.string(), ec.message());
  }
  fs::rename(tmp, out, ec);
  if (ec) return Err("{}: cannot rename from {}: {}", out.string(), tmp.string(), ec.message());
  if (!old.empty()) fs::remove_all(old, ec);
  return Status::Ok();
}

}  // namespace

Result<QuantizeReport> QuantizeModel(const fs::path& src, const fs::path& out,
                                     const QuantizeOptions& opt, const LayerProgress& progress) {
  if (opt.method != "rtn")
    return Err("--method {} is not implemented yet (available: rtn)", opt.method);
  QF_ASSIGN(model::ModelConfig cfg, model::LoadHfConfig(src));
  QF_ASSIGN(io::TensorStore store, io::TensorStore::Open(src));
  if (fs::exists(src / "config.json") && out == src)
    return Err("{}: output folder must differ from the input", out.string());
  const model::TensorNames& nm = *cfg.family->names;

  QuantizeReport rep;
  std::vector<std::unique_ptr<QuantizedTensor>> quantized;
  std::vector<io::QuantizedLinearEntry> entries;
  std::map<std::string, bool> is_quantized_weight;
  const auto t0 = Clock::now();
  FitOptions fit;
  if (opt.clip) fit.clip = ClipSearch::Rtn();
  for (int64_t l = 0; l < cfg.layers; ++l) {
    for (const char* pattern : LayerLinears(nm)) {
      const std::string name = model::LayerTensorName(pattern, l);
      const io::TensorInfo* t = store.Find(name);
      if (!t) return Err("{}: missing tensor '{}'", src.string(), name);
      if (t->shape.size() != 2) return Err("{}: tensor '{}' is not a matrix", t->file, name);
      const std::string module = ModuleOf(name);
      QF_ASSIGN(const bool ignored, Ignored(module, opt.ignore));
      if (ignored) {
        rep.kept.push_back(module);
        continue;
      }
      const int64_t n = t->shape[0], k = t->shape[1];
      QF_ASSIGN(std::vector<float> w, model::ReadTensorF32(store, name, {n, k}));
      QF_ASSIGN(QuantizedTensor q, Quantize(w, n, k, opt.scheme, fit));
      QF_ASSIGN(std::vector<float> deq, Dequantize(q));
      rep.linears.push_back(Distortion(module, w, q, deq));
      rep.quantized_params += n * k;
      quantized.push_back(std::make_unique<QuantizedTensor>(std::move(q)));
      entries.push_back({module, quantized.back().get()});
      is_quantized_weight[name] = true;
    }
    if (progress) progress(l + 1, cfg.layers);
  }
  rep.seconds_quantize = std::chrono::duration<double>(Clock::now() - t0).count();

  std::vector<io::TensorToWrite> passthrough;
  for (const io::TensorInfo& t : store.tensors()) {
    rep.total_params += t.numel();
    if (!is_quantized_weight.count(t.name)) passthrough.push_back({t.name, t.dtype, t.shape, t.data});
  }
  double bits = 0;
  for (const auto& q : quantized) bits += StoredBits(*q);
  rep.bits_per_weight = rep.quantized_params ? bits / double(rep.quantized_params) : 0.0;

  io::CompressedTensorsWriteOptions wopt;
  wopt.scale_dtype = "f32";  // exact fp32 scales (codes were fitted with them)
  wopt.qforge_metadata = {{"method", opt.method},
                          {"scheme", std::string(opt.scheme.name)},
                          {"clip", opt.clip},
                          {"calibration", nullptr},
                          {"seed", opt.seed},
                          {"version", QF_VERSION}};
  wopt.ignore = {"lm_head"};
  for (const auto& m : rep.kept) wopt.ignore.push_back(m);
  const auto t1 = Clock::now();
  fs::path tmp = out;
  tmp += ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return Err("{}: cannot create: {}", tmp.string(), ec.message());
  Status st = io::WriteCompressedTensors(tmp, src, passthrough, entries, wopt);
  if (st.ok()) st = ReplaceFolder(tmp, out);
  if (!st.ok()) {
    fs::remove_all(tmp, ec);
    return st.error();
  }
  rep.seconds_write = std::chrono::duration<double>(Clock::now() - t1).count();
  for (const auto& e : fs::directory_iterator(out))
    if (e.is_regular_file()) rep.output_bytes += e.file_size();
  rep.peak_rss_bytes = PeakRssBytes();
  return rep;
}

}  // namespace qf::methods
