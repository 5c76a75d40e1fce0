// `qforge quantize MODEL -o OUT --scheme SCHEME`: quantize the linears of a model and write a
// compressed-tensors folder; prints per-tensor distortion, size, time and peak memory.
// Flags are checked (validators, then *FromFlags: exit 2) before the model is opened.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <regex>

#include "common.h"
#include "core/progress.h"
#include "formats/activation.h"
#include "formats/scheme.h"
#include "formats/gguf_mix.h"
#include "io/imatrix.h"
#include "io/safetensors_writer.h"
#include "pipeline/quantize_gguf.h"
#include "pipeline/quantize_model.h"
#include "model/gguf_model.h"

namespace qf::cli {
namespace {

struct QuantizeArgs {
  std::string model, out, scheme = "W4A16", method = "rtn", act;
  double alpha = 0.5;
  int group = 0;  // 0: the scheme's own (the --group validator refuses 0)
  bool clip = false, no_clip = false, act_order = false, alpha_given = false;
  bool pure = false, dry_run = false, allow_requantize = false;  // GGUF
  std::string imatrix;                                           // GGUF
  std::vector<std::string> tensor_types;
  std::string output_type, token_embd_type;
  double damp = 0.01;
  std::string calib;
  int64_t nsamples = 128, seqlen = 512;
  std::vector<std::string> ignore;
  uint64_t seed = 0;
  std::string rotate;          // "", hadamard, hadamard+heads
  std::string max_shard_size;  // compressed-tensors output; empty: 5GB
  methods::QatOptions qat;     // --epochs, --lr, --lr-q, --batch
  int e2e_epochs = 0;
  bool qat_given = false;
  CommonOptions common;
};

// What --scheme takes, for --help and for its error.
std::string SchemeChoices() {
  std::string presets, mixes;
  for (const SchemePreset& p : SchemePresets())
    presets += (presets.empty() ? "" : ", ") + std::string(p.name);
  for (const GgufMix& m : GgufMixTable())
    mixes += (mixes.empty() ? "" : ", ") + std::string(m.name);
  return "a preset (" + presets +
         "), a spec such as int4-g128-asym, int8-channel or fp8-e4m3-channel, or a llama.cpp "
         "GGUF type (" +
         mixes + ")";
}

// "peak RSS 851 MiB (allocated 610 MiB, mapped files 241 MiB)": what a larger model will need
// is the allocated part (it grows with the block and the calibration set); mapped model pages
// are reclaimable.
std::string PeakRssText(const pipeline::QuantizeReport& r) {
  return fmt::format("peak RSS {:.0f} MiB (allocated {:.0f} MiB, mapped files {:.0f} MiB)",
                     double(r.peak_rss_bytes) / (1 << 20),
                     double(r.peak_rss_anon_bytes) / (1 << 20),
                     double(r.peak_rss_file_bytes) / (1 << 20));
}

// ", across 2 ranks 0.31 s" under mpirun (folding the statistics and waiting for the slowest
// rank); the RSS figures are rank 0's.
std::string RanksText(const pipeline::QuantizeReport& r) {
  return r.ranks > 1 ? fmt::format(", across {} ranks {:.2f} s", r.ranks, r.seconds_reduce) : "";
}

std::string SchemeHelp() {
  return "quantization scheme: " + SchemeChoices() + "; GGUF types write -o FILE.gguf";
}

// --scheme: a GGUF mix, a preset or a spec the scheme table has. For int/fp8 specs the parser's
// error names the bad token; anything else is not a scheme at all.
CLI::Validator SchemeFlag() {
  return ValueCheck("", [](const std::string& v) -> std::string {
    if (FindGgufMix(v)) return {};
    const auto s = ParseScheme(v);
    if (s.ok()) return {};
    std::string lower = v;
    for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (lower.rfind("int", 0) == 0 || lower.rfind("fp8", 0) == 0) return s.error().message();
    return fmt::format("'{}' is not a scheme; allowed: {}", v, SchemeChoices());
  });
}

// --act: a row of the activation table, or none.
CLI::Validator ActFlag() {
  std::string names;
  for (const ActScheme& s : ActSchemeTable()) names += std::string(s.name) + ", ";
  names += "none";
  return ValueCheck("", [names](const std::string& v) -> std::string {
    if (v == "none" || ParseActScheme(v).ok()) return {};
    return fmt::format("'{}' is not an activation scheme; allowed: {}", v, names);
  });
}

// --group: the group sizes of the scheme table's group rows.
CLI::Validator GroupFlag() {
  std::vector<int64_t> sizes;
  for (const QuantScheme& s : SchemeTable())
    if (s.granularity == Granularity::kGroup &&
        std::find(sizes.begin(), sizes.end(), s.group_size) == sizes.end())
      sizes.push_back(s.group_size);
  std::sort(sizes.begin(), sizes.end());
  return IntegerOneOf(sizes);
}

// --ignore: a module name, or re:REGEX with a regular expression std::regex compiles.
CLI::Validator IgnoreFlag() {
  return ValueCheck("", [](const std::string& v) -> std::string {
    if (v.rfind("re:", 0) != 0) return {};
    try {
      std::regex re(v.substr(3));
    } catch (const std::regex_error& e) {
      return fmt::format("'{}': bad regular expression ({}); allowed: a module name or re:REGEX", v,
                         e.what());
    }
    return {};
  });
}

// --method *qat: one progress bar per trained block (and one for the end-to-end tuning), with
// the latest loss.
std::function<void(int64_t, int64_t, int64_t, double)> QatProgress(const QuantizeArgs& a) {
  struct State {
    std::unique_ptr<ProgressBar> bar;
    int64_t layer = -2;
  };
  auto st = std::make_shared<State>();
  const bool show = ShowProgress(a.common);
  return [st, show](int64_t layer, int64_t step, int64_t total, double loss) {
    if (layer != st->layer) {
      st->bar = std::make_unique<ProgressBar>(
          layer < 0 ? std::string("qat end to end") : fmt::format("qat layer {}", layer), total,
          show);
      st->layer = layer;
    }
    st->bar->Update(step, fmt::format("loss {:.4g}", loss));
    if (step == total) st->bar.reset();
  };
}

// The end-to-end losses by their --e2e-loss names (one table for the flag and the report).
constexpr std::pair<const char*, methods::E2eLoss> kE2eLosses[] = {
    {"ce", methods::E2eLoss::kNextToken},
    {"kl", methods::E2eLoss::kKlToFp},
    {"ce+kl", methods::E2eLoss::kNextTokenAndKl}};
const char* E2eLossName(methods::E2eLoss l) {
  for (const auto& [name, v] : kE2eLosses)
    if (v == l) return name;
  return "?";
}

// The QAT part of a report: --json's "qat" (per block) and "qat_e2e", or its text lines.
void AddQatJson(const pipeline::QuantizeReport& r, nlohmann::json& j) {
  nlohmann::json qat = nlohmann::json::array();
  for (const auto& q : r.qat)
    qat.push_back({{"layer", q.layer},
                   {"loss", q.loss == methods::BlockLoss::kRelative ? "relative" : "mse"},
                   {"norms", q.norms},
                   {"loss_start", q.loss_start},
                   {"loss_end", q.loss_end},
                   {"epoch_loss", q.epoch_loss},
                   {"step_loss", q.step_loss},
                   {"steps", q.steps},
                   {"reverted", q.reverted},
                   {"seconds", q.seconds}});
  nlohmann::json e2e = nullptr;
  if (const auto& e = r.qat_e2e)
    e2e = {{"loss", E2eLossName(e->loss)},
           {"norms", e->norms},
           {"final_norm", e->final_norm},
           {"loss_start", e->loss_start},
           {"loss_end", e->loss_end},
           {"step_loss", e->step_loss},
           {"steps", e->steps},
           {"reverted", e->reverted},
           {"seconds", e->seconds}};
  j["qat"] = qat;
  j["qat_e2e"] = e2e;
  j["seconds_qat"] = r.seconds_qat;
}
void PrintQat(const pipeline::QuantizeReport& r) {
  for (const auto& q : r.qat)
    std::printf(
        "qat layer %-3lld output %s %.4g -> %.4g (%lld steps%s, %.1f s)\n", (long long)q.layer,
        q.loss == methods::BlockLoss::kRelative ? "relative MSE" : "MSE", q.loss_start, q.loss_end,
        (long long)q.steps, q.reverted ? ", reverted: training ended worse" : "", q.seconds);
  if (const auto& e = r.qat_e2e)
    std::printf("qat end to end%s: %s %.4f -> %.4f nats (%lld steps%s, %.1f s)\n",
                e->final_norm ? (e->norms ? " (norms and final norm too)" : " (final norm too)")
                : e->norms    ? " (norms too)"
                              : "",
                e->loss == methods::E2eLoss::kKlToFp           ? "KL to the fp model"
                : e->loss == methods::E2eLoss::kNextTokenAndKl ? "next-token loss + KL"
                                                               : "next-token loss",
                e->loss_start, e->loss_end, (long long)e->steps,
                e->reverted ? ", reverted: training ended worse" : "", e->seconds);
}

// The QAT flags (--epochs, --lr, --lr-q, --batch, --block-loss, --e2e-*) are given only with a
// QAT method (`methods` names the ones of the output's kind). Their ranges:
// pipeline::CheckQatOptions.
Status CheckQatFlagsGiven(const QuantizeArgs& a, bool qat, std::string_view methods) {
  if (a.qat_given && !qat)
    return Err("--epochs/--lr/--lr-q/--batch/--block-loss/--e2e-* apply to --method {}", methods);
  return Status::Ok();
}

// --rotate MODE (CLI11 checks the value): the rotation, seeded with --seed.
std::optional<pipeline::RotateOptions> RotateFromFlag(const QuantizeArgs& a) {
  return pipeline::RotateFromName(a.rotate, a.seed);  // nullopt without --rotate
}

// The report's line for --rotate (nothing without it).
void PrintRotated(const QuantizeArgs& a, double seconds) {
  if (!a.rotate.empty())
    std::printf("rotated first: norms folded, residual stream by %s (%.2f s)\n", a.rotate.c_str(),
                seconds);
}

// --scheme Q4_K_M etc.: the GGUF options the flags ask for. Every error is a flag error.
Result<pipeline::GgufQuantizeOptions> GgufOptionsFromFlags(const QuantizeArgs& a,
                                                           const GgufMix& mix) {
  const Result<pipeline::Method> method = pipeline::ParseMethod(a.method);
  if (!method.ok() || method->transform != pipeline::Transform::kNone)
    return Err(
        "--method {} does not apply to GGUF types (rtn, optionally with --imatrix, gptq, qat or "
        "gptq+qat)",
        a.method);
  const bool gptq = method->solver == pipeline::Solver::kGptq, qat = method->qat;
  QF_TRY(CheckQatFlagsGiven(a, qat, "qat or gptq+qat"));
  if (qat) QF_TRY(pipeline::CheckQatOptions(a.qat, a.e2e_epochs));  // a flag error here
  if (a.group || a.clip || a.no_clip || a.act_order || !a.act.empty() || a.alpha_given ||
      !a.ignore.empty())
    return Err(
        "--group/--clip/--act-order/--act/--alpha/--ignore apply to compressed-tensors schemes, "
        "not to {}",
        mix.name);
  if (!gptq && !qat && !a.calib.empty())
    return Err(
        "--calib: {} with --method rtn needs no calibration data (an --imatrix file carries it)",
        mix.name);
  if ((gptq || qat) && !a.imatrix.empty())
    return Err("--imatrix does not apply to --method {} (it calibrates on the model's activations)",
               a.method);
  if (!a.dry_run && std::filesystem::path(a.out).extension() != ".gguf")
    return Err("--scheme {} writes a GGUF file: -o must end in .gguf", mix.name);
  if (!a.max_shard_size.empty())
    return Err("--max-shard-size applies to compressed-tensors schemes (a GGUF is one file)");
  pipeline::GgufQuantizeOptions opt;
  opt.mix = &mix;
  opt.ctx.pure = a.pure;
  for (const std::string& t : a.tensor_types) {
    QF_ASSIGN(auto o, ParseTensorTypeOverride(t));
    opt.ctx.overrides.push_back(std::move(o));
  }
  auto type_flag = [](const std::string& flag,
                      const std::string& v) -> Result<std::optional<std::string>> {
    if (v.empty()) return std::optional<std::string>();
    auto o = ParseTensorTypeOverride("x=" + v);  // validates the type name
    if (!o.ok()) return Err("{}: unknown type '{}'", flag, v);
    return std::optional<std::string>(o->second);
  };
  QF_ASSIGN(opt.ctx.output_type, type_flag("--output-tensor-type", a.output_type));
  QF_ASSIGN(opt.ctx.token_embd_type, type_flag("--token-embedding-type", a.token_embd_type));
  opt.dry_run = a.dry_run;
  opt.allow_requantize = a.allow_requantize;
  opt.gptq = gptq;
  opt.qat = qat;
  opt.qat_options = a.qat;
  opt.qat_options.seed = a.seed;
  opt.e2e_epochs = a.e2e_epochs;
  opt.calib = {a.calib, a.nsamples, a.seqlen, a.seed};
  opt.damp = a.damp;
  opt.rotate = RotateFromFlag(a);
  if (opt.rotate && !a.imatrix.empty())
    return Err("--imatrix does not apply with --rotate (it was measured on the unrotated model)");
  return opt;
}

// --scheme Q4_K_M etc.: a llama.cpp GGUF file.
int RunQuantizeGguf(const QuantizeArgs& a, const GgufMix& mix) {
  auto flags = GgufOptionsFromFlags(a, mix);
  if (!flags.ok()) return FailFlags(flags.error());
  pipeline::GgufQuantizeOptions& opt = *flags;
  const bool calibrated = opt.gptq || opt.qat;
  if (calibrated && model::IsGgufFile(a.model))
    return Fail(
        Err("{}: --method {} needs the model folder (config.json + *.safetensors): its "
            "calibration pass runs the fp weights",
            a.model, a.method));
  if (!model::IsGgufFile(a.model))
    if (Status st = model::CheckUnquantized(a.model, "quantize"); !st.ok()) return Fail(st.error());
  if (opt.qat) opt.qat_progress = QatProgress(a);
  if (calibrated && a.calib.empty() && !a.dry_run)
    std::fprintf(stderr,
                 "qforge: warning: no --calib text: calibrating on %lld sequences sampled from the "
                 "model itself\n",
                 (long long)a.nsamples);
  if (!a.imatrix
           .empty()) {  // as llama-quantize: mean x² per column, file and first dataset recorded
    auto im = io::ReadImatrix(a.imatrix);
    if (!im.ok()) return Fail(im.error());
    for (const auto& [name, e] : im->entries) opt.imatrix[name] = io::Importance(e);
    opt.imatrix_file = a.imatrix;
    opt.imatrix_dataset = im->datasets.empty() ? std::string() : im->datasets.front();
    opt.imatrix_chunks = im->chunk_count;
  }
  std::unique_ptr<ProgressBar> pb;
  auto r = pipeline::QuantizeToGguf(a.model, a.out, opt, [&](size_t done, size_t total) {
    if (!pb)
      pb =
          std::make_unique<ProgressBar>("quantize tensors", int64_t(total), ShowProgress(a.common));
    pb->Update(int64_t(done));
  });
  if (pb) pb->Finish();
  if (!r.ok()) return Fail(r.error());
  for (const auto& t : r->tensors)
    if (!t.fallback.empty())
      std::fprintf(stderr, "qforge: note: %s: %s\n", t.name.c_str(), t.fallback.c_str());
  if (a.common.json) {
    nlohmann::json ts = nlohmann::json::array();
    for (const auto& t : r->tensors)
      ts.push_back({{"name", t.name},
                    {"type", t.type},
                    {"shape", t.shape},
                    {"bytes", t.bytes},
                    {"fallback", t.fallback},
                    {"imatrix", t.used_imatrix},
                    {"gptq", t.gptq},
                    {"qat", t.qat},
                    {"rel_mse", t.rel_mse}});
    nlohmann::json j = {{"model", a.model},
                        {"output", a.out},
                        {"scheme", std::string(mix.name)},
                        {"method", a.method},
                        {"dry_run", a.dry_run},
                        {"tensors", ts},
                        {"quantized_params", r->quantized_params},
                        {"total_params", r->total_params},
                        {"bits_per_weight", r->bits_per_weight},
                        {"output_bytes", r->file_bytes},
                        {"rotate", a.rotate},
                        {"seconds_rotate", r->seconds_rotate},
                        {"seconds", r->seconds}};
    if (const auto& c = r->calibrated) {
      j["calib_samples"] = c->calib_samples;
      j["calib_tokens"] = c->calib_tokens;
      j["calib_from_model"] = c->calib_from_model;
      j["seconds_calib_data"] = c->seconds_calib_data;
      j["seconds_forward"] = c->seconds_forward;
      j["seconds_statistics"] = c->seconds_statistics;
      j["ranks"] = c->ranks;
      j["seconds_reduce"] = c->seconds_reduce;
      j["seconds_quantize"] = c->seconds_quantize;
      j["peak_rss_bytes"] = c->peak_rss_bytes;
      j["peak_rss_anon_bytes"] = c->peak_rss_anon_bytes;
      j["peak_rss_file_bytes"] = c->peak_rss_file_bytes;
      if (opt.qat) AddQatJson(*c, j);
    }
    PrintJson(j);
    return 0;
  }
  if (a.dry_run) {
    std::printf("%-32s %-8s %-14s %12s\n", "tensor", "type", "shape", "bytes");
    for (const auto& t : r->tensors) {
      std::string shape;
      for (size_t i = 0; i < t.shape.size(); ++i)
        shape += (i ? "x" : "") + std::to_string(t.shape[i]);
      std::printf("%-32s %-8s %-14s %12llu\n", t.name.c_str(), t.type.c_str(), shape.c_str(),
                  (unsigned long long)t.bytes);
    }
  }
  if (const auto& c = r->calibrated) {
    PrintQat(*c);
    std::printf(
        "calibration: %lld windows, %lld tokens%s; data %.2f s, forward %.2f s, Hessians %.2f "
        "s%s, %s %.2f s%s; %s\n",
        (long long)c->calib_samples, (long long)c->calib_tokens,
        c->calib_from_model ? " sampled from the model" : "", c->seconds_calib_data,
        c->seconds_forward, c->seconds_statistics, RanksText(*c).c_str(),
        opt.gptq ? "GPTQ" : "rounding", c->seconds_quantize,
        opt.qat ? fmt::format(", qat {:.2f} s", c->seconds_qat).c_str() : "",
        PeakRssText(*c).c_str());
  }
  if (!a.dry_run) PrintRotated(a, r->seconds_rotate);
  std::printf("%s %s: %.2f MiB, %.3f bits/weight over %lld quantized of %lld parameters; %.2f s\n",
              a.dry_run ? "would write" : "wrote", a.out.c_str(), double(r->file_bytes) / (1 << 20),
              r->bits_per_weight, (long long)r->quantized_params, (long long)r->total_params,
              r->seconds);
  return 0;
}

// A compressed-tensors --scheme: the options the flags ask for. Every error is a flag error.
Result<pipeline::QuantizeOptions> OptionsFromFlags(const QuantizeArgs& a) {
  if (a.pure || a.dry_run || a.allow_requantize || !a.tensor_types.empty() ||
      !a.output_type.empty() || !a.token_embd_type.empty() || !a.imatrix.empty())
    return Err(
        "--pure/--dry-run/--allow-requantize/--tensor-type/--output-tensor-type/"
        "--token-embedding-type/--imatrix apply to GGUF types (Q4_K_M, ...)");
  auto scheme = ParseScheme(a.scheme);
  if (!scheme.ok()) return scheme.error().Context("--scheme");
  if (a.group != 0) {  // given (the --group validator refuses 0)
    if (!scheme->is_int())
      return Err("--group applies to integer schemes only, not to {}", a.scheme);
    scheme =
        FindScheme(scheme->kind, scheme->bits, scheme->symmetric, Granularity::kGroup, a.group);
    if (!scheme.ok()) return scheme.error().Context("--group");
  }
  pipeline::QuantizeOptions opt;
  opt.scheme = *scheme;
  opt.method = a.method;
  auto act = PresetActivations(a.scheme);
  if (!act.ok()) return act.error().Context("--scheme");
  opt.act = *act;
  if (!a.act.empty()) {
    if (a.act == "none") {
      opt.act.reset();
    } else {
      auto row = ParseActScheme(a.act);
      if (!row.ok()) return row.error().Context("--act");
      opt.act = *row;
    }
  }
  QF_ASSIGN(const pipeline::Method method, pipeline::ParseMethod(a.method));
  if (a.alpha_given && method.transform != pipeline::Transform::kSmoothQuant)
    return Err("--alpha applies to --method smoothquant[+gptq]");
  // (their ranges: CheckOptions below)
  QF_TRY(CheckQatFlagsGiven(a, method.qat, "qat (or gptq+qat, awq+qat, ...)"));
  opt.qat = a.qat;
  opt.e2e_epochs = a.e2e_epochs;
  opt.alpha = a.alpha;
  if (a.clip && a.no_clip) return Err("--clip and --no-clip are exclusive");
  opt.clip = a.clip || (method.ClipsByDefault() && !a.no_clip);
  opt.act_order = a.act_order;
  opt.damp = a.damp;
  opt.calib = {a.calib, a.nsamples, a.seqlen, a.seed};
  opt.ignore = a.ignore;
  opt.seed = a.seed;
  opt.rotate = RotateFromFlag(a);
  if (!a.max_shard_size.empty()) {
    QF_ASSIGN(opt.max_shard_bytes, io::ParseShardSize(a.max_shard_size));
  }
  if (Status st = pipeline::CheckOptions(opt); !st.ok()) return st.error();
  return opt;
}

int RunQuantize(const QuantizeArgs& a) {
  ApplyThreads(a.common);
  if (a.out.empty() && !a.dry_run) return FailFlags(Err("-o OUTPUT is required"));
  if (const GgufMix* mix = FindGgufMix(a.scheme)) return RunQuantizeGguf(a, *mix);
  auto flags = OptionsFromFlags(a);
  if (!flags.ok()) return FailFlags(flags.error());
  pipeline::QuantizeOptions& opt = *flags;
  const QuantScheme& scheme = opt.scheme;
  // Input: the flags are fine; what the files hold decides from here (exit 1).
  if (model::IsGgufFile(a.model))
    return Fail(
        Err("{}: a .gguf source quantizes to a GGUF type (--scheme Q4_K_M, ...); --scheme {} "
            "writes a compressed-tensors folder and needs the model folder",
            a.model, a.scheme));
  if (!std::filesystem::is_directory(a.model))
    return Fail(Err("{}: expected a model folder (config.json + *.safetensors)", a.model));
  if (Status st = model::CheckUnquantized(a.model, "quantize"); !st.ok()) return Fail(st.error());
  if (pipeline::NeedsCalibration(opt) && a.calib.empty())
    std::fprintf(stderr,
                 "qforge: warning: no --calib text: calibrating on %lld sequences sampled from the "
                 "model itself\n",
                 (long long)a.nsamples);
  opt.qat_progress = QatProgress(a);
  std::unique_ptr<ProgressBar> pb;
  auto r = pipeline::QuantizeModel(a.model, a.out, opt, [&](int64_t done, int64_t total) {
    if (!pb) pb = std::make_unique<ProgressBar>("quantize layers", total, ShowProgress(a.common));
    pb->Update(done);
  });
  if (pb) pb->Finish();
  if (!r.ok()) return Fail(r.error());
  // One note per distinct fallback, naming the first module and how many share it.
  std::map<std::string, std::pair<std::string, int>> fallbacks;
  for (const auto& l : r->linears) {
    if (l.fallback.empty()) continue;
    auto& [first, count] = fallbacks[l.fallback];
    if (count++ == 0) first = l.module;
  }
  for (const auto& [why, fc] : fallbacks)
    std::fprintf(stderr, "qforge: note: %s%s: %s\n", fc.first.c_str(),
                 fc.second > 1 ? fmt::format(" and {} more", fc.second - 1).c_str() : "",
                 why.c_str());
  if (a.common.json) {
    nlohmann::json lin = nlohmann::json::array();
    for (const auto& l : r->linears)
      lin.push_back({{"module", l.module},
                     {"scheme", l.scheme},
                     {"fallback", l.fallback},
                     {"shape", {l.n, l.k}},
                     {"rel_mse", l.rel_mse},
                     {"snr_db", l.snr_db},
                     {"activations", l.act},
                     {"input_scale", l.input_scale}});
    nlohmann::json tr = nlohmann::json::array();
    for (const auto& t : r->transforms)
      tr.push_back({{"input", t.input},
                    {"method", t.method},
                    {"ratio", t.ratio},
                    {"duo", t.duo},
                    {"loss", t.loss},
                    {"loss_plain", t.loss_plain},
                    {"scale_min", t.scale_min},
                    {"scale_max", t.scale_max}});
    nlohmann::json j = {{"model", a.model},
                        {"output", a.out},
                        {"scheme", std::string(scheme.name)},
                        {"method", a.method},
                        {"activations", opt.act ? std::string(opt.act->name) : std::string()},
                        {"clip", opt.clip},
                        {"linears", lin},
                        {"transforms", tr},
                        {"kept", r->kept},
                        {"quantized_params", r->quantized_params},
                        {"total_params", r->total_params},
                        {"bits_per_weight", r->bits_per_weight},
                        {"output_bytes", r->output_bytes},
                        {"calib_samples", r->calib_samples},
                        {"calib_tokens", r->calib_tokens},
                        {"calib_from_model", r->calib_from_model},
                        {"seconds_calib_data", r->seconds_calib_data},
                        {"seconds_forward", r->seconds_forward},
                        {"seconds_statistics", r->seconds_statistics},
                        {"ranks", r->ranks},
                        {"seconds_reduce", r->seconds_reduce},
                        {"seconds_quantize", r->seconds_quantize},
                        {"seconds_write", r->seconds_write},
                        {"rotate", a.rotate},
                        {"seconds_rotate", r->seconds_rotate},
                        {"peak_rss_bytes", r->peak_rss_bytes},
                        {"peak_rss_anon_bytes", r->peak_rss_anon_bytes},
                        {"peak_rss_file_bytes", r->peak_rss_file_bytes}};
    AddQatJson(*r, j);
    PrintJson(j);
    return 0;
  }
  for (const auto& t : r->transforms) {
    if (t.method == "awq")
      std::printf("awq %-40s alpha %.2f%s  output error %.4g (RTN %.4g)  s in [%.3g, %.3g]\n",
                  t.input.c_str(), t.ratio, t.duo ? " duo" : "    ", t.loss, t.loss_plain,
                  t.scale_min, t.scale_max);
    else
      std::printf("smoothquant %-40s alpha %.2f  s in [%.3g, %.3g]\n", t.input.c_str(), t.ratio,
                  t.scale_min, t.scale_max);
  }
  PrintQat(*r);
  std::printf("%-44s %-18s %10s %8s %s\n", "module", "scheme", "rel MSE", "SNR dB", "activations");
  for (const auto& l : r->linears)
    std::printf(
        "%-44s %-18s %10.3e %8.2f %s\n", l.module.c_str(), l.scheme.c_str(), l.rel_mse, l.snr_db,
        l.act.empty()
            ? ""
            : (l.input_scale > 0 ? fmt::format("{} scale {:.4g}", l.act, l.input_scale) : l.act)
                  .c_str());
  PrintRotated(a, r->seconds_rotate);
  std::printf("quantized %lld of %lld parameters at %.3f bits/weight (scales and zeros included)\n",
              (long long)r->quantized_params, (long long)r->total_params, r->bits_per_weight);
  if (r->calib_samples)
    std::printf(
        "calibration: %lld windows, %lld tokens%s; data %.2f s, forward %.2f s, statistics %.2f "
        "s%s\n",
        (long long)r->calib_samples, (long long)r->calib_tokens,
        r->calib_from_model ? " sampled from the model" : "", r->seconds_calib_data,
        r->seconds_forward, r->seconds_statistics, RanksText(*r).c_str());
  std::printf("wrote %s: %.2f MiB; solve/round %.2f s,%s write %.2f s; %s\n", a.out.c_str(),
              double(r->output_bytes) / (1 << 20), r->seconds_quantize,
              r->qat.empty() ? "" : fmt::format(" qat {:.2f} s,", r->seconds_qat).c_str(),
              r->seconds_write, PeakRssText(*r).c_str());
  return 0;
}

}  // namespace

void RegisterQuantize(CLI::App& app, int* rc) {
  auto a = std::make_shared<QuantizeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "quantize", "quantize a model's linear layers (compressed-tensors output)");
  cmd->add_option("model", a->model, "model folder")->required();
  cmd->add_option("-o,--output", a->out,
                  "output folder (compressed-tensors) or FILE.gguf (GGUF types)");
  cmd->add_option("--scheme", a->scheme, SchemeHelp())->capture_default_str()->check(SchemeFlag());
  cmd->add_option("--method", a->method,
                  "rtn | gptq | awq | smoothquant | awq+gptq | smoothquant+gptq | qat | gptq+qat "
                  "| awq+qat | awq+gptq+qat")
      ->capture_default_str();
  auto qat_flag = [a](const std::string&) { a->qat_given = true; };
  cmd->add_option("--epochs", a->qat.epochs, "qat: passes over the calibration windows per block")
      ->capture_default_str()
      ->check(IntegerIn(0, 10000))
      ->each(qat_flag);
  cmd->add_option(
         "--lr", a->qat.lr,
         "qat: AdamW rate of the latent weights, in steps of their group's scale (cosine schedule)")
      ->capture_default_str()
      ->check(NumberIn(0.0, 1.0))
      ->each(qat_flag);
  cmd->add_option("--lr-q", a->qat.lr_q,
                  "qat: relative rate of the scales (AdamW on log s) and rate of the zeros (codes)")
      ->capture_default_str()
      ->check(NumberIn(0.0, 1.0))
      ->each(qat_flag);
  cmd->add_option("--e2e-epochs", a->e2e_epochs,
                  "qat: then tune every scale end to end (codes frozen) on the next-token loss, "
                  "this many passes (0: off)")
      ->capture_default_str()
      ->check(IntegerIn(0, 10000))
      ->each(qat_flag);
  cmd->add_flag("--e2e-weights", a->qat.e2e_weights,
                "qat: the end-to-end pass trains the latent weights too (codes may change), not "
                "only the scales")
      ->each(qat_flag);
  cmd->add_flag("--block-norms", a->qat.block_norms,
                "qat: block-wise training trains each block's RMSNorm weights too (they stay fp "
                "in the output)")
      ->each(qat_flag);
  cmd->add_flag("--e2e-norms", a->qat.e2e_norms,
                "qat: the end-to-end pass trains every block's input RMSNorm weights too (they "
                "stay fp in the output)")
      ->each(qat_flag);
  cmd->add_flag("--e2e-final-norm", a->qat.e2e_final_norm,
                "qat: the end-to-end pass trains the final norm too: it sets the output's "
                "temperature, so it tunes the model to the calibration text (README)")
      ->each(qat_flag);
  cmd->add_option("--e2e-loss", a->qat.e2e_loss,
                  "qat: what the end-to-end pass minimises: ce (next-token cross-entropy of the "
                  "calibration text), kl (KL divergence from the fp model's distributions) or "
                  "ce+kl (their sum)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, methods::E2eLoss>(std::begin(kE2eLosses), std::end(kE2eLosses)),
          CLI::ignore_case))
      ->each(qat_flag);
  cmd->add_option("--block-loss", a->qat.block_loss,
                  "qat: what block-wise training minimises: relative (each token's squared error "
                  "over the mean square of its fp output; default) or mse (plain squared error)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, methods::BlockLoss>{{"relative", methods::BlockLoss::kRelative},
                                                    {"mse", methods::BlockLoss::kMse}},
          CLI::ignore_case))
      ->each(qat_flag);
  cmd->add_option("--batch", a->qat.batch, "qat: calibration windows per training step")
      ->capture_default_str()
      ->check(IntegerIn(1, 1 << 20))
      ->each(qat_flag);
  cmd->add_option(
         "--act", a->act,
         "activation quantization: int8-token | int8-tensor | fp8-token | fp8-tensor | none "
         "(default: the preset's, e.g. W8A8 -> int8-token)")
      ->check(ActFlag());
  cmd->add_option("--alpha", a->alpha, "smoothquant: migration strength in [0, 1]")
      ->capture_default_str()
      ->check(NumberIn(0.0, 1.0))
      ->each([a](const std::string&) { a->alpha_given = true; });
  cmd->add_option("--calib", a->calib,
                  "calibration text file (gptq, awq, smoothquant, static activations); default: "
                  "text sampled from the model");
  cmd->add_option("--nsamples", a->nsamples, "calibration windows")
      ->capture_default_str()
      ->check(IntegerIn(1));
  cmd->add_option("--seqlen", a->seqlen,
                  "tokens per calibration window (capped at the model's context)")
      ->capture_default_str()
      ->check(IntegerIn(2, kMaxTokens));
  cmd->add_flag("--act-order", a->act_order,
                "gptq: quantize columns by descending Hessian diagonal");
  cmd->add_option("--damp", a->damp, "gptq: dampening as a fraction of mean(diag H)")
      ->capture_default_str()
      ->check(NumberIn(0.0, 10.0));
  cmd->add_option("--group", a->group, "group size along the input dimension (integer schemes)")
      ->check(GroupFlag());
  cmd->add_flag("--clip", a->clip, "MSE clipping search per scale (default for gptq)");
  cmd->add_flag("--no-clip", a->no_clip, "plain min-max scales (default for rtn)");
  cmd->add_option("--ignore", a->ignore,
                  "modules to keep unquantized (name or re:REGEX); lm_head always")
      ->expected(1, -1)
      ->check(IgnoreFlag());
  cmd->add_option("--max-shard-size", a->max_shard_size,
                  "largest model-0000i-of-0000N.safetensors shard (5GB default; 500MB, 2GiB, ...)");
  cmd->add_option("--tensor-type", a->tensor_types,
                  "GGUF: REGEX=TYPE, the type of matching tensors (repeatable)");
  cmd->add_option("--output-tensor-type", a->output_type, "GGUF: type of output.weight");
  cmd->add_option("--token-embedding-type", a->token_embd_type, "GGUF: type of token_embd.weight");
  cmd->add_flag("--pure", a->pure, "GGUF: the mix's base type for every quantized tensor");
  cmd->add_flag("--dry-run", a->dry_run,
                "GGUF: print each tensor's type and the file size, write nothing");
  cmd->add_flag(
      "--allow-requantize", a->allow_requantize,
      "GGUF: a .gguf MODEL whose tensors are already quantized is decoded and quantized again");
  cmd->add_option("--imatrix", a->imatrix,
                  "GGUF: importance matrix (qforge imatrix / llama-imatrix, GGUF or .dat)");
  cmd->add_option("--rotate", a->rotate,
                  "fold the norms and rotate the residual stream by a random Hadamard matrix "
                  "first (QuaRot/SpinQuant R1; the output is a plain checkpoint): hadamard, or "
                  "hadamard+heads to rotate each attention head's values too (R2); seed: --seed")
      ->check(CLI::IsMember({"hadamard", "hadamard+heads"}));
  cmd->add_option("--seed", a->seed, "random seed (recorded in the output)")
      ->capture_default_str()
      ->check(Seed());
  AddCommonOptions(cmd, &a->common);
  cmd->callback([a, rc] { *rc = RunQuantize(*a); });
}

}  // namespace qf::cli
