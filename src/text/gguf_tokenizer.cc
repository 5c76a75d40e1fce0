// GGUF vocabularies as tokenizers (see gguf_tokenizer.h): a SentencePiece BPE encoder for
// tokenizer.ggml.model "llama" (sentencepiece's bpe_model.cc algorithm on GGUF arrays), and the
// tokenizer.json pipeline (hf_tokenizer.h) for "gpt2".
#include "text/gguf_tokenizer.h"

#include <algorithm>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <queue>
#include <string_view>
#include <utility>
#include <vector>

#include "io/gguf.h"
#include "text/bpe_model.h"
#include "text/hf_tokenizer.h"
#include "text/unicode_util.h"

namespace qf::text {
namespace {

using namespace io::gguf_token;  // token types (io/gguf.h)

constexpr std::string_view kMetaSpace = "\xE2\x96\x81";     // U+2581 "▁"
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";   // U+FFFD
constexpr std::string_view kUnkSurface = " \xE2\x81\x87 ";  // sentencepiece's " ⁇ "

std::string ReplaceAll(std::string s, std::string_view from, std::string_view to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
  return s;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The byte of "<0xNN>", or -1.
int BytePieceValue(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  const int hi = HexDigit(t[3]), lo = HexDigit(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// The arrays and ids every vocabulary has.
struct GgufVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;   // empty when absent
  std::vector<int32_t> types;  // kNormal when absent
  int32_t bos = -1, eos = -1, unk = -1;
};

// ---- "llama": SentencePiece BPE ------------------------------------------------------------

class SpmTokenizer final : public Tokenizer {
 public:
  SpmTokenizer(GgufVocab v, bool add_space_prefix)
      : v_(std::move(v)), add_space_prefix_(add_space_prefix) {
    const size_t n = v_.tokens.size();
    if (v_.scores.size() != n) v_.scores.assign(n, 0.0f);
    if (v_.types.size() != n) v_.types.assign(n, kNormal);
    std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
    for (size_t i = 0; i < n; ++i) {
      const std::string& t = v_.tokens[i];
      const int32_t type = v_.types[i];
      const auto id = int32_t(i);
      all_.emplace(t, id);  // the first id of a duplicated piece wins
      // sentencepiece's pieces_: what merges may produce.
      if (type == kNormal || type == kUndefined || type == kUserDefined || type == kUnused)
        mergeable_.emplace(t, id);
      if (type == kByte) {
        const int b = BytePieceValue(t);
        if (b >= 0 && byte_ids_[b] < 0) byte_ids_[b] = id;
      }
      if (type == kUserDefined && !t.empty()) {
        // Stored with spaces (gguf-py pre-normalizes them); matched in the escaped text.
        user_defined_.push_back(ReplaceAll(t, " ", kMetaSpace));
        mergeable_.emplace(user_defined_.back(), id);
        all_.emplace(user_defined_.back(), id);
      }
      if (type == kUnknown && v_.unk < 0) v_.unk = id;
    }
    byte_fallback_ =
        std::all_of(std::begin(byte_ids_), std::end(byte_ids_), [](int32_t id) { return id >= 0; });
  }

  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos && v_.bos >= 0) ids.push_back(v_.bos);
    if (text.empty()) return ids;
    const std::string norm = Normalize(text);
    const std::string_view s = norm;

    struct Symbol {
      size_t begin, len;
      int prev, next;
      bool freeze;
    };
    std::vector<Symbol> sym;
    sym.reserve(s.size());
    int32_t cp;
    for (size_t i = 0; i < s.size();) {
      size_t len = 0;
      for (const std::string& u : user_defined_) {  // longest user-defined match, kept whole
        if (u.size() > len && s.compare(i, u.size(), u) == 0) len = u.size();
      }
      const bool freeze = len > 0;
      if (!freeze) len = Utf8Next(s, i, &cp);
      const int idx = int(sym.size());
      sym.push_back({i, len, idx - 1, i + len < s.size() ? idx + 1 : -1, freeze});
      i += len;
    }

    struct Pair {
      float score;
      int left, right;
      size_t size;
    };
    // Highest score first, then the leftmost (sentencepiece's SymbolPairComparator).
    auto lower = [](const Pair& a, const Pair& b) {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    };
    std::priority_queue<Pair, std::vector<Pair>, decltype(lower)> agenda(lower);
    StringMap<std::pair<std::string_view, std::string_view>> rev_merge;  // unused pieces
    auto maybe_add = [&](int left, int right) {
      if (left < 0 || right < 0 || sym[left].freeze || sym[right].freeze) return;
      const std::string_view piece = s.substr(sym[left].begin, sym[left].len + sym[right].len);
      const auto it = mergeable_.find(piece);
      if (it == mergeable_.end()) return;
      agenda.push({v_.scores[size_t(it->second)], left, right, piece.size()});
      if (v_.types[size_t(it->second)] == kUnused) {
        rev_merge[std::string(piece)] = {s.substr(sym[left].begin, sym[left].len),
                                         s.substr(sym[right].begin, sym[right].len)};
      }
    };
    for (size_t i = 1; i < sym.size(); ++i) maybe_add(int(i) - 1, int(i));
    while (!agenda.empty()) {
      const Pair top = agenda.top();
      agenda.pop();
      Symbol& l = sym[size_t(top.left)];
      Symbol& r = sym[size_t(top.right)];
      if (l.len == 0 || r.len == 0 || l.len + r.len != top.size) continue;  // stale
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) sym[size_t(r.next)].prev = top.left;
      maybe_add(l.prev, top.left);
      maybe_add(top.left, l.next);
    }

    bool prev_unk = false;
    // Unused pieces are split back into what merged them; unknown ones become bytes.
    auto emit = [&](auto&& self, std::string_view piece) -> void {
      const auto it = all_.find(piece);
      if (it != all_.end() && v_.types[size_t(it->second)] == kUnused) {
        const auto rm = rev_merge.find(piece);
        if (rm != rev_merge.end()) {
          self(self, rm->second.first);
          self(self, rm->second.second);
          return;
        }
      }
      if (it != all_.end() && v_.types[size_t(it->second)] != kUnknown) {
        ids.push_back(it->second);
        prev_unk = false;
      } else if (byte_fallback_) {
        for (char c : piece) ids.push_back(byte_ids_[uint8_t(c)]);
        prev_unk = false;
      } else if (v_.unk >= 0 && !prev_unk) {  // a run of unknown pieces gives one token
        ids.push_back(v_.unk);
        prev_unk = true;
      }
    };
    for (int i = 0; i >= 0 && !sym.empty(); i = sym[size_t(i)].next)
      emit(emit, s.substr(sym[size_t(i)].begin, sym[size_t(i)].len));
    return ids;
  }

  std::string DecodeToken(int32_t id) const override {
    if (id < 0 || id >= vocab_size()) return "";
    const int32_t type = v_.types[size_t(id)];
    if (type == kControl || type == kUnused) return "";
    if (type == kUnknown) return std::string(kUnkSurface);
    const std::string& piece = v_.tokens[size_t(id)];
    if (type == kByte) {
      const int b = BytePieceValue(piece);
      return b < 0 ? "" : std::string(1, char(b));
    }
    return ReplaceAll(piece, kMetaSpace, " ");
  }

  // As sentencepiece: pieces joined, runs of byte pieces as UTF-8 (each invalid byte as
  // U+FFFD), the dummy-prefix "▁" of the first piece dropped.
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::string out, bytes;
    bool first = true;
    auto flush = [&] {
      int32_t cp;
      for (size_t i = 0; i < bytes.size();) {
        const size_t n = Utf8Next(bytes, i, &cp);
        if (cp < 0) {
          out += kReplacement;
        } else {
          out.append(bytes, i, n);
        }
        i += n;
      }
      bytes.clear();
    };
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size()) continue;
      const int32_t type = v_.types[size_t(id)];
      if (type == kControl || type == kUnused) continue;
      if (type == kByte) {
        const int b = BytePieceValue(v_.tokens[size_t(id)]);
        if (b >= 0) bytes.push_back(char(b));
        first = false;
        continue;
      }
      flush();
      std::string text = DecodeToken(id);
      const std::string& piece = v_.tokens[size_t(id)];
      if (first && add_space_prefix_ && type != kUnknown &&
          piece.compare(0, kMetaSpace.size(), kMetaSpace) == 0)
        text.erase(0, 1);  // DecodeToken made that "▁" a space
      out += text;
      first = false;
    }
    flush();
    return out;
  }

  int32_t vocab_size() const override { return int32_t(v_.tokens.size()); }
  int32_t bos_id() const override { return v_.bos; }
  int32_t eos_id() const override { return v_.eos; }
  std::string kind() const override { return "sentencepiece"; }

 private:
  // sentencepiece's identity normalizer: dummy prefix, ' ' -> "▁", invalid bytes -> U+FFFD.
  std::string Normalize(std::string_view text) const {
    std::string out;
    out.reserve(text.size() + text.size() / 4 + 3);
    if (add_space_prefix_) out += kMetaSpace;
    int32_t cp;
    for (size_t i = 0; i < text.size();) {
      const size_t n = Utf8Next(text, i, &cp);
      if (cp < 0) {
        out += kReplacement;
      } else if (text[i] == ' ') {
        out += kMetaSpace;
      } else {
        out.append(text.substr(i, n));
      }
      i += n;
    }
    return out;
  }

  GgufVocab v_;
  bool add_space_prefix_;
  bool byte_fallback_ = false;
  StringMap<int32_t> all_, mergeable_;
  std::vector<std::string> user_defined_;  // escaped
  int32_t byte_ids_[256];
};

// ---- "gpt2": byte-level BPE through the tokenizer.json pipeline ----------------------------

// The split regexes of pipeline/gguf_convert.cc's kKnownPres (the tokenizer.json spelling that each
// llama.cpp pre-tokenizer name stands for).
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct PreDescription {
  nlohmann::json normalizer, pre_tokenizer;
  bool ignore_merges = false;
};

// The tokenizer.json sections of the models each pre-tokenizer name comes from.
std::optional<PreDescription> DescribePre(std::string_view pre) {
  using nlohmann::json;
  auto split_then_bytes = [](std::string_view regex) {
    return json{{"type", "Sequence"},
                {"pretokenizers",
                 {{{"type", "Split"},
                   {"pattern", {{"Regex", std::string(regex)}}},
                   {"behavior", "Isolated"},
                   {"invert", false}},
                  {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  };
  if (pre == "gpt-2") {
    return PreDescription{
        json(), {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}, false};
  }
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    return PreDescription{json(), split_then_bytes(kLlama3Regex), true};
  }
  if (pre == "qwen2") {
    return PreDescription{json{{"type", "NFC"}}, split_then_bytes(kQwen2Regex), false};
  }
  return std::nullopt;
}

Result<std::unique_ptr<Tokenizer>> BuildGpt2(const io::GgufFile& f, GgufVocab v) {
  const std::string src = f.path().string();
  std::string pre = "gpt-2";
  if (f.Find("tokenizer.ggml.pre")) {
    QF_ASSIGN(pre, f.GetString("tokenizer.ggml.pre"));
  }
  const std::optional<PreDescription> d = DescribePre(pre);
  if (!d) {
    return Err("{}: tokenizer.ggml.pre '{}' is not supported (supported: gpt-2, llama-bpe, qwen2)",
               src, pre);
  }
  const io::GgufValue* mv = f.Find("tokenizer.ggml.merges");
  const auto* merges_text = mv ? mv->get<std::vector<std::string>>() : nullptr;
  if (!merges_text) return Err("{}: missing key 'tokenizer.ggml.merges' (array of str)", src);
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(merges_text->size());
  for (const std::string& m : *merges_text) {
    const size_t space = m.find(' ', 1);
    if (space == std::string::npos)
      return Err("{}: tokenizer.ggml.merges #{} '{}' is not two tokens", src, merges.size(), m);
    merges.emplace_back(m.substr(0, space), m.substr(space + 1));
  }

  HfPipeline p;
  StringMap<int32_t> vocab;
  vocab.reserve(v.tokens.size());
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    const int32_t type = v.types.empty() ? kNormal : v.types[i];
    if (type == kControl || type == kUserDefined) {
      AddedToken a;
      a.content = v.tokens[i];
      a.id = int32_t(i);
      a.special = type == kControl;
      p.added.push_back(std::move(a));
    } else {
      vocab.emplace(v.tokens[i], int32_t(i));
    }
  }
  BpeOptions options;
  options.ignore_merges = d->ignore_merges;
  auto model = BpeModel::Create(std::move(vocab), merges, options);
  if (!model.ok()) return model.error().Context(src);
  const Status st = ParseHfPipelineSections(d->normalizer.dump(), d->pre_tokenizer.dump(),
                                            R"({"type": "ByteLevel"})", &p);
  if (!st.ok()) return st.error().Context(src);
  p.bos_id = v.bos;
  p.eos_id = v.eos;
  return std::unique_ptr<Tokenizer>(new HfTokenizer(std::move(p), std::move(*model)));
}

Result<GgufVocab> ReadVocab(const io::GgufFile& f) {
  const std::string src = f.path().string();
  GgufVocab v;
  const io::GgufValue* tv = f.Find("tokenizer.ggml.tokens");
  const auto* tokens = tv ? tv->get<std::vector<std::string>>() : nullptr;
  if (!tokens) return Err("{}: missing key 'tokenizer.ggml.tokens' (array of str)", src);
  if (tokens->empty() || tokens->size() >= size_t(BpeModel::kMaxTokenId))
    return Err("{}: tokenizer.ggml.tokens has {} tokens", src, tokens->size());
  v.tokens = *tokens;
  const size_t n = v.tokens.size();
  if (const io::GgufValue* sv = f.Find("tokenizer.ggml.scores")) {
    const auto* scores = sv->get<std::vector<float>>();
    if (!scores || scores->size() != n)
      return Err("{}: tokenizer.ggml.scores must be {} f32 values", src, n);
    v.scores = *scores;
  }
  if (const io::GgufValue* yv = f.Find("tokenizer.ggml.token_type")) {
    const auto* types = yv->get<std::vector<int32_t>>();
    if (!types || types->size() != n)
      return Err("{}: tokenizer.ggml.token_type must be {} i32 values", src, n);
    v.types = *types;
  }
  auto id = [&](const char* key) -> Result<int32_t> {
    if (!f.Find(key)) return -1;
    QF_ASSIGN(int64_t i, f.GetInt(key));
    if (i < 0 || i >= int64_t(n))
      return Err("{}: {} = {} is outside the {} tokens", src, key, i, n);
    return int32_t(i);
  };
  QF_ASSIGN(v.bos, id("tokenizer.ggml.bos_token_id"));
  QF_ASSIGN(v.eos, id("tokenizer.ggml.eos_token_id"));
  QF_ASSIGN(v.unk, id("tokenizer.ggml.unknown_token_id"));
  // No id stored (a converter found none in the source's configs): a CONTROL token with a
  // well-known name, as the tokenizer.json loader falls back to.
  auto control = [&](std::initializer_list<std::string_view> names) -> int32_t {
    for (std::string_view name : names) {
      for (size_t i = 0; i < n; ++i) {
        if (v.tokens[i] == name && !v.types.empty() && v.types[i] == kControl) return int32_t(i);
      }
    }
    return -1;
  };
  if (v.bos < 0) v.bos = control({"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"});
  if (v.eos < 0) v.eos = control({"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"});
  return v;
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> GgufTokenizer(const io::GgufFile& f) {
  const std::string src = f.path().string();
  QF_ASSIGN(const std::string model, f.GetString("tokenizer.ggml.model"));
  if (model != "llama" && model != "gpt2") {
    return Err("{}: tokenizer.ggml.model '{}' is not supported (supported: llama, gpt2)", src,
               model);
  }
  QF_ASSIGN(GgufVocab v, ReadVocab(f));
  if (model == "gpt2") return BuildGpt2(f, std::move(v));
  bool add_space_prefix = true;
  if (f.Find("tokenizer.ggml.add_space_prefix")) {
    QF_ASSIGN(add_space_prefix, f.GetBool("tokenizer.ggml.add_space_prefix"));
  }
  return std::unique_ptr<Tokenizer>(new SpmTokenizer(std::move(v), add_space_prefix));
}

Result<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const std::filesystem::path& file) {
  QF_ASSIGN(io::GgufFile f, io::GgufFile::Open(file));
  return GgufTokenizer(f);
}

}  // namespace qf::text
