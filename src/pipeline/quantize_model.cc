// Streaming quantization driver (see quantize_model.h). RTN: each linear is read as fp32,
// rounded through the scheme's Grid, and kept only as codes + parameters until the write.
#include "pipeline/quantize_model.h"

#include <omp.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <cmath>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/atomic_file.h"
#include "core/dist.h"
#include "core/sysinfo.h"
#include "formats/quantize.h"
#include "io/compressed_tensors.h"
#include "io/safetensors.h"
#include "methods/gptq.h"
#include "methods/hessian.h"
#include "methods/observer.h"
#include "methods/smoothing.h"
#include "model/config.h"
#include "model/decoder_walk.h"
#include "model/model.h"
#include "text/tokenizer.h"

namespace qf::pipeline {
using methods::ActOrder;
using methods::AwqScales;
using methods::AwqSearch;
using methods::ChannelObserver;
using methods::FoldIntoNorm;
using methods::FoldIntoRows;
using methods::Gptq;
using methods::GptqOptions;
using methods::GptqStats;
using methods::HessianAccumulator;
using methods::SmoothQuantScales;

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

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

LinearReport Distortion(const std::string& module, std::span<const float> w, int64_t n, int64_t k,
                        const std::vector<float>& deq) {
  LinearReport r;
  r.module = module;
  r.n = n;
  r.k = k;
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

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void RecordPeakRss(RssWatch& watch, QuantizeReport& rep) {
  const RssBytes peaks = watch.Peaks();
  rep.peak_rss_bytes = PeakRssBytes();
  rep.peak_rss_anon_bytes = peaks.anon;
  rep.peak_rss_file_bytes = peaks.file;
}

// One linear's rounding, split by rows over the ranks (core/dist.h) where rows are independent
// (per-channel and group schemes): each rank runs solve(r0, r1) on its share, dealt in units of
// `unit` rows, and every rank then holds every row. solve must give a row the same bits in any
// unit-aligned slice (GPTQ: its sweep's row chunks; RTN: rows alone). One rank, a per-tensor
// scheme or fewer units than ranks: solve(0, n) everywhere. `summed` (a per-row sum the solve
// reports, e.g. GPTQ's loss) becomes the sum over the ranks when rows were split.
Result<QuantizedTensor> SolveRowsAcrossRanks(
    int64_t n, int64_t k, int64_t unit, const QuantScheme& scheme,
    const std::function<Result<QuantizedTensor>(int64_t, int64_t)>& solve,
    double* summed = nullptr) {
  if (scheme.granularity == Granularity::kTensor || !dist::SplitsRows(n, unit)) return solve(0, n);
  const auto [r0, r1] = dist::ShareRows(n, unit);
  QF_ASSIGN(QuantizedTensor part, solve(r0, r1));
  if (summed) {
    std::vector<double> v{*summed};
    dist::SumInRankOrder(v);
    *summed = v[0];
  }
  const auto per_row = [&](size_t size) { return int64_t(size) / (r1 - r0); };
  const int64_t sets = per_row(part.scales.size());
  QuantizedTensor q;
  q.scheme = part.scheme;
  q.fallback = part.fallback;
  q.rows = n;
  q.cols = k;
  q.codes.resize(size_t(n * k));
  std::copy(part.codes.begin(), part.codes.end(), q.codes.begin() + r0 * k);
  q.scales.resize(size_t(n * sets));
  std::copy(part.scales.begin(), part.scales.end(), q.scales.begin() + r0 * sets);
  dist::AllGatherRows(q.codes, n, unit);
  dist::AllGatherRows(q.scales, n, unit);
  if (!part.zeros.empty()) {
    q.zeros.resize(size_t(n * sets));
    std::copy(part.zeros.begin(), part.zeros.end(), q.zeros.begin() + r0 * sets);
    dist::AllGatherRows(q.zeros, n, unit);
  }
  return q;
}

// Accumulates what the write step needs, whichever method produced the codes. Linears are held
// while a method may still change them (QAT); Finish() then encodes them into the spill (the
// writing rank of a compressed-tensors output) or drops them (other ranks, GGUF outputs whose
// writer took them), so finished blocks do not stay in memory.
struct Collected {
  std::vector<std::unique_ptr<QuantizedTensor>> tensors;  // held
  std::vector<io::QuantizedLinearEntry> entries;          // of the held tensors
  std::vector<io::EncodedLinear> finished;                // in order of Finish()
  std::optional<io::TensorSpill> spill;
  bool with_activations = false;             // the output's format (compressed-tensors)
  std::map<std::string, bool> weight_names;  // "<module>.weight" of every quantized linear
  double bits = 0;                           // stored bits of every quantized linear
  double seconds = 0;                        // spent in Finish (encoding, the spill's writes)

  std::map<std::string, float> input_scales;  // module -> static activation scale
  // Tensors a transform changed (norm weights), written instead of the source's bytes.
  std::map<std::string, std::pair<DType, std::vector<std::byte>>> replaced;

  void Add(const std::string& weight_name, QuantizedTensor q) {
    bits += StoredBits(q);
    tensors.push_back(std::make_unique<QuantizedTensor>(std::move(q)));
    entries.push_back({ModuleOf(weight_name), tensors.back().get()});
    weight_names[weight_name] = true;
  }
  void AddNorm(const std::string& name, const std::vector<float>& v, DType dtype);
  // The held linears are final: to the spill (fp32 scales, as the codes were fitted) or gone.
  Status Finish() {
    const auto t0 = Clock::now();
    for (const io::QuantizedLinearEntry& e : entries) {
      finished.push_back({e.module, e.q->scheme});
      if (!spill) continue;
      QF_ASSIGN(std::vector<io::EncodedTensor> ts,
                io::EncodeLinear(e, with_activations, DType::kF32, input_scales));
      for (io::EncodedTensor& t : ts) QF_TRY(spill->Add(t.name, t.dtype, t.shape, t.bytes));
    }
    tensors.clear();
    entries.clear();
    seconds += Seconds(t0);
    return Status::Ok();
  }
};

// The clip search of the method's solver: GPTQ's (quant.py mse), AWQ's grid for AWQ + RTN,
// else qforge's RTN default.
FitOptions Fit(const Method& method, const QuantizeOptions& opt) {
  FitOptions fit;
  if (!opt.clip) return fit;
  if (method.solver == Solver::kGptq) {
    fit.clip = ClipSearch::Gptq();
  } else if (method.transform == Transform::kAwq) {
    fit.clip = ClipSearch::Awq();
  } else {
    fit.clip = ClipSearch::Rtn();
  }
  return fit;
}

// RTN: every linear independently, one tensor in memory at a time.
Status RunRtn(const io::TensorStore& store, const model::ModelConfig& cfg, const Method& method,
              const QuantizeOptions& opt, const LayerProgress& progress, QuantizeReport& rep,
              Collected& col) {
  const FitOptions fit = Fit(method, opt);
  for (int64_t l = 0; l < cfg.layers; ++l) {
    for (const model::LinearId id : model::kBlockLinears) {
      const std::string name =
          model::LayerTensorName(model::WeightPattern(*cfg.family->names, id), l);
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
      rep.linears.push_back(Distortion(ModuleOf(name), w, n, k, deq));
      rep.linears.back().scheme = std::string(q.scheme.name);
      rep.linears.back().fallback = q.fallback;
      if (opt.act) rep.linears.back().act = std::string(opt.act->name);  // dynamic rows only
      rep.quantized_params += n * k;
      col.Add(name, std::move(q));
    }
    QF_TRY(col.Finish());
    if (progress) progress(l + 1, cfg.layers);
  }
  return Status::Ok();
}

bool NeedsCalibration(const Method& m, const QuantizeOptions& opt) {
  return m.transform != Transform::kNone || m.solver == Solver::kGptq || m.qat ||
         (opt.act && !opt.act->dynamic);
}

void Collected::AddNorm(const std::string& name, const std::vector<float>& v, DType dtype) {
  std::vector<std::byte> bytes(v.size() * Info(dtype).bytes);
  ConvertFromF32(dtype, v.data(), v.size(), bytes.data());  // values are exact in dtype
  replaced[name] = {dtype, std::move(bytes)};
}

// Calibrated methods, one decoder block at a time. The block's inputs for every calibration
// window are held (X[S, T, H]). With a transform, one pass over the fp block observes the input
// of each group of linears that share an input (q/k/v, o, gate/up, down), and the chosen scales
// are folded into the block. Then each group, in order (true sequential), is observed with the
// earlier groups already quantized, solved (RTN or GPTQ) and installed with its activation
// quantization; the quantized block's outputs become the next block's inputs.
// With `external`, each linear goes to that solver instead (no transform; `lm_head` adds the
// output projection at the end); with QAT its grids are trained and handed to `write`.
Status RunCalibrated(const fs::path& src, const io::TensorStore& store,
                     const model::ModelConfig& cfg, const Method& method,
                     const QuantizeOptions& opt, const LayerProgress& progress, QuantizeReport& rep,
                     Collected& col, const LinearSolver* external = nullptr, bool lm_head = false,
                     const BlocksWriter* write = nullptr) {
  const model::TensorNames& nm = *cfg.family->names;
  auto t0 = Clock::now();
  // The tokenizer is needed for a calibration text; sampling from the model only uses its BOS.
  std::unique_ptr<text::Tokenizer> tok;
  if (!opt.calib.text_path.empty()) {
    QF_ASSIGN(tok, text::LoadTokenizer(src));
  } else if (auto t = text::LoadTokenizer(src); t.ok()) {
    tok = std::move(*t);
  }
  CalibrationOptions copt = opt.calib;
  copt.seqlen = std::min(copt.seqlen, cfg.max_position);
  std::optional<model::Model> sampler;
  if (copt.text_path.empty()) {
    QF_ASSIGN(model::Model m, model::Model::Load(src));
    sampler.emplace(std::move(m));
  }
  QF_ASSIGN(const auto windows, CalibrationWindows(tok.get(), sampler ? &*sampler : nullptr, copt));
  sampler.reset();
  rep.calib_from_model = copt.text_path.empty();
  rep.calib_samples = int64_t(windows.size());
  rep.calib_tokens = rep.calib_samples * copt.seqlen;
  rep.seconds_calib_data = Seconds(t0);
  rep.ranks = dist::Size();

  // S windows of T tokens: under mpirun this rank's share [w0, w0 + S) of them (core/dist.h);
  // each rank walks only its windows, and every observer is folded across the ranks (in rank
  // order) before anything is chosen from it, so every rank solves from the same statistics.
  const auto [w0, w1] = dist::Share(rep.calib_samples);
  const int64_t S = w1 - w0, T = copt.seqlen, H = cfg.hidden, F = cfg.intermediate;
  const int64_t qd = cfg.q_dim();
  std::vector<float> x(static_cast<size_t>(S * T * H));
  {
    QF_ASSIGN(std::vector<float> embed, model::ReadTensorF32(store, nm.embed, {cfg.vocab_size, H}));
    for (int64_t s = 0; s < S; ++s) {
      const std::span<const int32_t> ids(windows[size_t(w0 + s)].data(), size_t(T));
      for (const int32_t id : ids)
        if (id < 0 || id >= cfg.vocab_size)
          return Err("calibration token {} outside the vocabulary", id);
      model::Embed(embed, H, ids, x.data() + s * T * H);
    }
  }
  // QAT's targets: the fp model's residual stream [S, T, H], walked through the fp blocks.
  std::vector<float> x_fp;
  if (method.qat) x_fp = x;
  std::vector<float> cos, sin;
  model::RopeTables(cfg, T, &cos, &sin);
  std::vector<float> att(static_cast<size_t>(S * T * qd));
  // SwiGLU outputs of all windows [S, T, F], when that is at most kMaxGCacheBytes: the
  // propagation then reuses them instead of recomputing gate/up (a third of the forward work).
  constexpr int64_t kMaxGCacheBytes = int64_t{1} << 30;
  std::vector<float> g_cache;
  if (S * T * F * int64_t(sizeof(float)) <= kMaxGCacheBytes)
    g_cache.resize(static_cast<size_t>(S * T * F));
  // Per-thread walk buffers for one window (x: the transform pass's copy of the residual
  // stream; att comes from the per-window store, g from g_cache when there is one).
  using Scratch = model::WalkScratch;
  const int threads = std::max(1, omp_get_max_threads());
  std::vector<Scratch> scratch(static_cast<size_t>(threads), Scratch(cfg, T));
  GptqOptions gopt;
  gopt.damp = opt.damp;
  gopt.factor_across_ranks = dist::Size() > 1;  // every rank makes each factor
  gopt.act_order = opt.act_order ? ActOrder::kDescending : ActOrder::kOff;
  gopt.fit = Fit(method, opt);
  const FitOptions rtn_fit = Fit(method, opt);
  // Norms changed by a transform are written in their own dtype when it is a 16/32-bit float.
  DType norm_dtype = store.Find(model::LayerTensorName(nm.attn_norm, 0))->dtype;
  if (norm_dtype != DType::kBF16 && norm_dtype != DType::kF16) norm_dtype = DType::kF32;

  // A norm trained by QAT (--block-norms, --e2e-norms, --e2e-final-norm): rounded in place to the
  // dtype it is written in, and written instead of the source's (compressed-tensors and GGUF).
  auto keep_trained_norm = [&](const std::string& name, std::vector<float>& v) {
    for (float& x : v) x = RoundScaleForStorage(x, norm_dtype);
    rep.trained_norms[name] = v;
    col.AddNorm(name, v, norm_dtype);
  };
  auto keep_trained_block_norms = [&](int64_t l, model::Layer& layer) {
    keep_trained_norm(model::LayerTensorName(nm.attn_norm, l), layer.attn_norm);
    keep_trained_norm(model::LayerTensorName(nm.ffn_norm, l), layer.ffn_norm);
  };

  // What one group's input feeds: a Hessian (GPTQ, AWQ's loss) and/or channel statistics.
  struct Observed {
    std::optional<HessianAccumulator> hess;
    std::optional<ChannelObserver> chan;
    Observed(int64_t k, bool hessian, bool channels) {
      if (hessian) hess.emplace(k);
      if (channels) chan.emplace(k);
    }
    void Add(const float* in, int64_t m) {
      if (hess) hess->Add(in, m);
      if (chan) chan->Add(in, m);
    }
  };
  auto window_x = [&](int64_t s) { return x.data() + s * T * H; };
  auto window_att = [&](int64_t s) { return att.data() + s * T * qd; };
  // down's input: kept for the propagation when the cache is allowed, else recomputed there.
  auto window_g = [&](int64_t s, Scratch& sc) {
    return g_cache.empty() ? sc.g.data() : g_cache.data() + s * T * F;
  };
  using Stage = model::BlockStage;
  using ByStage = std::array<Observed*, model::kBlockStages>;
  // Where one window's walk formed each observed input (its buffers stay until the batch of
  // windows in flight is fed to the observers).
  struct Recorder final : model::WalkHooks {
    std::array<const float*, model::kBlockStages> at{};
    void OnInput(const model::WalkPoint& p, const float* in, int64_t, int64_t) override {
      at[size_t(p.stage)] = in;
    }
  };
  // Runs `walk(s, scratch, hooks)` for every window, `threads` windows at a time (one per
  // thread, kernels single-threaded inside), then feeds each stage's observer what the walk
  // showed, in window order and then stage order: statistics do not depend on the thread count.
  auto observe = [&](const ByStage& obs, auto walk) {
    uint32_t stages = 0;
    for (size_t st = 0; st < obs.size(); ++st)
      if (obs[st]) stages |= model::StageBit(Stage(st));
    std::vector<Recorder> rec(static_cast<size_t>(threads));
    for (int64_t s0 = 0; s0 < S; s0 += threads) {
      const int64_t n = std::min<int64_t>(threads, S - s0);
      auto tf = Clock::now();
#pragma omp parallel for num_threads(threads) schedule(static, 1)
      for (int64_t i = 0; i < n; ++i) {
        Recorder& r = rec[size_t(i)];
        r = Recorder{};
        r.stages = stages;
        walk(s0 + i, scratch[size_t(i)], r);  // one buffer set per window in flight
      }
      rep.seconds_forward += Seconds(tf);
      tf = Clock::now();
      for (int64_t i = 0; i < n; ++i)
        for (size_t st = 0; st < obs.size(); ++st)
          if (obs[st]) {
            QF_CHECK(rec[size_t(i)].at[st], "stage {} not reached", st);
            obs[st]->Add(rec[size_t(i)].at[st], T);
          }
      rep.seconds_statistics += Seconds(tf);
    }
    const auto tr = Clock::now();
    for (Observed* ob : obs) {
      if (ob && ob->hess) ob->hess->ReduceAcrossRanks();
      if (ob && ob->chan) ob->chan->ReduceAcrossRanks();
    }
    rep.seconds_reduce += Seconds(tr);
  };
  // A window's walk over `span` of block l (on a copy of its residual stream with copy_x); the
  // scratch's layout keeps all four stage inputs alive until a span ending at kMlpOut returns.
  auto walk_block = [&](const model::Layer& layer, int64_t l, model::BlockSpan span, bool copy_x) {
    return [&, l, span, copy_x](int64_t s, Scratch& sc, model::WalkHooks& hooks) {
      float* xw = window_x(s);
      if (copy_x) xw = std::copy_n(xw, T * H, sc.x.data()) - T * H;
      const model::KvSlot kv = sc.Slot(cos.data(), sin.data());
      model::WalkBlock(cfg, layer, l, sc.Buffers(xw, window_att(s), window_g(s, sc)), T, {&kv, 1},
                       span, &hooks);
    };
  };
  auto only = [](Stage st, Observed& ob) {
    ByStage obs{};
    obs[size_t(st)] = &ob;
    return obs;
  };

  // End-to-end tuning needs every block afterwards: the blocks and their tensors are kept.
  const bool e2e = method.qat && opt.e2e_epochs > 0;
  std::vector<model::Layer> kept_layers;
  std::vector<std::array<QuantizedTensor*, 7>> kept_tensors;
  // The same for linears stored as ggml blocks (their frozen blocks, by weight name).
  std::vector<std::array<methods::GgmlBlocks*, 7>> kept_ggml;
  std::vector<std::pair<std::string, std::unique_ptr<methods::GgmlBlocks>>> ggml_held;
  for (int64_t l = 0; l < cfg.layers; ++l) {
    QF_ASSIGN(model::Layer layer, model::ReadLayer(store, cfg, l, nullptr));
    auto module = [&](const char* pattern) { return ModuleOf(model::LayerTensorName(pattern, l)); };
    if (method.qat) {
      // The fp block's outputs on the fp stream: this block's targets, the next block's inputs.
      observe(ByStage{}, [&](int64_t s, Scratch& sc, model::WalkHooks& hooks) {
        const model::KvSlot kv = sc.Slot(cos.data(), sin.data());
        model::WalkBlock(cfg, layer, l, sc.Buffers(x_fp.data() + s * T * H), T, {&kv, 1}, {},
                         &hooks);
      });
    }
    // QAT's starting point per linear (kBlockLinears order): its rounding in `col`, the latent
    // weights (the fp weights after RTN, GPTQ's result after GPTQ) and its report line.
    struct QatStart {
      QuantizedTensor* tensor = nullptr;          // a grid (held by col)
      const GgmlBlockType* block_type = nullptr;  // or ggml blocks
      std::vector<std::byte> blocks;
      std::vector<float> latent, fp;
      size_t report = 0;
      std::string name;  // of the weight
    };
    std::array<QatStart, 7> qat_start;
    // Records linear `id`'s start: its rounding (a grid just added to `col`, or ggml blocks),
    // `solved` its values.
    auto keep_start = [&](model::LinearId id, const std::string& name, const model::Linear& lin,
                          const std::vector<float>& solved) -> QatStart& {
      QatStart& qs = qat_start[size_t(id)];
      qs.fp.assign(lin.weight.begin(), lin.weight.end());
      qs.latent = method.solver == Solver::kGptq ? solved : qs.fp;
      qs.report = rep.linears.size() - 1;
      qs.name = name;
      return qs;
    };
    // The true-sequential walks below update x in place (o's residual); QAT trains on the
    // block's inputs and then walks the whole block again from them.
    std::vector<float> x_in;
    if (method.qat) x_in = x;

    if (method.transform != Transform::kNone) {
      // One pass over the fp block: inputs of q/k/v, o, gate/up and down.
      const bool awq = method.transform == Transform::kAwq;
      const bool v_to_o = awq && layer.v.n == layer.o.k;  // AWQ's v → o (no GQA)
      Observed o_attn(H, awq, true), o_vo(qd, v_to_o, v_to_o), o_mlp(H, awq, true),
          o_down(F, awq, true);
      observe(ByStage{&o_attn, v_to_o ? &o_vo : nullptr, &o_mlp, &o_down},
              walk_block(layer, l, {Stage::kAttnIn, Stage::kMlpOut}, /*copy_x=*/true));
      auto choose = [&](const std::string& input, Observed& ob,
                        std::vector<model::Linear*> next) -> Result<std::vector<float>> {
        TransformReport tr;
        tr.input = input;
        tr.method = std::string(TransformName(method.transform));
        std::vector<const model::Linear*> cnext(next.begin(), next.end());
        std::vector<float> s;
        if (awq) {
          QF_ASSIGN(AwqSearch a, AwqScales(*ob.chan, *ob.hess, cnext, opt.scheme));
          tr.ratio = a.ratio;
          tr.duo = a.duo;
          tr.loss = a.loss;
          tr.loss_plain = a.loss_plain;
          s = std::move(a.scales);
        } else {
          s = SmoothQuantScales(*ob.chan, cnext, opt.alpha);
          tr.ratio = opt.alpha;
        }
        tr.scale_min = *std::min_element(s.begin(), s.end());
        tr.scale_max = *std::max_element(s.begin(), s.end());
        rep.transforms.push_back(tr);
        return s;
      };
      const auto ts = Clock::now();
      // All scales are chosen on the fp block, then folded (AutoAWQ's order).
      QF_ASSIGN(const auto s_attn,
                choose(module(nm.attn_norm), o_attn, {&layer.q, &layer.k, &layer.v}));
      std::vector<float> s_o;
      if (v_to_o) {
        QF_ASSIGN(s_o, choose(module(nm.v), o_vo, {&layer.o}));
      }
      QF_ASSIGN(const auto s_mlp, choose(module(nm.ffn_norm), o_mlp, {&layer.gate, &layer.up}));
      QF_ASSIGN(const auto s_down, choose(module(nm.up), o_down, {&layer.down}));
      model::Linear* attn_next[] = {&layer.q, &layer.k, &layer.v};
      FoldIntoNorm(layer.attn_norm, attn_next, s_attn, norm_dtype);
      model::Linear* o_next[] = {&layer.o};
      if (v_to_o) FoldIntoRows(layer.v, o_next, s_o);
      model::Linear* mlp_next[] = {&layer.gate, &layer.up};
      FoldIntoNorm(layer.ffn_norm, mlp_next, s_mlp, norm_dtype);
      model::Linear* down_next[] = {&layer.down};
      FoldIntoRows(layer.up, down_next, s_down);
      col.AddNorm(model::LayerTensorName(nm.attn_norm, l), layer.attn_norm, norm_dtype);
      col.AddNorm(model::LayerTensorName(nm.ffn_norm, l), layer.ffn_norm, norm_dtype);
      rep.seconds_quantize += Seconds(ts);
    }

    // Quantizes the linears sharing one input, installing the dequantized weights and the
    // activation quantization in `layer` so the stages after it run quantized.
    auto solve = [&](Observed& ob, std::span<const model::LinearId> group) -> Status {
      ActQuant aq;
      if (opt.act) {
        aq.scheme = *opt.act;
        if (!opt.act->dynamic) aq.scale = ActScaleFromAbsMax(*opt.act, ob.chan->tensor_absmax());
      }
      std::vector<float> importance;
      FitOptions fit = rtn_fit;
      if (fit.clip && ob.chan) {
        importance = ob.chan->MeanSquare();
        fit.importance = importance;
      }
      std::optional<methods::GptqFactor> factor;  // GPTQ: the group's, made on first use
      for (const model::LinearId id : group) {
        model::Linear* lin = &layer[id];
        const std::string name = model::LayerTensorName(model::WeightPattern(nm, id), l);
        QF_ASSIGN(const bool ignored, Ignored(ModuleOf(name), opt.ignore));
        if (ignored) {
          rep.kept.push_back(ModuleOf(name));
          continue;  // stays fp32, without activation quantization
        }
        const auto ts = Clock::now();
        if (external) {
          QF_ASSIGN(Solved sv,
                    (*external)(SolveRequest{name, lin->weight, lin->n, lin->k, *ob.hess}));
          rep.seconds_quantize += Seconds(ts);
          rep.linears.push_back(
              Distortion(ModuleOf(name), lin->weight, lin->n, lin->k, sv.weights));
          rep.quantized_params += lin->n * lin->k;
          if (method.qat && sv.block_type) {
            QatStart& qs = keep_start(id, name, *lin, sv.weights);
            qs.block_type = sv.block_type;
            qs.blocks = std::move(sv.blocks);
          }
          lin->weight.assign(sv.weights.begin(), sv.weights.end());
          continue;
        }
        GptqStats st;
        QuantizedTensor qt;
        // Rows spread over the ranks under mpirun; the GPTQ loss summed over them.
        const std::span<const float> w = lin->weight;
        const int64_t k = lin->k;
        if (method.solver == Solver::kGptq) {
          if (!factor) {  // once per group: its linears share the input, hence the Hessian
            if (ob.hess->samples() == 0)
              return Err("gptq: no calibration samples reached {}", ModuleOf(name));
            QF_ASSIGN(const ResolvedScheme rs, ResolveScheme(opt.scheme, lin->n, k));
            QF_ASSIGN(factor, methods::FactorHessian(ob.hess->Take(), k,
                                                     ColumnsPerParam(rs.scheme, k), gopt));
          }
          QF_ASSIGN(qt, SolveRowsAcrossRanks(
                            lin->n, k, methods::kGptqRowChunk, opt.scheme,
                            [&](int64_t r0, int64_t r1) {
                              return Gptq(w.subspan(size_t(r0 * k)).first(size_t((r1 - r0) * k)),
                                          r1 - r0, k, *factor, opt.scheme, gopt, &st);
                            },
                            &st.loss));
        } else {
          QF_ASSIGN(qt, SolveRowsAcrossRanks(lin->n, k, 1, opt.scheme, [&](int64_t r0, int64_t r1) {
                      return Quantize(w.subspan(size_t(r0 * k)).first(size_t((r1 - r0) * k)),
                                      r1 - r0, k, opt.scheme, fit);
                    }));
        }
        rep.seconds_quantize += Seconds(ts);
        QF_ASSIGN(std::vector<float> deq, Dequantize(qt));
        LinearReport lr = Distortion(ModuleOf(name), lin->weight, qt.rows, qt.cols, deq);
        lr.scheme = std::string(qt.scheme.name);
        lr.fallback = qt.fallback;
        lr.gptq_loss = st.loss;
        if (aq.enabled()) {
          lr.act = std::string(aq.scheme->name);
          lr.input_scale = aq.scale;
          if (!aq.scheme->dynamic) col.input_scales[ModuleOf(name)] = aq.scale;
        }
        rep.linears.push_back(lr);
        rep.quantized_params += lin->n * lin->k;
        col.Add(name, std::move(qt));
        if (method.qat) keep_start(id, name, *lin, deq).tensor = col.tensors.back().get();
        // Later stages run on the quantized values, as fp32.
        lin->weight.assign(deq.begin(), deq.end());
        lin->act = aq;
      }
      return Status::Ok();
    };
    const bool hessian = method.solver == Solver::kGptq || external;
    const bool channels =
        (opt.act && !opt.act->dynamic) || (method.solver == Solver::kRtn && opt.clip);
    // True sequential: each group's input is formed with the groups before it quantized,
    // resuming from the last input kept whole (x, the attention output att).
    struct Group {
      Stage input, from;
      std::vector<model::LinearId> linears;
    };
    using Id = model::LinearId;
    const Group groups[] = {{Stage::kAttnIn, Stage::kAttnIn, {Id::kQ, Id::kK, Id::kV}},
                            {Stage::kAttnOut, Stage::kAttnIn, {Id::kO}},
                            {Stage::kMlpIn, Stage::kAttnOut, {Id::kGate, Id::kUp}},
                            {Stage::kMlpOut, Stage::kMlpIn, {Id::kDown}}};
    for (const Group& grp : groups) {
      Observed ob(layer[grp.linears[0]].k, hessian, channels);
      observe(only(grp.input, ob), walk_block(layer, l, {grp.from, grp.input}, false));
      QF_TRY(solve(ob, grp.linears));
    }
    if (method.qat) {
      // Block-AP: train the block's linears from their rounding on the quantized stream's
      // inputs against the fp block's outputs, then freeze the codes in place.
      const auto tq = Clock::now();
      methods::QatOptions qo = opt.qat;
      qo.seed = opt.seed;
      // Trains the block's linears (QatLinear or GgmlQatLinear), then freezes each (`freeze(i)`
      // returns the values it holds) into the block and the report.
      auto train_block = [&](auto& trainers, auto freeze) -> Result<methods::QatBlockReport> {
        std::array<std::remove_reference_t<decltype(trainers[0])>*, 7> train{};
        for (size_t i = 0; i < 7; ++i)
          if (qat_start[i].tensor || qat_start[i].block_type) train[i] = &trainers[i];
        QF_ASSIGN(methods::QatBlockReport r,
                  methods::TrainBlock(cfg, layer, l, train, x_in.data(), x_fp.data(),
                                      rep.calib_samples, T, cos.data(), sin.data(), qo,
                                      [&](int64_t step, int64_t total, double loss) {
                                        if (opt.qat_progress)
                                          opt.qat_progress(l, step, total, loss);
                                      }));
        for (size_t i = 0; i < 7; ++i) {
          if (!train[i]) continue;
          QF_ASSIGN(const std::vector<float> deq, freeze(i));
          const QatStart& qs = qat_start[i];
          LinearReport& lr = rep.linears[qs.report];
          const LinearReport d = Distortion(lr.module, qs.fp, lr.n, lr.k, deq);
          lr.rel_mse = d.rel_mse;
          lr.snr_db = d.snr_db;
          layer[model::kBlockLinears[i]].weight.assign(deq.begin(), deq.end());
        }
        return r;
      };
      methods::QatBlockReport qr;
      if (external) {  // the solver's ggml blocks, to `write`
        if (!write) return Err("qat: no writer for trained ggml blocks");
        std::array<methods::GgmlQatLinear, 7> gl;
        for (size_t i = 0; i < 7; ++i) {
          const QatStart& qs = qat_start[i];
          if (!qs.block_type) continue;
          const model::Linear& lin = layer[model::kBlockLinears[i]];
          QF_ASSIGN(gl[i], methods::GgmlQatLinear::Init(*qs.block_type, qs.blocks, lin.n, lin.k,
                                                        qs.latent));
        }
        QF_ASSIGN(qr, train_block(gl, [&](size_t i) -> Result<std::vector<float>> {
                    std::vector<std::byte> frozen = gl[i].Freeze();
                    QF_ASSIGN(std::vector<float> deq, (*write)(qat_start[i].name, frozen));
                    qat_start[i].blocks = std::move(frozen);  // the end-to-end pass starts here
                    return deq;
                  }));
      } else {  // grids held by col
        std::array<methods::QatLinear, 7> ql;
        for (size_t i = 0; i < 7; ++i)
          if (qat_start[i].tensor) {
            QF_ASSIGN(ql[i], methods::QatLinear::Init(*qat_start[i].tensor, qat_start[i].latent));
          }
        QF_ASSIGN(qr, train_block(ql, [&](size_t i) {
                    *qat_start[i].tensor = ql[i].Freeze();
                    return Dequantize(*qat_start[i].tensor);
                  }));
      }
      if (qr.norms && !qr.reverted) keep_trained_block_norms(l, layer);
      rep.qat.push_back(std::move(qr));
      rep.seconds_qat += Seconds(tq);
      x = std::move(x_in);
    }
    // The quantized block's outputs feed the next block (after QAT the whole block runs again:
    // the attention outputs and SwiGLU outputs kept so far are the starting rounding's).
    const Stage resume = method.qat        ? Stage::kAttnIn
                         : g_cache.empty() ? Stage::kMlpIn
                                           : Stage::kMlpOut;
    observe(ByStage{}, walk_block(layer, l, {resume, Stage::kBlockOut}, false));
    if (e2e) {
      std::array<QuantizedTensor*, 7> ts{};
      std::array<methods::GgmlBlocks*, 7> gs{};
      for (size_t i = 0; i < 7; ++i) {
        QatStart& qs = qat_start[i];
        ts[i] = qs.tensor;
        if (!qs.block_type) continue;
        const model::Linear& lin = layer[model::kBlockLinears[i]];
        auto g = std::make_unique<methods::GgmlBlocks>(
            methods::GgmlBlocks{qs.block_type, lin.n, lin.k, std::move(qs.blocks)});
        gs[i] = g.get();
        ggml_held.emplace_back(qs.name, std::move(g));
      }
      kept_tensors.push_back(ts);
      kept_ggml.push_back(gs);
      kept_layers.push_back(std::move(layer));
    } else {
      QF_TRY(col.Finish());
    }
    if (progress) progress(l + 1, cfg.layers);
  }
  if (e2e) {
    // Every block's scales (with --e2e-weights its weights and zeros too) through the whole
    // model, on the next-token loss or the KL to the fp model.
    const auto te = Clock::now();
    x = {};
    x_fp = {};
    att = {};
    g_cache = {};
    QF_ASSIGN(const std::vector<float> embed,
              model::ReadTensorF32(store, nm.embed, {cfg.vocab_size, H}));
    QF_ASSIGN(std::vector<float> norm, model::ReadTensorF32(store, nm.final_norm, {H}));
    model::Linear head;
    head.n = cfg.vocab_size;
    head.k = H;
    const std::string head_name =
        store.Find(nm.lm_head) ? std::string(nm.lm_head) : std::string(nm.embed);  // tied
    QF_ASSIGN(head.weight, model::ReadWeightF32(store, head_name, {cfg.vocab_size, H}));
    methods::QatOptions eo = opt.qat;
    eo.epochs = opt.e2e_epochs;
    eo.seed = opt.seed;
    std::vector<model::Layer> fp_layers;  // the KL loss's reference: the source's blocks
    if (eo.e2e_loss != methods::E2eLoss::kNextToken)  // kl, ce+kl
      for (int64_t l = 0; l < cfg.layers; ++l) {
        QF_ASSIGN(model::Layer fl, model::ReadLayer(store, cfg, l, nullptr));
        fp_layers.push_back(std::move(fl));
      }
    QF_ASSIGN(
        methods::QatE2eReport er,
        methods::TuneScalesEndToEnd(
            cfg, kept_layers, kept_tensors, embed, norm, head, windows, cos.data(), sin.data(), eo,
            [&](int64_t step, int64_t total, double loss) {
              if (opt.qat_progress) opt.qat_progress(-1, step, total, loss);
            },
            fp_layers.empty() ? nullptr : &fp_layers, ggml_held.empty() ? nullptr : &kept_ggml));
    if (er.norms && !er.reverted)
      for (int64_t l = 0; l < cfg.layers; ++l) keep_trained_block_norms(l, kept_layers[size_t(l)]);
    if (er.final_norm && !er.reverted) keep_trained_norm(nm.final_norm, norm);
    rep.qat_e2e = std::move(er);
    if (write)  // the tuned blocks, to the caller's file
      for (const auto& [name, g] : ggml_held) {
        QF_ASSIGN(const std::vector<float> held, (*write)(name, g->bytes));
        (void)held;
      }
    QF_TRY(col.Finish());
    rep.seconds_qat += Seconds(te);
  }
  if (external && lm_head) {
    // The output projection, on the final-norm output of the quantized stack.
    const std::string head = cfg.family->names->lm_head;
    QF_ASSIGN(const std::vector<float> norm, model::ReadTensorF32(store, nm.final_norm, {H}));
    QF_ASSIGN(const std::vector<float> w, model::ReadTensorF32(store, head, {cfg.vocab_size, H}));
    Observed o_head(H, true, false);
    observe(only(Stage::kHeadIn, o_head), [&](int64_t s, Scratch& sc, model::WalkHooks& hooks) {
      model::WalkHead(cfg, norm, nullptr, window_x(s), sc.h.data(), T, nullptr, &hooks);
    });
    const auto ts = Clock::now();
    QF_ASSIGN(const Solved sv, (*external)(SolveRequest{head, w, cfg.vocab_size, H, *o_head.hess}));
    rep.seconds_quantize += Seconds(ts);
    rep.linears.push_back(Distortion(ModuleOf(head), w, cfg.vocab_size, H, sv.weights));
    rep.quantized_params += cfg.vocab_size * H;
  }
  return Status::Ok();
}

}  // namespace

Result<Method> ParseMethod(std::string_view name) {
  static constexpr std::pair<std::string_view, Method> kMethods[] = {
      {"rtn", {Transform::kNone, Solver::kRtn}},
      {"gptq", {Transform::kNone, Solver::kGptq}},
      {"awq", {Transform::kAwq, Solver::kRtn}},
      {"awq+rtn", {Transform::kAwq, Solver::kRtn}},
      {"awq+gptq", {Transform::kAwq, Solver::kGptq}},
      {"smoothquant", {Transform::kSmoothQuant, Solver::kRtn}},
      {"smoothquant+rtn", {Transform::kSmoothQuant, Solver::kRtn}},
      {"smoothquant+gptq", {Transform::kSmoothQuant, Solver::kGptq}},
      {"qat", {Transform::kNone, Solver::kRtn, true}},
      {"rtn+qat", {Transform::kNone, Solver::kRtn, true}},
      {"gptq+qat", {Transform::kNone, Solver::kGptq, true}},
      {"awq+qat", {Transform::kAwq, Solver::kRtn, true}},
      {"awq+gptq+qat", {Transform::kAwq, Solver::kGptq, true}},
  };
  for (const auto& [n, m] : kMethods)
    if (n == name) return m;
  return Err(
      "--method {}: unknown (rtn, gptq, awq, smoothquant, awq+gptq, smoothquant+gptq, qat, "
      "gptq+qat, awq+qat, awq+gptq+qat)",
      name);
}

std::string_view TransformName(Transform t) {
  switch (t) {
    case Transform::kNone:
      return "";
    case Transform::kAwq:
      return "awq";
    case Transform::kSmoothQuant:
      return "smoothquant";
  }
  return "";
}

Result<QuantizeReport> RunCalibratedSolver(const fs::path& src, const QuantizeOptions& opt,
                                           bool lm_head, const LinearSolver& solve,
                                           const BlocksWriter& write,
                                           const LayerProgress& progress) {
  QF_ASSIGN(const Method method, ParseMethod(opt.method));
  if (method.transform != Transform::kNone)
    return Err("--method {}: an external solver takes gptq, qat or gptq+qat", opt.method);
  if (method.qat) {
    if (!write) return Err("--method {}: no writer for the trained linears", opt.method);
    QF_TRY(CheckQatOptions(opt.qat, opt.e2e_epochs));
  }
  QF_ASSIGN(model::ModelConfig cfg, model::LoadHfConfig(src));
  QF_TRY(model::CheckUnquantized(src, "quantize"));
  QF_ASSIGN(io::TensorStore store, io::TensorStore::Open(src));
  RssWatch watch;
  QuantizeReport rep;
  Collected col;
  QF_TRY(RunCalibrated(src, store, cfg, method, opt, progress, rep, col, &solve, lm_head,
                       method.qat ? &write : nullptr));
  for (const io::TensorInfo& t : store.tensors()) rep.total_params += t.numel();
  RecordPeakRss(watch, rep);
  return rep;
}

Status CheckQatOptions(const methods::QatOptions& q, int e2e_epochs) {
  if (q.epochs < 0 || q.batch < 1 || !(q.lr >= 0) || !(q.lr_q >= 0) || e2e_epochs < 0)
    return Err("--epochs and --e2e-epochs must be >= 0, --batch >= 1, --lr >= 0");
  if ((q.e2e_weights || q.e2e_norms || q.e2e_final_norm ||
       q.e2e_loss != methods::E2eLoss::kNextToken) &&
      e2e_epochs == 0)
    return Err("--e2e-weights, --e2e-norms, --e2e-final-norm and --e2e-loss need --e2e-epochs N");
  return Status::Ok();
}

Status CheckOptions(const QuantizeOptions& opt) {
  QF_ASSIGN(const Method method, ParseMethod(opt.method));
  if (opt.act_order && method.solver != Solver::kGptq)
    return Err("--act-order applies to GPTQ methods");
  if (!opt.calib.text_path.empty() && !NeedsCalibration(method, opt))
    return Err("--calib: {} with {} needs no calibration data", opt.method,
               opt.act ? "dynamic activations" : "weight-only quantization");
  if (!(opt.alpha >= 0.0 && opt.alpha <= 1.0)) return Err("--alpha must be in [0, 1]");
  if (method.qat) {
    if (!opt.scheme.is_int())
      return Err("--method {}: integer schemes only, not {}", opt.method, opt.scheme.name);
    QF_TRY(CheckQatOptions(opt.qat, opt.e2e_epochs));
  } else if (opt.e2e_epochs != 0) {
    return Err("--e2e-epochs applies to --method qat (or gptq+qat, awq+qat, ...)");
  }
  return Status::Ok();
}

bool NeedsCalibration(const QuantizeOptions& opt) {
  const auto method = ParseMethod(opt.method);
  return method.ok() && NeedsCalibration(*method, opt);
}

namespace {

// QuantizeModel on `src`, the source or its rotated copy (opt.rotate is only recorded).
Result<QuantizeReport> QuantizeFolder(const fs::path& src, const fs::path& out,
                                      const QuantizeOptions& opt, const LayerProgress& progress) {
  QF_ASSIGN(const Method method, ParseMethod(opt.method));
  QF_ASSIGN(model::ModelConfig cfg, model::LoadHfConfig(src));
  QF_TRY(model::CheckUnquantized(src, "quantize"));
  QF_ASSIGN(io::TensorStore store, io::TensorStore::Open(src));
  std::error_code eq_ec;
  if (fs::exists(out) && fs::equivalent(src, out, eq_ec))
    return Err("{}: output folder must differ from the input", out.string());

  // Rank 0 writes: its folder is made first, and finished linears go to a scratch file in it
  // as each block is done. The folder is removed on every error.
  fs::path tmp = out;
  tmp += ".tmp-" + std::to_string(::getpid());
  ScratchFolder scratch;
  RssWatch watch;
  QuantizeReport rep;
  Collected col;
  col.with_activations = opt.act.has_value();
  if (dist::IsRoot()) {
    QF_ASSIGN(scratch, ScratchFolder::Create(tmp));
    QF_ASSIGN(col.spill, io::TensorSpill::Create(tmp));
  }
  if (NeedsCalibration(method, opt)) {
    QF_TRY(RunCalibrated(src, store, cfg, method, opt, progress, rep, col));
  } else {
    QF_TRY(RunRtn(store, cfg, method, opt, progress, rep, col));
  }
  QF_TRY(col.Finish());

  std::vector<io::TensorToWrite> passthrough;
  for (const io::TensorInfo& t : store.tensors()) {
    rep.total_params += t.numel();
    if (col.weight_names.count(t.name)) continue;
    if (const auto it = col.replaced.find(t.name); it != col.replaced.end()) {
      passthrough.push_back({t.name, it->second.first, t.shape, it->second.second});
    } else {
      passthrough.push_back({t.name, t.dtype, t.shape, t.data});
    }
  }
  rep.bits_per_weight = rep.quantized_params ? col.bits / double(rep.quantized_params) : 0.0;
  if (!dist::IsRoot()) {  // rank 0 writes
    RecordPeakRss(watch, rep);
    return rep;
  }

  io::CompressedTensorsWriteOptions wopt;
  wopt.scale_dtype = "f32";  // exact fp32 scales (codes were fitted with them; Finish's encoding)
  wopt.max_shard_bytes = opt.max_shard_bytes;
  nlohmann::json calib = nullptr;
  if (NeedsCalibration(method, opt))
    calib = {{"text", rep.calib_from_model ? "sampled from the model" : opt.calib.text_path},
             {"nsamples", rep.calib_samples},
             {"seqlen", rep.calib_samples ? rep.calib_tokens / rep.calib_samples : 0}};
  wopt.qforge_metadata = {
      {"method", opt.method},
      {"scheme", std::string(opt.scheme.name)},
      {"clip", opt.clip},
      {"activations",
       opt.act ? nlohmann::json(std::string(opt.act->name)) : nlohmann::json(nullptr)},
      {"alpha", method.transform == Transform::kSmoothQuant ? nlohmann::json(opt.alpha)
                                                            : nlohmann::json(nullptr)},
      {"act_order", opt.act_order},
      {"damp", opt.damp},
      {"calibration", calib},
      {"seed", opt.seed},
      {"rotate",
       opt.rotate ? nlohmann::json(std::string(RotateName(*opt.rotate))) : nlohmann::json(nullptr)},
      {"version", QF_VERSION}};
  if (opt.act) wopt.input_activations = io::CtArgsFromActScheme(*opt.act);
  wopt.input_scales = col.input_scales;
  wopt.ignore = {"lm_head"};
  for (const auto& m : rep.kept) wopt.ignore.push_back(m);
  const auto t1 = Clock::now();
  QF_ASSIGN(const std::vector<io::TensorToWrite> encoded, col.spill->Tensors());
  QF_TRY(io::WriteCompressedTensors(tmp, src, passthrough, col.finished, encoded, wopt));
  col.spill.reset();  // its scratch file, unlinked already, goes
  QF_TRY(ReplaceFolder(tmp, out));
  scratch.Release();
  rep.seconds_write = Seconds(t1) + col.seconds;
  for (const auto& e : fs::directory_iterator(out))
    if (e.is_regular_file()) rep.output_bytes += e.file_size();
  RecordPeakRss(watch, rep);
  return rep;
}

}  // namespace

Result<QuantizeReport> QuantizeModel(const fs::path& src, const fs::path& out,
                                     const QuantizeOptions& opt, const LayerProgress& progress) {
  QF_TRY(CheckOptions(opt));
  if (!opt.rotate) return QuantizeFolder(src, out, opt, progress);
  std::error_code ec;
  if (fs::exists(out) && fs::equivalent(src, out, ec))
    return Err("{}: output folder must differ from the input", out.string());
  QF_ASSIGN(const RotatedCopy rotated, RotatedCopy::Make(src, out, *opt.rotate));
  QF_ASSIGN(QuantizeReport rep, QuantizeFolder(rotated.path(), out, opt, progress));
  rep.seconds_rotate = rotated.report().seconds;
  return rep;
}

}  // namespace qf::pipeline
