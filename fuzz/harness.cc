// The fuzz harnesses (fuzz/harness.h): one per parser of untrusted input, each followed by the
// code that consumes its result, with the result's invariants checked.
#include "harness.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "eval/base_logits.h"
#include "io/compressed_tensors.h"
#include "io/gguf.h"
#include "io/imatrix.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "text/gguf_tokenizer.h"
#include "text/tokenizer.h"

namespace qf::fuzz {
namespace {

namespace fs = std::filesystem;

std::span<const std::byte> Bytes(std::span<const uint8_t> in) {
  return {reinterpret_cast<const std::byte*>(in.data()), in.size()};
}
std::string_view Text(std::span<const uint8_t> in) {
  return {reinterpret_cast<const char*>(in.data()), in.size()};
}

// A per-process scratch folder (in /dev/shm when there is one) for parsers that read files.
const fs::path& Scratch() {
  static const fs::path dir = [] {
    std::error_code ec;
    const fs::path base =
        fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
    fs::path d = base / ("qforge-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d, ec);
    return d;
  }();
  return dir;
}

fs::path WriteScratch(const std::string& name, std::string_view bytes) {
  const fs::path p = Scratch() / name;
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), std::streamsize(bytes.size()));
  return p;
}

// An Error must say something; an ok result is checked by the caller.
template <class R>
std::string EmptyError(const R& r) {
  return !r.ok() && r.error().message().empty() ? "Error with an empty message" : "";
}
template <class R>
Outcome Rejected(const R& r) {
  return Outcome::Rejected(EmptyError(r));
}

// One two-token forward step of a loaded model (tokens 0 and V-1), as a run would start.
std::string ForwardTwoTokens(const model::Model& m) {
  const model::ModelConfig& cfg = m.config();
  if (cfg.vocab_size < 1 || cfg.max_position < 2) return "";
  const std::vector<int32_t> toks = {0, int32_t(cfg.vocab_size - 1)};
  model::KVCache cache = m.NewCache(2);
  std::vector<float> logits(size_t(cfg.vocab_size) * 2);
  return EmptyError(m.Forward(toks, cache, logits.data(), true));
}

// ---- safetensors ----

Outcome SafetensorsHarness(std::span<const uint8_t> in) {
  const auto bytes = Bytes(in);
  const auto result = io::ParseSafetensors(bytes, "fuzz.safetensors");
  if (!result.ok()) return Rejected(result);
  const std::byte* end = bytes.data() + bytes.size();
  const std::byte* next = nullptr;  // where the previous tensor ended
  uint8_t sink = 0;
  for (const auto& t : result->tensors) {
    // Reading every byte lets ASan catch a span that escapes the input.
    for (std::byte b : t.data) sink ^= uint8_t(b);
    if (uint64_t(t.numel()) * Info(t.dtype).bytes != t.data.size())
      return "tensor " + t.name + ": byte length is not numel x dtype size";
    if (t.data.data() < bytes.data() || t.data.data() + t.data.size() > end)
      return "tensor " + t.name + ": span outside the input";
    if (next != nullptr && t.data.data() != next) return "tensor spans do not tile the data";
    next = t.data.data() + t.data.size();
  }
  if (next != nullptr && next != end) return "data section has trailing bytes";
  volatile uint8_t keep = sink;
  (void)keep;
  return "";
}

// ---- tokenizers (what runs on every loaded vocabulary) ----

std::string CheckTokenizer(const text::Tokenizer& t, std::span<const uint8_t> in) {
  const int32_t v = t.vocab_size();
  if (v < 0) return "negative vocab_size";
  if (t.bos_id() < -1 || t.bos_id() >= v) return "bos_id outside the vocabulary";
  if (t.eos_id() < -1 || t.eos_id() >= v) return "eos_id outside the vocabulary";
  std::vector<std::string> texts = {"Hello world",
                                    "  two  spaces,\ta tab\nand a newline",
                                    "\xc3\xbcn\xc3\xaf"
                                    "c\xc3\xb6"
                                    "de "
                                    "\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82",
                                    "x=12345; y = x*2!",
                                    "\xff\xfe bad \xc3"
                                    " utf8",
                                    "<s></s><|endoftext|><unk>"};
  texts.emplace_back(Text(in.first(std::min<size_t>(in.size(), 48))));
  for (const std::string& s : texts) {
    for (bool bos : {false, true}) {
      const std::vector<int32_t> ids = t.Encode(s, bos);
      for (int32_t id : ids)
        if (id < 0 || id >= v)
          return "Encode gave id " + std::to_string(id) + " outside [0, vocab)";
      if (bos && t.bos_id() >= 0 && (ids.empty() || ids[0] != t.bos_id()))
        return "Encode(add_bos) does not start with BOS";
      (void)t.Decode(ids);
      for (int32_t id : ids) (void)t.DecodeToken(id);
    }
  }
  for (int32_t bad :
       {-1, v, std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min()})
    if (!t.DecodeToken(bad).empty()) return "DecodeToken of an id outside the vocabulary not empty";
  (void)t.Decode({-1, v, 0});
  return "";
}

Outcome TokenizerJsonHarness(std::span<const uint8_t> in) {
  const fs::path p = WriteScratch("tokenizer.json", Text(in));
  const auto tok = text::LoadHfTokenizerJson(p);
  if (!tok.ok()) return Rejected(tok);
  return CheckTokenizer(**tok, in);
}

Outcome SentencePieceHarness(std::span<const uint8_t> in) {
  const fs::path p = WriteScratch("tokenizer.model", Text(in));
  const auto tok = text::LoadSentencePiece(p);
  if (!tok.ok()) return Rejected(tok);
  return CheckTokenizer(**tok, in);
}

// ---- GGUF: the container, then what a .gguf model run reads from it ----

Outcome GgufHarness(std::span<const uint8_t> in) {
  const auto bytes = Bytes(in);
  const auto result = io::ParseGguf(bytes, "fuzz.gguf");
  if (!result.ok()) return Rejected(result);
  const io::GgufContents& c = *result;
  size_t sink = 0;
  for (const auto& kv : c.metadata) sink += kv.value.ToString().size() + kv.value.array_size();
  const std::byte* begin = bytes.data();
  const std::byte* end = bytes.data() + bytes.size();
  std::vector<std::pair<const std::byte*, const std::byte*>> spans;
  for (const auto& t : c.tensors) {
    const auto expected = io::GgmlTensorBytes(t.type, t.shape);
    if (!expected.ok() || *expected != t.data.size()) return "tensor " + t.name + ": wrong size";
    if (t.offset % c.alignment != 0) return "tensor " + t.name + ": misaligned";
    if (t.data.size() > 0) {
      if (t.data.data() < begin || t.data.data() + t.data.size() > end)
        return "tensor " + t.name + ": span outside the input";
      if (t.data.data() != begin + c.data_offset + t.offset)
        return "tensor " + t.name + ": span not at data section + offset";
      // Reading the first and last byte lets ASan catch a span that escapes the input.
      sink += size_t(t.data.front()) + size_t(t.data.back());
      spans.emplace_back(t.data.data(), t.data.data() + t.data.size());
    }
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second) return "tensor spans overlap";
  volatile size_t keep = sink;
  (void)keep;

  // The vocabulary and the model, as `qforge ppl model.gguf` loads them.
  const fs::path p = WriteScratch("model.gguf", Text(in));
  const auto file = io::GgufFile::Open(p);
  if (!file.ok())
    return "ParseGguf accepted what GgufFile::Open refused: " + file.error().message();
  const auto tok = text::GgufTokenizer(*file);
  if (!tok.ok()) {
    if (std::string e = EmptyError(tok); !e.empty()) return e;
  } else if (std::string e = CheckTokenizer(**tok, in); !e.empty()) {
    return e;
  }
  const auto m = model::Model::LoadGguf(p);
  if (!m.ok()) return EmptyError(m);  // the container was accepted; not every one is a model
  return ForwardTwoTokens(*m);
}

// ---- config.json: HF config, family detection, compressed-tensors quantization_config ----

Outcome ConfigHarness(std::span<const uint8_t> in) {
  const std::string_view text = Text(in);
  const auto c = model::ParseHfConfig(text, "fuzz/config.json");
  if (!c.ok()) {
    if (std::string e = EmptyError(c); !e.empty()) return e;
  } else {
    const model::ModelConfig& m = *c;
    if (m.family == nullptr) return "config accepted without a family";
    if (m.vocab_size < 1 || m.hidden < 1 || m.intermediate < 1 || m.layers < 1 || m.heads < 1 ||
        m.kv_heads < 1 || m.head_dim < 1 || m.max_position < 1)
      return "config accepted with a dimension < 1";
    if (m.heads % m.kv_heads != 0) return "heads not a multiple of kv_heads";
    if (m.head_dim % 2 != 0) return "odd head_dim (RoPE rotates pairs)";
    if (!std::isfinite(m.rms_eps) || m.rms_eps <= 0) return "rms_eps not finite and > 0";
    if (m.rope_scaling.type == model::RopeScaling::Type::kFactors &&
        int64_t(m.rope_scaling.freq_factors.size()) != m.head_dim / 2)
      return "rope freq_factors not head_dim / 2 long";
    if (!std::isfinite(model::FlopsPerToken(m, 16))) return "FLOPs per token not finite";
    // RoPE tables for a few positions: every angle must be finite.
    if (m.head_dim <= 4096) {
      std::vector<float> cos, sin;
      model::RopeTables(m, 3, &cos, &sin);
      for (size_t i = 0; i < cos.size(); ++i)
        if (!std::isfinite(cos[i]) || !std::isfinite(sin[i])) return "RoPE table not finite";
    }
  }
  // Accepted: the model config parsed (a quantization_config alone is checked, not counted).
  const Outcome done = c.ok() ? Outcome() : Outcome::Rejected();
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return done;
  const auto q = io::ParseQuantizationConfig(j, "fuzz/config.json");
  if (!q.ok()) {
    if (std::string e = EmptyError(q); !e.empty()) return e;
    return done;
  }
  if (!q->has_value()) return done;
  const io::CompressedTensorsConfig& qc = **q;
  const model::TensorNames& names =
      c.ok() ? *c->family->names : *model::FindFamily("LlamaForCausalLM")->names;
  for (const char* pattern :
       {names.q, names.k, names.v, names.o, names.gate, names.up, names.down, names.lm_head}) {
    std::string module = model::LayerTensorName(pattern, 3);
    module.resize(module.size() - std::string_view(".weight").size());
    const io::CtSchemeGroup* g = qc.FindGroup(module);
    if (g != nullptr && qc.Ignored(module))
      return module + ": ignored, yet FindGroup found a group";
    if (g != nullptr && g->input_activations) {
      const auto act = io::ActSchemeFromCt(*g->input_activations);
      if (std::string e = EmptyError(act); !e.empty()) return e;
    }
  }
  for (const auto& g : qc.groups) {
    if (g.weights) (void)g.weights->ToJson().dump();
  }
  return done;
}

// ---- a model folder: config.json + model.safetensors (compressed-tensors checkpoints) ----

Outcome CheckpointHarness(std::span<const uint8_t> in) {
  const std::string_view all = Text(in);
  const size_t at = all.find(kCheckpointSplit);
  const std::string_view config = all.substr(0, at);
  const std::string_view tensors =
      at == std::string_view::npos ? std::string_view() : all.substr(at + kCheckpointSplit.size());
  WriteScratch("checkpoint/config.json", config);
  const fs::path dir = WriteScratch("checkpoint/model.safetensors", tensors).parent_path();
  const auto m = model::Model::Load(dir);
  if (!m.ok()) return Rejected(m);
  return ForwardTwoTokens(*m);
}

// ---- imatrix files (GGUF and legacy .dat) ----

Outcome ImatrixHarness(std::span<const uint8_t> in) {
  const auto m = io::ParseImatrix(Bytes(in), "fuzz.imatrix");
  if (!m.ok()) return Rejected(m);
  for (const auto& [name, e] : m->entries) {
    if (e.count < 0) return name + ": negative count";
    for (float v : e.sum2)
      if (!std::isfinite(v) || v < 0) return name + ": sum2 not finite and >= 0";
    const std::vector<float> w = io::Importance(e);
    if (w.size() != e.sum2.size()) return name + ": Importance has the wrong length";
    for (float v : w)
      if (!std::isfinite(v) || v < 0) return name + ": importance not finite and >= 0";
  }
  // What was read writes back and reads again as the same entries.
  const auto again = m->legacy ? io::ImatrixLegacyBytes(*m) : io::ImatrixGgufBytes(*m);
  if (!again.ok()) return "re-encoding what was read failed: " + again.error().message();
  const auto back = io::ParseImatrix(*again, "fuzz-again.imatrix");
  if (!back.ok()) return "re-encoded imatrix does not parse: " + back.error().message();
  if (back->entries.size() != m->entries.size()) return "re-encoded imatrix lost entries";
  for (const auto& [name, e] : m->entries) {
    const auto it = back->entries.find(name);
    if (it == back->entries.end() || it->second.count != e.count || it->second.sum2 != e.sum2)
      return name + ": differs after a write and read";
  }
  return "";
}

// ---- saved base logits (kld --base-logits) ----

// Checksums are recomputed before the file is opened, so that the fuzzer reaches the header
// and record checks behind them (checksum mismatches have their own tests).
Outcome BaseLogitsHarness(std::span<const uint8_t> in) {
  std::string bytes(Text(in));
  auto get64 = [&](size_t at) {
    int64_t v;
    std::memcpy(&v, bytes.data() + at, 8);
    return v;
  };
  auto put64 = [&](size_t at, uint64_t v) { std::memcpy(bytes.data() + at, &v, 8); };
  auto hash = [&](size_t at, size_t n) {
    return eval::Hash64({reinterpret_cast<const std::byte*>(bytes.data()) + at, n});
  };
  if (bytes.size() >= eval::kBaseLogitsHeaderBytes) {
    put64(88, hash(0, 88));
    const int64_t windows = get64(32), per = get64(40), rec = get64(80);
    const size_t head = eval::kBaseLogitsHeaderBytes;
    if (windows > 0 && per > 0 && rec > 0 && windows < (1 << 20) && per < (1 << 20) &&
        rec < (1 << 24)) {
      const size_t window_bytes = size_t(per) * size_t(rec);
      if (head + size_t(windows) * (window_bytes + 8) == bytes.size())
        for (int64_t w = 0; w < windows; ++w)
          put64(head + size_t(windows) * window_bytes + 8 * size_t(w),
                hash(head + size_t(w) * window_bytes, window_bytes));
    }
  }
  const fs::path p = WriteScratch("base.qfbl", bytes);
  const auto r = eval::BaseLogitsReader::Open(p);
  if (!r.ok()) return Rejected(r);
  const eval::BaseLogitsInfo h = r->info();
  // What kld asks for when the text, model and flags match the file's header.
  eval::BaseLogitsInfo want = h;
  want.first_scored = eval::FirstScoredRow(h.scoring, h.ctx);
  want.scored_per_window = h.ctx - 1 - want.first_scored;
  if (const Status st = r->CheckMatches(want, h.windows); !st.ok()) return EmptyError(st);
  std::vector<double> logp(size_t(h.vocab)), p_(size_t(h.vocab));
  const size_t rec_bytes = eval::BaseLogitsRecordBytes(h.vocab);
  for (int64_t w = 0; w < h.windows; ++w) {
    const auto win = r->Window(w);
    if (!win.ok()) {
      if (std::string e = EmptyError(win); !e.empty()) return e;
      continue;
    }
    for (int64_t i = 0; i < h.scored_per_window; ++i) {
      const eval::DecodedRecord d =
          eval::DecodeBaseRecord(*win + size_t(i) * rec_bytes, h.vocab, logp.data(), p_.data());
      if (!std::isfinite(d.nll) || d.nll < 0) return "record with a base NLL not finite and >= 0";
      if (d.argmax < 0 || d.argmax >= h.vocab) return "record argmax outside the vocabulary";
      double sum = 0;
      for (int64_t j = 0; j < h.vocab; ++j) {
        if (!std::isfinite(logp[size_t(j)]) || logp[size_t(j)] > 1e-9)
          return "decoded log-probability not finite and <= 0";
        sum += p_[size_t(j)];
      }
      if (std::fabs(sum - 1.0) > 1e-6) return "decoded probabilities do not sum to 1";
    }
  }
  return "";
}

constexpr Target kTargets[] = {
    {"safetensors", SafetensorsHarness, "safetensors header and tensor table"},
    {"gguf", GgufHarness,
     "GGUF container, then its vocabulary (tokenizer.ggml.*), metadata and model, and a forward "
     "step"},
    {"config", ConfigHarness,
     "config.json: HF config and family detection, compressed-tensors quantization_config"},
    {"checkpoint", CheckpointHarness,
     "model folder (config.json + model.safetensors, compressed-tensors linears), a forward step"},
    {"tokenizer_json", TokenizerJsonHarness,
     "tokenizer.json (BPE pipeline loader), then Encode/Decode"},
    {"sentencepiece", SentencePieceHarness, "tokenizer.model (SentencePiece), then Encode/Decode"},
    {"imatrix", ImatrixHarness, "imatrix files (GGUF and legacy .dat), re-encoded and read again"},
    {"base_logits", BaseLogitsHarness,
     "saved base logits (kld --base-logits), every record decoded"},
};

}  // namespace

std::span<const Target> Targets() { return kTargets; }

const Target* FindTarget(std::string_view name) {
  for (const Target& t : kTargets)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace qf::fuzz
