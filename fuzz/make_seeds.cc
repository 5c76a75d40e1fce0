// Writes the material fuzz/make_seeds.sh turns into seed inputs: tiny Llama-shaped model folders
// (random weights from a fixed seed, F16, tied embeddings) with a byte-level BPE tokenizer.json
// or a SentencePiece tokenizer.model written here from scratch, small imatrix files and saved
// base logits. Everything is deterministic, and small enough for the fuzzers' 64 KiB inputs.
// Usage: fuzz_seeds OUT_DIR
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <tuple>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "eval/base_logits.h"
#include "io/imatrix.h"
#include "io/safetensors_writer.h"

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

constexpr int kHidden = 32, kInter = 64, kHeads = 2, kKvHeads = 1, kHeadDim = 16, kLayers = 1;

void WriteText(const fs::path& p, const std::string& s) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << s;
}

// The merges both tokenizers learn, on pieces of "the cat sat on the mat".
const std::vector<std::pair<std::string, std::string>> kMerges = {
    {"t", "h"},  {"th", "e"}, {"a", "t"}, {"o", "n"}, {"c", "at"},
    {"s", "at"}, {"m", "at"}, {"e", "r"}, {"i", "n"}, {"in", "g"}};

// GPT-2's byte -> printable character map (bytes.rs / bytes_to_unicode), as UTF-8.
std::vector<std::string> ByteAlphabet() {
  std::vector<std::string> out(256);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    const int cp = printable ? b : 256 + extra++;
    std::string s;
    if (cp < 0x80) {
      s += char(cp);
    } else {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    }
    out[size_t(b)] = s;
  }
  return out;
}

// Byte-level BPE tokenizer.json: 256 byte tokens, merges with a "Ġ" (space) variant of each,
// GPT-2's pre-tokenizer, one special token. Returns the vocabulary size.
int WriteTokenizerJson(const fs::path& dir) {
  const std::vector<std::string> bytes = ByteAlphabet();
  ordered_json vocab = ordered_json::object();
  int id = 0;
  for (const std::string& b : bytes) vocab[b] = id++;
  ordered_json merges = ordered_json::array();
  const std::string space = bytes[' '];
  for (const auto& [a, b] : kMerges) {
    if (!vocab.contains(a + b)) vocab[a + b] = id++;
    merges.push_back(a + " " + b);
  }
  for (const auto& [a, b] : kMerges) {
    if (a.size() == 1 && !vocab.contains(space + a)) {
      vocab[space + a] = id++;
      merges.push_back(space + " " + a);
    }
  }
  const int eot = id++;
  ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = ordered_json::array({{{"id", eot},
                                            {"content", "<|endoftext|>"},
                                            {"single_word", false},
                                            {"lstrip", false},
                                            {"rstrip", false},
                                            {"normalized", false},
                                            {"special", true}}});
  j["normalizer"] = nullptr;
  // GPT-2's pre-tokenizer: ByteLevel with its built-in split regex (gguf "gpt-2").
  j["pre_tokenizer"] = {{"type", "ByteLevel"},
                        {"add_prefix_space", false},
                        {"trim_offsets", true},
                        {"use_regex", true}};
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"},
                  {"add_prefix_space", true},
                  {"trim_offsets", true},
                  {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"vocab", vocab},
                {"merges", merges}};
  WriteText(dir / "tokenizer.json", j.dump(1));
  ordered_json cfg = {
      {"bos_token", "<|endoftext|>"}, {"eos_token", "<|endoftext|>"}, {"add_bos_token", false}};
  WriteText(dir / "tokenizer_config.json", cfg.dump(1));
  return id;
}

// ---- a SentencePiece ModelProto, encoded by hand (sentencepiece_model.proto field numbers) ----

void Varint(std::string* out, uint64_t v) {
  do {
    uint8_t b = v & 0x7F;
    v >>= 7;
    if (v) b |= 0x80;
    out->push_back(char(b));
  } while (v);
}
void Tag(std::string* out, int field, int wire) {
  Varint(out, uint64_t(field) << 3 | unsigned(wire));
}
void Bytes(std::string* out, int field, const std::string& s) {
  Tag(out, field, 2);
  Varint(out, s.size());
  *out += s;
}
void Int(std::string* out, int field, int64_t v) {
  Tag(out, field, 0);
  Varint(out, uint64_t(v));
}
void Float(std::string* out, int field, float f) {
  Tag(out, field, 5);
  const uint32_t bits = qf::BitsFromF32(f);
  for (int i = 0; i < 4; ++i) out->push_back(char((bits >> (8 * i)) & 0xFF));
}

// SentencePiece BPE with byte fallback: <unk> <s> </s>, 256 byte pieces, the letters of the
// merges, the merges, each also with a "▁" prefix. Returns the vocabulary size.
int WriteSentencePiece(const fs::path& dir) {
  enum { kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6 };
  std::vector<std::tuple<std::string, float, int>> pieces = {
      {"<unk>", 0, kUnknown}, {"<s>", 0, kControl}, {"</s>", 0, kControl}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    pieces.emplace_back(name, 0.0f, kByte);
  }
  const std::string meta = "\xe2\x96\x81";  // ▁
  std::vector<std::string> normal = {meta};
  for (const auto& [a, b] : kMerges)
    for (const std::string& s : {a, b, a + b, meta + a + b})
      if (std::find(normal.begin(), normal.end(), s) == normal.end()) normal.push_back(s);
  float score = -1;
  for (const std::string& s : normal) pieces.emplace_back(s, score--, kNormal);
  std::string model;
  for (const auto& [piece, sc, type] : pieces) {
    std::string p;
    Bytes(&p, 1, piece);
    Float(&p, 2, sc);
    Int(&p, 3, type);
    Bytes(&model, 1, p);
  }
  std::string trainer;
  Int(&trainer, 3, 2);  // model_type BPE
  Int(&trainer, 4, int64_t(pieces.size()));
  Int(&trainer, 35, 1);   // byte_fallback
  Int(&trainer, 40, 0);   // unk_id
  Int(&trainer, 41, 1);   // bos_id
  Int(&trainer, 42, 2);   // eos_id
  Int(&trainer, 43, -1);  // pad_id
  Bytes(&model, 2, trainer);
  std::string norm;
  Bytes(&norm, 1, "identity");
  Int(&norm, 3, 1);  // add_dummy_prefix
  Int(&norm, 4, 0);  // remove_extra_whitespaces
  Int(&norm, 5, 1);  // escape_whitespaces
  Bytes(&model, 3, norm);
  WriteText(dir / "tokenizer.model", model);
  return int(pieces.size());
}

// config.json + model.safetensors of a tiny Llama (F16, tied embeddings).
void WriteModel(const fs::path& dir, int vocab, int bos, int eos, std::mt19937* rng) {
  ordered_json c = {{"architectures", {"LlamaForCausalLM"}},
                    {"model_type", "llama"},
                    {"vocab_size", vocab},
                    {"hidden_size", kHidden},
                    {"intermediate_size", kInter},
                    {"num_hidden_layers", kLayers},
                    {"num_attention_heads", kHeads},
                    {"num_key_value_heads", kKvHeads},
                    {"head_dim", kHeadDim},
                    {"max_position_embeddings", 64},
                    {"rms_norm_eps", 1e-5},
                    {"rope_theta", 10000.0},
                    {"tie_word_embeddings", true},
                    {"bos_token_id", bos},
                    {"eos_token_id", eos},
                    {"torch_dtype", "float16"}};
  WriteText(dir / "config.json", c.dump(2));
  std::normal_distribution<float> normal(0.0f, 0.08f);
  std::vector<std::vector<uint16_t>> store;
  std::vector<qf::io::TensorToWrite> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool norm) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<uint16_t> h(static_cast<size_t>(n));
    for (auto& v : h) v = qf::F16BitsRne(norm ? 1.0f + normal(*rng) : normal(*rng));
    store.push_back(std::move(h));
    tensors.push_back({name, qf::DType::kF16, shape, std::as_bytes(std::span(store.back()))});
  };
  store.reserve(32);
  add("model.embed_tokens.weight", {vocab, kHidden}, false);
  add("model.norm.weight", {kHidden}, true);
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {kHidden}, true);
    add(p + "post_attention_layernorm.weight", {kHidden}, true);
    add(p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}, false);
    add(p + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden}, false);
    add(p + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden}, false);
    add(p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim}, false);
    add(p + "mlp.gate_proj.weight", {kInter, kHidden}, false);
    add(p + "mlp.up_proj.weight", {kInter, kHidden}, false);
    add(p + "mlp.down_proj.weight", {kHidden, kInter}, false);
  }
  const auto st = qf::io::WriteSafetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  if (!st.ok()) {
    std::fprintf(stderr, "fuzz_seeds: %s\n", st.error().message().c_str());
    std::exit(1);
  }
}

void WriteImatrices(const fs::path& dir) {
  qf::io::Imatrix m;
  m.datasets = {"calib.txt"};
  m.chunk_count = 3;
  m.chunk_size = 16;
  for (const char* name : {"blk.0.attn_q.weight", "blk.0.ffn_down.weight"}) {
    qf::io::ImatrixEntry e;
    e.count = 48;
    for (int i = 0; i < 8; ++i) e.sum2.push_back(0.5f * float(i + 1));
    m.entries[name] = e;
  }
  if (!qf::io::WriteImatrixGguf(m, dir / "small.imatrix.gguf").ok() ||
      !qf::io::WriteImatrixLegacy(m, dir / "small.imatrix.dat").ok()) {
    std::fprintf(stderr, "fuzz_seeds: imatrix write failed\n");
    std::exit(1);
  }
}

void WriteBaseLogits(const fs::path& dir, uint32_t scoring, std::mt19937* rng) {
  qf::eval::BaseLogitsInfo h;
  h.scoring = scoring;
  h.vocab = 6;
  h.ctx = 8;
  h.windows = 2;
  h.first_scored = scoring == 1 ? h.ctx / 2 : 0;
  h.scored_per_window = h.ctx - 1 - h.first_scored;
  h.text_tokens = 16;
  h.tokens_hash = 0x1234;
  h.bos_id = scoring == 1 ? 1 : -1;
  const fs::path p = dir / (scoring == 1 ? "llamacpp.qfbl" : "qforge.qfbl");
  auto w = qf::eval::BaseLogitsWriter::Create(p, h);
  if (!w.ok()) std::exit(1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const size_t rec = qf::eval::BaseLogitsRecordBytes(h.vocab);
  for (int64_t win = 0; win < h.windows; ++win) {
    std::vector<std::byte> records(size_t(h.scored_per_window) * rec);
    for (int64_t i = 0; i < h.scored_per_window; ++i) {
      float logits[6];
      for (float& l : logits) l = normal(*rng);
      qf::eval::EncodeBaseRecord(logits, h.vocab, 1.5, records.data() + size_t(i) * rec);
    }
    if (!w->WriteWindow(records).ok()) std::exit(1);
  }
  if (!w->Finish().ok()) std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds OUT_DIR\n");
    return 2;
  }
  const fs::path out = argv[1];
  std::mt19937 rng(1234);
  for (const char* sub : {"tiny-bpe", "tiny-spm", "imatrix", "base_logits"})
    fs::create_directories(out / sub);
  const int bpe_vocab = WriteTokenizerJson(out / "tiny-bpe");
  WriteModel(out / "tiny-bpe", bpe_vocab, bpe_vocab - 1, bpe_vocab - 1, &rng);
  const int spm_vocab = WriteSentencePiece(out / "tiny-spm");
  WriteModel(out / "tiny-spm", spm_vocab, 1, 2, &rng);
  WriteImatrices(out / "imatrix");
  WriteBaseLogits(out / "base_logits", 0, &rng);
  WriteBaseLogits(out / "base_logits", 1, &rng);
  return 0;
}
