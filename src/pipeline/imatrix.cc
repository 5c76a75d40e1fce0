// Importance-matrix collection (see imatrix.h): the chunks run through the decoder walk, one
// chunk per thread, a hook adding each linear input's Σx² (fp64) into the chunk's partial sums;
// the totals add the chunks in chunk order, in double-double, so that ranks under mpirun (each
// with its share of the chunks, folded in rank order) give one process's totals.
#include "pipeline/imatrix.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>

#include "core/ddsum.h"
#include "core/dist.h"
#include "core/mmap.h"
#include "io/gguf.h"
#include "pipeline/gguf_convert.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/decoder_walk.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "text/tokenizer.h"

namespace qf::pipeline {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One observed input: where it lives in a chunk's partial sums and which GGUF tensors read it.
struct Input {
  int64_t offset = 0, k = 0;
  std::vector<std::string> tensors;
};

// acc[j] += Σ_i x[i, j]² over m rows of k values.
void AddSquares(const float* x, int64_t m, int64_t k, double* acc) {
  for (int64_t i = 0; i < m; ++i) {
    const float* row = x + i * k;
    for (int64_t j = 0; j < k; ++j) acc[j] += double(row[j]) * double(row[j]);
  }
}

}  // namespace

Result<std::vector<std::vector<int32_t>>> ImatrixChunks(std::span<const int32_t> tokens,
                                                        int64_t ctx, int64_t max_chunks,
                                                        int32_t bos) {
  if (ctx < 1) return Err("imatrix: context {} (expected > 0)", ctx);
  if (int64_t(tokens.size()) < 2 * ctx)
    return Err("imatrix: the text tokenizes to only {} tokens; a context of {} needs at least {}",
               tokens.size(), ctx, 2 * ctx);
  int64_t n = int64_t(tokens.size()) / ctx;
  if (max_chunks >= 0) n = std::min(n, max_chunks);
  std::vector<std::vector<int32_t>> chunks(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) {
    chunks[size_t(c)].assign(tokens.begin() + c * ctx, tokens.begin() + (c + 1) * ctx);
    if (bos >= 0) chunks[size_t(c)][0] = bos;
  }
  return chunks;
}

Result<io::Imatrix> ComputeImatrix(const fs::path& model_dir, const ImatrixOptions& opt,
                                   ImatrixReport* report,
                                   const std::function<void(int64_t, int64_t)>& progress) {
  ImatrixReport rep;
  auto t0 = Clock::now();
  std::error_code ec;
  const bool from_gguf = model::IsGgufFile(model_dir);
  if (!from_gguf && !fs::is_directory(model_dir, ec))
    return Err("{}: expected a model folder (config.json + *.safetensors) or a .gguf file",
               model_dir.string());
  if (opt.text_path.empty()) return Err("imatrix: no calibration text given");
  model::ModelConfig cfg;
  std::map<std::string, std::string> gguf_name;  // the model's tensor name -> GGUF name
  if (from_gguf) {                               // names already GGUF's
    QF_ASSIGN(const io::GgufFile f, io::GgufFile::Open(model_dir));
    QF_ASSIGN(cfg, model::GgufModelConfig(f));
    for (const io::GgufTensorInfo& t : f.tensors()) gguf_name[t.name] = t.name;
  } else {
    QF_ASSIGN(cfg, model::LoadHfConfig(model_dir));
    QF_ASSIGN(const io::TensorStore store, io::TensorStore::Open(model_dir));
    QF_ASSIGN(const std::vector<pipeline::GgufTensorPlan> plan,
              pipeline::PlanGgufTensors(cfg, store));
    for (const pipeline::GgufTensorPlan& p : plan)
      if (p.source) gguf_name[p.source->name] = p.name;
  }
  auto gguf = [&](const std::string& name) -> Result<std::string> {
    const auto it = gguf_name.find(name);
    if (it == gguf_name.end())
      return Err("{}: no GGUF name for tensor '{}'", model_dir.string(), name);
    return it->second;
  };

  // Tokens, as llama-imatrix makes them.
  QF_ASSIGN(const pipeline::VocabBos bos, pipeline::LlamaCppVocabBos(model_dir));
  if (bos.add && bos.bos < 0)
    return Err("{}: the vocabulary adds BOS but has no BOS token", model_dir.string());
  rep.add_bos = bos.add;
  rep.bos = bos.add ? int32_t(bos.bos) : -1;
  QF_ASSIGN(const std::unique_ptr<text::Tokenizer> tok, text::LoadTokenizer(model_dir));
  QF_ASSIGN(std::string text, ReadTextFile(opt.text_path));
  if (!text.empty() && text.back() == '\n') text.pop_back();  // as llama.cpp's -f does
  std::vector<int32_t> tokens;
  if (rep.add_bos) tokens.push_back(rep.bos);
  const std::vector<int32_t> body = tok->Encode(text, /*add_bos=*/false);
  tokens.insert(tokens.end(), body.begin(), body.end());
  rep.text_tokens = int64_t(tokens.size());
  auto chunks_r = ImatrixChunks(tokens, opt.ctx, opt.chunks, rep.bos);
  if (!chunks_r.ok()) return chunks_r.error().Context(opt.text_path);
  const std::vector<std::vector<int32_t>> chunks = std::move(*chunks_r);
  for (const auto& c : chunks)
    for (int32_t id : c)
      if (id < 0 || id >= cfg.vocab_size)
        return Err("{}: token id {} outside the model's vocabulary of {}", opt.text_path, id,
                   cfg.vocab_size);
  rep.chunks = int64_t(chunks.size());
  rep.ctx = opt.ctx;
  rep.seconds_tokenize = Seconds(t0);

  // The observed inputs and their place in a chunk's partial sums.
  const model::TensorNames& nm = from_gguf ? model::GgufTensorNames() : *cfg.family->names;
  const int64_t H = cfg.hidden, F = cfg.intermediate, qd = cfg.q_dim();
  const int64_t T = opt.ctx;
  std::vector<Input> inputs;
  int64_t width = 0;
  auto add_input = [&](int64_t k, std::vector<std::string> tensors) {
    inputs.push_back({width, k, std::move(tensors)});
    width += k;
  };
  for (int64_t l = 0; l < cfg.layers; ++l) {
    auto name = [&](const char* pattern) { return gguf(model::LayerTensorName(pattern, l)); };
    QF_ASSIGN(std::string q, name(nm.q));
    QF_ASSIGN(std::string k, name(nm.k));
    QF_ASSIGN(std::string v, name(nm.v));
    QF_ASSIGN(std::string o, name(nm.o));
    QF_ASSIGN(std::string gate, name(nm.gate));
    QF_ASSIGN(std::string up, name(nm.up));
    QF_ASSIGN(std::string down, name(nm.down));
    add_input(H, {q, k, v});
    add_input(qd, {o});
    add_input(H, {gate, up});
    add_input(F, {down});
  }
  const bool output = opt.process_output && !cfg.tie_embeddings && gguf_name.count(nm.lm_head);
  if (output) {
    QF_ASSIGN(std::string out_name, gguf(nm.lm_head));
    add_input(H, {out_name});
  }

  QF_ASSIGN(const model::Model model, model::Model::Load(model_dir));
  const std::vector<float>& final_norm = model.final_norm();
  std::vector<float> cos, sin;
  model::RopeTables(cfg, T, &cos, &sin);
  const std::vector<float>& embed = model.embedding();

  // Per chunk in flight: the walk's buffers and the chunk's partial sums.
  struct Scratch {
    model::WalkScratch walk;
    std::vector<double> sums;
  };
  const int threads = std::max(1, omp_get_max_threads());
  const int64_t S = rep.chunks;
  std::vector<Scratch> scratch(
      static_cast<size_t>(std::min<int64_t>(threads, S)),
      Scratch{model::WalkScratch(cfg, T), std::vector<double>(size_t(width))});
  // Adds Σx² of each input shown to it into a chunk's partial sums, in the order of `inputs`
  // (the walk shows them layer by layer, in dataflow order, then the head's).
  struct SquareSums final : model::WalkHooks {
    const std::vector<Input>* inputs = nullptr;
    double* sums = nullptr;
    size_t next = 0;
    void OnInput(const model::WalkPoint&, const float* x, int64_t rows, int64_t cols) override {
      const Input& in = (*inputs)[next++];
      AddSquares(x, rows, cols, sums + in.offset);
    }
  };
  // One chunk through every layer, Σx² of each input into sc.sums.
  auto run_chunk = [&](const std::vector<int32_t>& ids, Scratch& sc) {
    std::fill(sc.sums.begin(), sc.sums.end(), 0.0);
    SquareSums hooks;
    hooks.inputs = &inputs;
    hooks.sums = sc.sums.data();
    hooks.stages = model::kLinearInputs | model::StageBit(model::BlockStage::kHeadIn);
    model::Embed(embed, H, ids, sc.walk.x.data());
    const model::SeqKv seq{nullptr, sc.walk.Slot(cos.data(), sin.data())};
    model::WalkStack(cfg, model.layers(), sc.walk.Buffers(), T, {&seq, 1}, &hooks);
    if (output)
      model::WalkHead(cfg, final_norm, nullptr, sc.walk.x.data(), sc.walk.h.data(), T, nullptr,
                      &hooks);
  };

  // Under mpirun each rank runs its share of the chunks; the sums are double-double, folded in
  // rank order, so every rank count gives one process's sums (core/ddsum.h).
  const auto tf = Clock::now();
  const auto [c0, c1] = dist::Share(S);
  std::vector<double> total(static_cast<size_t>(2 * width), 0.0);  // (hi, lo) per value
  const int64_t nt = int64_t(scratch.size());
  for (int64_t s0 = c0; s0 < c1; s0 += nt) {
    const int64_t n = std::min(nt, c1 - s0);
#pragma omp parallel for num_threads(int(nt)) schedule(static, 1)
    for (int64_t i = 0; i < n; ++i) run_chunk(chunks[size_t(s0 + i)], scratch[size_t(i)]);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < width; ++j)
        DdAdd(total[size_t(2 * j)], total[size_t(2 * j + 1)], scratch[size_t(i)].sums[size_t(j)]);
    if (progress) progress(s0 + n - c0, c1 - c0);
  }
  dist::FoldInRankOrder(total, [](std::span<double> acc, std::span<const double> part) {
    for (size_t q = 0; q + 1 < acc.size(); q += 2) DdAdd(acc[q], acc[q + 1], part[q], part[q + 1]);
  });
  rep.seconds_forward = Seconds(tf);

  io::Imatrix m;
  m.datasets = {opt.dataset.empty() ? opt.text_path : opt.dataset};
  m.chunk_count = S;
  m.chunk_size = T;
  for (const Input& in : inputs) {
    io::ImatrixEntry e;
    e.sum2.resize(static_cast<size_t>(in.k));
    for (int64_t j = 0; j < in.k; ++j) {
      const size_t q = size_t(2 * (in.offset + j));
      e.sum2[size_t(j)] = float(total[q] + total[q + 1]);
    }
    e.count = S * T;
    for (const std::string& t : in.tensors) m.entries[t] = e;
  }
  if (report) *report = rep;
  return m;
}

}  // namespace qf::pipeline
