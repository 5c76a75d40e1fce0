// Streaming quantization driver (see quantize_model.h). RTN: each linear is read as fp32,
// rounded through the scheme's Grid, and kept only as codes + parameters until the write.
#include "methods/quantize_model.h"

#include <omp.h>
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
#include "methods/gptq.h"
#include "methods/hessian.h"
#include "model/config.h"
#include "model/model.h"
#include "text/tokenizer.h"

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

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Accumulates what the write step needs, whichever method produced the codes.
struct Collected {
  std::vector<std::unique_ptr<QuantizedTensor>> tensors;
  std::vector<io::QuantizedLinearEntry> entries;
  std::map<std::string, bool> weight_names;  // "<module>.weight" of every quantized linear

  void Add(const std::string& weight_name, QuantizedTensor q) {
    tensors.push_back(std::make_unique<QuantizedTensor>(std::move(q)));
    entries.push_back({ModuleOf(weight_name), tensors.back().get()});
    weight_names[weight_name] = true;
  }
};

FitOptions Fit(const QuantizeOptions& opt) {
  FitOptions fit;
  if (opt.clip) fit.clip = opt.method == "gptq" ? ClipSearch::Gptq() : ClipSearch::Rtn();
  return fit;
}

// RTN: every linear independently, one tensor in memory at a time.
Status RunRtn(const io::TensorStore& store, const model::ModelConfig& cfg,
              const QuantizeOptions& opt, const LayerProgress& progress, QuantizeReport& rep,
              Collected& col) {
  const FitOptions fit = Fit(opt);
  for (int64_t l = 0; l < cfg.layers; ++l) {
    for (const char* pattern : LayerLinears(*cfg.family->names)) {
      const std::string name = model::LayerTensorName(pattern, l);
      const io::TensorInfo* t = store.Find(name);
      if (!t) return Err("{}: missing tensor '{}'", store.files().front().string(), name);
      if (t->shape.size() != 2) return Err("{}: tensor '{}' is not a matrix", t->file, name);
      QF_ASSIGN(const bool ignored, Ignored(ModuleOf(name), opt.ignore));
      if (ignored) {
        rep.kept.push_back(ModuleOf(name));
        continue;
      }
      const int64_t n = t->shape[0], k = t->shape[1];
      const auto t0 = Clock::now();
      QF_ASSIGN(std::vector<float> w, model::ReadTensorF32(store, name, {n, k}));
      QF_ASSIGN(QuantizedTensor q, Quantize(w, n, k, opt.scheme, fit));
      rep.seconds_quantize += Seconds(t0);
      QF_ASSIGN(std::vector<float> deq, Dequantize(q));
      rep.linears.push_back(Distortion(ModuleOf(name), w, q, deq));
      rep.quantized_params += n * k;
      col.Add(name, std::move(q));
    }
    if (progress) progress(l + 1, cfg.layers);
  }
  return Status::Ok();
}

// GPTQ, one decoder block at a time: the block's inputs for every calibration window are held
// (X[S, L, H]); each group of linears that shares an input (q/k/v, o, gate/up, down) gets its
// Hessian from the block run with the already-quantized earlier groups (true sequential), is
// solved, and the quantized block's outputs become the next block's inputs.
Status RunGptq(const fs::path& src, const io::TensorStore& store, const model::ModelConfig& cfg,
               const QuantizeOptions& opt, const LayerProgress& progress, QuantizeReport& rep,
               Collected& col) {
  const model::TensorNames& nm = *cfg.family->names;
  auto t0 = Clock::now();
  QF_ASSIGN(std::unique_ptr<text::Tokenizer> tok, text::LoadTokenizer(src));
  CalibrationOptions copt = opt.calib;
  copt.seqlen = std::min(copt.seqlen, cfg.max_position);
  std::optional<model::Model> sampler;
  if (copt.text_path.empty()) {
    QF_ASSIGN(model::Model m, model::Model::Load(src));
    sampler.emplace(std::move(m));
  }
  QF_ASSIGN(const auto windows, CalibrationWindows(*tok, sampler ? &*sampler : nullptr, copt));
  sampler.reset();
  rep.calib_from_model = copt.text_path.empty();
  rep.calib_samples = int64_t(windows.size());
  rep.calib_tokens = rep.calib_samples * copt.seqlen;
  rep.seconds_calib_data = Seconds(t0);

  const int64_t S = rep.calib_samples, L = copt.seqlen, H = cfg.hidden, F = cfg.intermediate;
  const int64_t qd = cfg.q_dim(), kvd = cfg.kv_dim();
  std::vector<float> x(static_cast<size_t>(S * L * H));
  {
    QF_ASSIGN(std::vector<float> embed, model::ReadTensorF32(store, nm.embed, {cfg.vocab_size, H}));
    for (int64_t s = 0; s < S; ++s)
      for (int64_t i = 0; i < L; ++i) {
        const int32_t id = windows[size_t(s)][size_t(i)];
        if (id < 0 || id >= cfg.vocab_size) return Err("calibration token {} outside the vocabulary", id);
        std::copy_n(embed.data() + int64_t(id) * H, H, x.data() + (s * L + i) * H);
      }
  }
  std::vector<float> cos, sin;
  model::RopeTables(cfg, L, &cos, &sin);
  std::vector<float> att(static_cast<size_t>(S * L * qd));
  // Per-thread work buffers for one window.
  struct Scratch {
    std::vector<float> h, tmp, q, kc, vc, g, u;
  };
  const int threads = std::max(1, omp_get_max_threads());
  std::vector<Scratch> scratch(static_cast<size_t>(threads));
  for (Scratch& sc : scratch) {
    sc.h.resize(size_t(L * H));
    sc.tmp.resize(size_t(L * H));
    sc.q.resize(size_t(L * qd));
    sc.kc.resize(size_t(L * kvd));
    sc.vc.resize(size_t(L * kvd));
    sc.g.resize(size_t(L * F));
    sc.u.resize(size_t(L * F));
  }
  GptqOptions gopt;
  gopt.damp = opt.damp;
  gopt.act_order = opt.act_order ? ActOrder::kDescending : ActOrder::kOff;
  gopt.fit = Fit(opt);

  for (int64_t l = 0; l < cfg.layers; ++l) {
    QF_ASSIGN(model::Layer layer, model::ReadLayer(store, cfg, l, nullptr));
    // Quantizes the linears sharing one input with its Hessian, installing the codes in `layer`
    // so the stages after it run on the quantized weights.
    auto solve = [&](const HessianAccumulator& hess,
                     std::initializer_list<std::pair<const char*, model::Linear*>> group) -> Status {
      for (const auto& [pattern, lin] : group) {
        const std::string name = model::LayerTensorName(pattern, l);
        QF_ASSIGN(const bool ignored, Ignored(ModuleOf(name), opt.ignore));
        if (ignored) {
          rep.kept.push_back(ModuleOf(name));
          continue;
        }
        const auto ts = Clock::now();
        GptqStats st;
        QF_ASSIGN(QuantizedTensor qt, Gptq(lin->weight, lin->n, lin->k, hess, opt.scheme, gopt, &st));
        rep.seconds_quantize += Seconds(ts);
        QF_ASSIGN(std::vector<float> deq, Dequantize(qt));
        LinearReport lr = Distortion(ModuleOf(name), lin->weight, qt, deq);
        lr.gptq_loss = st.loss;
        rep.linears.push_back(lr);
        rep.quantized_params += lin->n * lin->k;
        lin->weight = std::move(deq);  // later stages run on the quantized values, as fp32
        col.Add(name, std::move(qt));
      }
      return Status::Ok();
    };
    auto xs = [&](int64_t s) { return x.data() + s * L * H; };
    auto as = [&](int64_t s) { return att.data() + s * L * qd; };
    // Runs `stage` for every window, `threads` windows at a time (one per thread, kernels
    // single-threaded inside), then feeds `hess` in window order: the Hessian does not depend
    // on the thread count. `stage` returns the window's input to the observed linears.
    auto observe = [&](HessianAccumulator* hess, auto stage) {
      std::vector<const float*> in(static_cast<size_t>(threads));
      for (int64_t s0 = 0; s0 < S; s0 += threads) {
        const int64_t n = std::min<int64_t>(threads, S - s0);
        auto tf = Clock::now();
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (int64_t i = 0; i < n; ++i)
          in[size_t(i)] = stage(s0 + i, scratch[size_t(i)]);  // one buffer per window in flight
        rep.seconds_forward += Seconds(tf);
        tf = Clock::now();
        if (hess)
          for (int64_t i = 0; i < n; ++i) hess->Add(in[size_t(i)], L);
        rep.seconds_statistics += Seconds(tf);
      }
    };

    HessianAccumulator h_attn(H);
    observe(&h_attn, [&](int64_t s, Scratch& sc) {
      model::AttnNorm(cfg, layer, xs(s), sc.h.data(), L);
      return static_cast<const float*>(sc.h.data());
    });
    QF_TRY(solve(h_attn, {{nm.q, &layer.q}, {nm.k, &layer.k}, {nm.v, &layer.v}}));

    HessianAccumulator h_o(qd);
    observe(&h_o, [&](int64_t s, Scratch& sc) {
      model::AttnNorm(cfg, layer, xs(s), sc.h.data(), L);
      model::Attend(cfg, layer, sc.h.data(), sc.q.data(), as(s), L, 0, sc.kc.data(), sc.vc.data(),
                    cos.data(), sin.data());
      return static_cast<const float*>(as(s));
    });
    QF_TRY(solve(h_o, {{nm.o, &layer.o}}));

    HessianAccumulator h_mlp(H);
    observe(&h_mlp, [&](int64_t s, Scratch& sc) {
      model::AddProjection(layer.o, as(s), sc.tmp.data(), xs(s), L);
      model::FfnNorm(cfg, layer, xs(s), sc.h.data(), L);
      return static_cast<const float*>(sc.h.data());
    });
    QF_TRY(solve(h_mlp, {{nm.gate, &layer.gate}, {nm.up, &layer.up}}));

    HessianAccumulator h_down(F);
    observe(&h_down, [&](int64_t s, Scratch& sc) {
      model::FfnNorm(cfg, layer, xs(s), sc.h.data(), L);
      model::SwiGlu(cfg, layer, sc.h.data(), sc.g.data(), sc.u.data(), L);
      return static_cast<const float*>(sc.g.data());
    });
    QF_TRY(solve(h_down, {{nm.down, &layer.down}}));

    // The quantized block's outputs feed the next block.
    observe(nullptr, [&](int64_t s, Scratch& sc) {
      model::FfnNorm(cfg, layer, xs(s), sc.h.data(), L);
      model::SwiGlu(cfg, layer, sc.h.data(), sc.g.data(), sc.u.data(), L);
      model::AddProjection(layer.down, sc.g.data(), sc.tmp.data(), xs(s), L);
      return static_cast<const float*>(nullptr);
    });
    if (progress) progress(l + 1, cfg.layers);
  }
  return Status::Ok();
}

}  // namespace

Result<QuantizeReport> QuantizeModel(const fs::path& src, const fs::path& out,
                                     const QuantizeOptions& opt, const LayerProgress& progress) {
  if (opt.method != "rtn" && opt.method != "gptq")
    return Err("--method {} is not implemented yet (available: rtn, gptq)", opt.method);
  if (opt.method == "rtn" && (opt.act_order || !opt.calib.text_path.empty()))
    return Err("--act-order and --calib apply to --method gptq");
  QF_ASSIGN(model::ModelConfig cfg, model::LoadHfConfig(src));
  QF_ASSIGN(io::TensorStore store, io::TensorStore::Open(src));
  std::error_code eq_ec;
  if (fs::exists(out) && fs::equivalent(src, out, eq_ec))
    return Err("{}: output folder must differ from the input", out.string());

  QuantizeReport rep;
  Collected col;
  if (opt.method == "rtn") {
    QF_TRY(RunRtn(store, cfg, opt, progress, rep, col));
  } else {
    QF_TRY(RunGptq(src, store, cfg, opt, progress, rep, col));
  }

  std::vector<io::TensorToWrite> passthrough;
  for (const io::TensorInfo& t : store.tensors()) {
    rep.total_params += t.numel();
    if (!col.weight_names.count(t.name)) passthrough.push_back({t.name, t.dtype, t.shape, t.data});
  }
  double bits = 0;
  for (const auto& q : col.tensors) bits += StoredBits(*q);
  rep.bits_per_weight = rep.quantized_params ? bits / double(rep.quantized_params) : 0.0;

  io::CompressedTensorsWriteOptions wopt;
  wopt.scale_dtype = "f32";  // exact fp32 scales (codes were fitted with them)
  nlohmann::json calib = nullptr;
  if (opt.method == "gptq")
    calib = {{"text", rep.calib_from_model ? "sampled from the model" : opt.calib.text_path},
             {"nsamples", rep.calib_samples},
             {"seqlen", rep.calib_samples ? rep.calib_tokens / rep.calib_samples : 0}};
  wopt.qforge_metadata = {{"method", opt.method},
                          {"scheme", std::string(opt.scheme.name)},
                          {"clip", opt.clip},
                          {"act_order", opt.act_order},
                          {"damp", opt.damp},
                          {"calibration", calib},
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
  Status st = io::WriteCompressedTensors(tmp, src, passthrough, col.entries, wopt);
  if (st.ok()) st = ReplaceFolder(tmp, out);
  if (!st.ok()) {
    fs::remove_all(tmp, ec);
    return st.error();
  }
  rep.seconds_write = Seconds(t1);
  for (const auto& e : fs::directory_iterator(out))
    if (e.is_regular_file()) rep.output_bytes += e.file_size();
  rep.peak_rss_bytes = PeakRssBytes();
  return rep;
}

}  // namespace qf::methods
