// Hugging Face folder -> GGUF: llama.cpp's metadata keys, tokenizer arrays and tensor layout
// for Llama/Mistral ("llama"), Qwen2 and Qwen3, following convert_hf_to_gguf.py and gguf-py.
#include "pipeline/gguf_convert.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>
#include <utility>

#include "core/dtype.h"
#include "core/mmap.h"
#include "text/tokenizer.h"

namespace qf::pipeline {
using io::FloatDType;
using io::GgmlType;
using io::GgufFile;
using io::GgufValue;
using io::GgufWriter;
using io::ShapeString;
using io::TensorInfo;
using io::TensorStore;
namespace gguf_token = io::gguf_token;

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

using namespace gguf_token;  // token types (io/gguf.h)

constexpr std::string_view kMetaSpace = "\xE2\x96\x81";  // U+2581 "▁"

// The split regexes of the byte-level BPE tokenizers qforge supports, as their tokenizer.json
// spells them, and the llama.cpp pre-tokenizer (llama-vocab.cpp) that reproduces each.
struct KnownPre {
  std::string_view regex;
  std::string_view pre;
};
constexpr KnownPre kKnownPres[] = {
    {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
     "llama-bpe"},  // Llama 3
    {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
     "qwen2"},  // Qwen2, Qwen2.5, Qwen3
};

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool EndsWith(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

std::string ReplaceAll(std::string s, std::string_view from, std::string_view to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
  return s;
}

// convert_hf_to_gguf.py does_token_look_special.
bool LooksSpecial(std::string_view t) {
  if (t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]") return true;
  if (StartsWith(t, "<|") && EndsWith(t, "|>")) return true;
  if (StartsWith(t, "<\xEF\xBD\x9C") && EndsWith(t, "\xEF\xBD\x9C>")) return true;  // <｜ ｜>
  return StartsWith(t, "<unused") && EndsWith(t, ">");
}

// A JSON file of the model folder: nullopt when absent, an Error when unreadable or invalid.
Result<std::optional<Json>> ReadJson(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::optional<Json>();
  QF_ASSIGN(std::string text, ReadTextFile(path));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Err("{}: not valid JSON", path.string());
  return std::optional<Json>(std::move(j));
}

// A token named in tokenizer_config.json: a string or {"content": string}.
std::string TokenText(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string())
    return j["content"].get<std::string>();
  return "";
}

Result<uint32_t> U32(int64_t v, std::string_view what) {
  if (v < 0 || v > int64_t(std::numeric_limits<uint32_t>::max()))
    return Err("{} = {} does not fit a GGUF u32", what, v);
  return uint32_t(v);
}

// gguf-py SpecialVocab: special-token ids and add_*_token flags from tokenizer.json's
// post-processor, tokenizer_config.json and config.json (first source to name one wins), and
// with `load_merges` the BPE merges of tokenizer.json.
class SpecialVocab {
 public:
  Status Load(const fs::path& dir, bool load_merges, std::optional<int64_t> n_vocab) {
    n_vocab_ = n_vocab;
    QF_ASSIGN(std::optional<Json> tok, ReadJson(dir / "tokenizer.json"));
    QF_ASSIGN(std::optional<Json> tc, ReadJson(dir / "tokenizer_config.json"));
    if (tc && !tc->is_object()) tc.reset();
    if (tok && tok->is_object()) {
      if (load_merges) QF_TRY(LoadMerges(*tok));
      QF_TRY(FromTokenizerJson(*tok, tc ? &*tc : nullptr));
    }
    QF_ASSIGN(std::optional<Json> config, ReadJson(dir / "config.json"));
    if (config && config->is_object()) {
      for (const std::string& typ : types_) {
        auto it = config->find(typ + "_token_id");
        if (it != config->end() && it->is_number_integer()) SetId(typ, it->get<int64_t>());
      }
    }
    return Status::Ok();
  }

  Status AddTo(GgufWriter* w) const {
    if (!merges_.empty()) QF_TRY(w->Set("tokenizer.ggml.merges", GgufValue(merges_)));
    static const std::pair<std::string_view, std::string_view> kIdKeys[] = {
        {"bos", "tokenizer.ggml.bos_token_id"},     {"eos", "tokenizer.ggml.eos_token_id"},
        {"unk", "tokenizer.ggml.unknown_token_id"}, {"sep", "tokenizer.ggml.seperator_token_id"},
        {"pad", "tokenizer.ggml.padding_token_id"}, {"mask", "tokenizer.ggml.mask_token_id"},
        {"eot", "tokenizer.ggml.eot_token_id"}};
    for (const auto& [typ, id] : ids_) {
      for (const auto& [t, key] : kIdKeys) {
        if (t == typ) QF_TRY(w->Set(std::string(key), GgufValue(uint32_t(id))));
      }
    }
    for (const auto& [typ, add] : add_) {
      if (typ == "bos" || typ == "eos" || typ == "sep")
        QF_TRY(w->Set("tokenizer.ggml.add_" + typ + "_token", GgufValue(add)));
    }
    if (chat_template_) QF_TRY(w->Set("tokenizer.chat_template", GgufValue(*chat_template_)));
    return Status::Ok();
  }

  int64_t Id(std::string_view typ) const {
    for (const auto& [t, id] : ids_) {
      if (t == typ) return id;
    }
    return -1;
  }
  size_t merge_count() const { return merges_.size(); }
  std::optional<bool> Add(std::string_view typ) const {
    for (const auto& [t, add] : add_)
      if (t == typ) return add;
    return std::nullopt;
  }

 private:
  Status LoadMerges(const Json& tok) {
    if (!tok.contains("model") || !tok["model"].is_object()) return Status::Ok();
    const Json& m = tok["model"];
    if (!m.contains("merges") || !m["merges"].is_array()) return Status::Ok();
    for (const Json& merge : m["merges"]) {
      if (merge.is_string()) {
        merges_.push_back(merge.get<std::string>());
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
                 merge[1].is_string()) {
        // Since transformers 4.45 merges are pairs, which may hold spaces; llama.cpp's merges
        // are "a b" strings, so a space inside a part is written as U+0120 (chr(32 + 256)).
        merges_.push_back(ReplaceAll(merge[0].get<std::string>(), " ", "\xC4\xA0") + " " +
                          ReplaceAll(merge[1].get<std::string>(), " ", "\xC4\xA0"));
      } else {
        return Err("tokenizer.json: merge #{} is neither \"a b\" nor [a, b]", merges_.size());
      }
    }
    return Status::Ok();
  }

  Status FromTokenizerJson(const Json& tok, Json* tc) {
    const Json added = tok.contains("added_tokens") && tok["added_tokens"].is_array()
                           ? tok["added_tokens"]
                           : Json::array();
    auto get = [&](const char* key) { return tc ? TokenText(tc->value(key, Json())) : ""; };
    std::string bos = get("bos_token"), cls = get("cls_token");
    std::string eos = get("eos_token"), sep = get("sep_token");
    if (bos.empty() && !cls.empty() && tc) (*tc)["bos_token"] = bos = cls;
    if (eos.empty() && !sep.empty() && tc) (*tc)["eos_token"] = eos = sep;

    const Json post = tok.value("post_processor", Json());
    std::vector<Json> processors;
    if (post.is_object() && post.contains("processors") && post["processors"].is_array()) {
      for (const Json& p : post["processors"]) processors.push_back(p);
    } else if (post.is_object()) {
      processors.push_back(post);
    }
    auto special_id = [](const Json& item) {
      if (item.is_object() && item.contains("SpecialToken") && item["SpecialToken"].is_object())
        return TokenText(item["SpecialToken"].value("id", Json()));
      return std::string();
    };
    for (const Json& p : processors) {
      const std::string type = p.value("type", "");
      if (type == "RobertaProcessing") {
        SetAdd("bos", true);
        SetAdd("eos", true);
        SetAdd("sep", true);
      } else if (type == "TemplateProcessing" && p.contains("single") && p["single"].is_array() &&
                 p["single"].size() > 1) {
        // A special token before / after $A: the tokenizer adds BOS / EOS (a crude reading of
        // the template, as gguf-py's).
        const Json& single = p["single"];
        const std::string first = special_id(single.front());
        if (!first.empty()) {
          if (!tc) {
            bos = first;
          } else if (first != bos && first != cls) {
            if (bos.empty()) (*tc)["bos_token"] = bos = first;
            if (cls.empty()) (*tc)["cls_token"] = cls = first;
          }
          SetAdd("bos", first == bos || first == cls);
        }
        const std::string last = special_id(single.back());
        if (!last.empty()) {
          if (!tc) {
            eos = last;
          } else if (last != eos) {
            // The old EOS becomes the end-of-turn token (gguf-py's eot fallback).
            types_.push_back("eot");
            (*tc)["eot_token"] = eos;
            (*tc)["eos_token"] = eos = last;
          }
          SetAdd("eos", last == eos);
        }
      }
    }
    if (!tc) return Status::Ok();
    if (tc->contains("chat_template") && (*tc)["chat_template"].is_string())
      chat_template_ = (*tc)["chat_template"].get<std::string>();
    for (const std::string& typ : types_) {
      auto add = tc->find("add_" + typ + "_token");
      if (add != tc->end() && add->is_boolean()) SetAdd(typ, add->get<bool>());
      const std::string content = TokenText(tc->value(typ + "_token", Json()));
      if (content.empty()) continue;
      for (const Json& a : added) {  // the first added token with that content
        if (a.is_object() && a.value("content", "") == content && a.contains("id") &&
            a["id"].is_number_integer()) {
          SetId(typ, a["id"].get<int64_t>());
          break;
        }
      }
    }
    return Status::Ok();
  }

  void SetId(const std::string& typ, int64_t id) {
    if (id < 0 || (n_vocab_ && id >= *n_vocab_)) return;  // out of range: skipped, as gguf-py
    for (const auto& [t, unused] : ids_) {
      if (t == typ) return;
    }
    ids_.emplace_back(typ, id);
  }
  void SetAdd(const std::string& typ, bool value) {
    for (auto& [t, v] : add_) {
      if (t == typ) {
        v = value;
        return;
      }
    }
    add_.emplace_back(typ, value);
  }

  std::optional<int64_t> n_vocab_;
  std::vector<std::string> types_ = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
  std::vector<std::string> merges_;
  std::vector<std::pair<std::string, int64_t>> ids_;  // in the order found (gguf-py dict order)
  std::vector<std::pair<std::string, bool>> add_;
  std::optional<std::string> chat_template_;
};

// convert_hf_to_gguf.py _create_vocab_sentencepiece.
Status AddSentencePieceVocab(const fs::path& dir, const model::ModelConfig& cfg,
                             const std::optional<Json>& tc, GgufWriter* w,
                             GgufVocabSummary* summary) {
  const fs::path file = dir / "tokenizer.model";
  sentencepiece::SentencePieceProcessor sp;
  if (const auto st = sp.Load(file.string()); !st.ok())
    return Err("{}: cannot load: {}", file.string(), st.ToString());
  const int64_t n = cfg.vocab_size;
  std::vector<std::string> tokens;
  tokens.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) tokens.push_back(fmt::format("[PAD{}]", i));
  std::vector<float> scores(static_cast<size_t>(n), -10000.0f);
  std::vector<int32_t> types(static_cast<size_t>(n), kUnused);
  const int64_t pieces = std::min<int64_t>(sp.GetPieceSize(), n);
  for (int64_t id = 0; id < pieces; ++id) {
    const int i = int(id);
    tokens[size_t(id)] = sp.IdToPiece(i);
    scores[size_t(id)] = sp.GetScore(i);
    types[size_t(id)] = sp.IsUnknown(i)   ? kUnknown
                        : sp.IsControl(i) ? kControl
                        : sp.IsUnused(i)  ? kUnused
                        : sp.IsByte(i)    ? kByte
                                          : kNormal;
  }
  QF_ASSIGN(std::optional<Json> added, ReadJson(dir / "added_tokens.json"));
  if (added && added->is_object()) {
    for (const auto& [text, id] : added->items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= n) continue;
      const auto k = size_t(id.get<int64_t>());
      tokens[k] = text;
      scores[k] = -1000.0f;
      types[k] = kUserDefined;
    }
  }
  if (tc && tc->contains("added_tokens_decoder") && (*tc)["added_tokens_decoder"].is_object()) {
    for (const auto& [key, data] : (*tc)["added_tokens_decoder"].items()) {
      int64_t id = -1;
      try {
        id = std::stoll(key);
      } catch (const std::exception&) {
        return Err("{}: added_tokens_decoder key '{}' is not a token id",
                   (dir / "tokenizer_config.json").string(), key);
      }
      const std::string content = TokenText(data);
      if (id < 0 || id >= n || content.empty()) continue;
      const auto k = size_t(id);
      if (data.value("special", false) || LooksSpecial(content)) {
        types[k] = kControl;
        tokens[k] = content;
      } else {
        types[k] = kUserDefined;
        tokens[k] = ReplaceAll(content, kMetaSpace, " ");  // user-defined spaces pre-normalized
      }
      scores[k] = -1000.0f;
    }
  }
  summary->model = "llama";
  summary->pre = "default";
  summary->tokens = n;
  QF_TRY(w->Set("tokenizer.ggml.model", GgufValue("llama")));
  QF_TRY(w->Set("tokenizer.ggml.pre", GgufValue("default")));
  QF_TRY(w->Set("tokenizer.ggml.tokens", GgufValue(std::move(tokens))));
  QF_TRY(w->Set("tokenizer.ggml.scores", GgufValue(std::move(scores))));
  QF_TRY(w->Set("tokenizer.ggml.token_type", GgufValue(std::move(types))));
  SpecialVocab special;
  QF_TRY(special.Load(dir, /*load_merges=*/false, n));
  QF_TRY(special.AddTo(w));
  summary->bos = special.Id("bos");
  summary->eos = special.Id("eos");
  summary->add_bos = special.Add("bos");
  return Status::Ok();
}

// The llama.cpp pre-tokenizer name of a byte-level BPE tokenizer.json (convert_hf_to_gguf.py
// hashes the ids of a probe text; qforge's families are told apart by their split regex).
Result<std::string> BpePreName(const Json& tok, const std::string& file) {
  std::vector<std::string> regexes;
  bool byte_level = false, byte_level_regex = false;
  static const Json kNull;
  std::vector<const Json*> stack = {tok.contains("pre_tokenizer") ? &tok["pre_tokenizer"] : &kNull};
  while (!stack.empty()) {
    const Json& p = *stack.back();
    stack.pop_back();
    if (!p.is_object()) continue;
    const std::string type = p.value("type", "");
    if (type == "Sequence" && p.contains("pretokenizers") && p["pretokenizers"].is_array()) {
      for (auto it = p["pretokenizers"].rbegin(); it != p["pretokenizers"].rend(); ++it)
        stack.push_back(&*it);
    } else if (type == "Split" && p.contains("pattern") && p["pattern"].is_object()) {
      const Json& pat = p["pattern"];
      if (pat.contains("Regex") && pat["Regex"].is_string())
        regexes.push_back(pat["Regex"].get<std::string>());
    } else if (type == "ByteLevel") {
      byte_level = true;
      byte_level_regex = p.value("use_regex", true);
    }
  }
  if (!byte_level) {
    return Err(
        "{}: not a byte-level BPE tokenizer and there is no tokenizer.model (llama.cpp "
        "conversion supports tokenizer.model or byte-level tokenizer.json)",
        file);
  }
  for (const std::string& r : regexes) {
    for (const KnownPre& k : kKnownPres) {
      if (r == k.regex) return std::string(k.pre);
    }
  }
  if (regexes.empty() && byte_level_regex) return std::string("gpt-2");
  return Err(
      "{}: pre-tokenizer split regex '{}' is not one llama.cpp knows for the supported "
      "families (Llama 3: llama-bpe, Qwen2/3: qwen2, GPT-2: gpt-2)",
      file, regexes.empty() ? std::string("(none)") : regexes.front().substr(0, 120));
}

// convert_hf_to_gguf.py get_vocab_base + _set_vocab_gpt2.
Status AddBpeVocab(const fs::path& dir, const model::ModelConfig& cfg, GgufWriter* w,
                   GgufVocabSummary* summary) {
  const fs::path file = dir / "tokenizer.json";
  QF_ASSIGN(std::optional<Json> tok, ReadJson(file));
  if (!tok) {
    return Err("{}: no tokenizer.model or tokenizer.json (llama.cpp needs the vocabulary)",
               dir.string());
  }
  if (!tok->is_object() || !tok->contains("model") || !(*tok)["model"].is_object() ||
      !(*tok)["model"].contains("vocab") || !(*tok)["model"]["vocab"].is_object()) {
    return Err("{}: no model.vocab object", file.string());
  }
  if ((*tok)["model"].value("type", "BPE") != "BPE")
    return Err("{}: tokenizer model type is not BPE", file.string());
  QF_ASSIGN(std::string pre, BpePreName(*tok, file.string()));

  const int64_t n = cfg.vocab_size;
  std::vector<std::string> by_id(static_cast<size_t>(n));
  std::vector<bool> present(static_cast<size_t>(n), false);
  auto place = [&](const std::string& text, const Json& id) -> Status {
    if (!id.is_number_integer())
      return Err("{}: token '{}' has a non-integer id", file.string(), text);
    const int64_t i = id.get<int64_t>();
    if (i < 0 || i >= n) {
      return Err("{}: token id {} is outside config.json's vocab_size {}", file.string(), i, n);
    }
    by_id[size_t(i)] = text;
    present[size_t(i)] = true;
    return Status::Ok();
  };
  for (const auto& [text, id] : (*tok)["model"]["vocab"].items()) QF_TRY(place(text, id));
  // Added tokens (special or not), by content: get_added_vocab() in transformers.
  std::vector<std::pair<std::string, bool>> added;  // content, special
  if (tok->contains("added_tokens") && (*tok)["added_tokens"].is_array()) {
    for (const Json& a : (*tok)["added_tokens"]) {
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string()) continue;
      const std::string content = a["content"].get<std::string>();
      QF_TRY(place(content, a.value("id", Json())));
      added.emplace_back(content, a.value("special", false));
    }
  }
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  tokens.reserve(size_t(n));
  types.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    if (!present[size_t(i)]) {
      tokens.push_back(fmt::format("[PAD{}]", i));
      types.push_back(kUnused);
      continue;
    }
    std::string token = by_id[size_t(i)];
    const auto a =
        std::find_if(added.begin(), added.end(), [&](const auto& x) { return x.first == token; });
    int32_t type = kNormal;
    if (a != added.end()) {
      if (a->second || LooksSpecial(token)) {
        type = kControl;
      } else {
        type = kUserDefined;
        token = ReplaceAll(token, kMetaSpace, " ");
      }
    }
    tokens.push_back(std::move(token));
    types.push_back(type);
  }
  summary->model = "gpt2";
  summary->pre = pre;
  summary->tokens = n;
  QF_TRY(w->Set("tokenizer.ggml.model", GgufValue("gpt2")));
  QF_TRY(w->Set("tokenizer.ggml.pre", GgufValue(pre)));
  QF_TRY(w->Set("tokenizer.ggml.tokens", GgufValue(std::move(tokens))));
  QF_TRY(w->Set("tokenizer.ggml.token_type", GgufValue(std::move(types))));
  SpecialVocab special;
  QF_TRY(special.Load(dir, /*load_merges=*/true, std::nullopt));
  if (special.merge_count() == 0) return Err("{}: no BPE merges", file.string());
  QF_TRY(special.AddTo(w));
  summary->merges = int64_t(special.merge_count());
  summary->bos = special.Id("bos");
  summary->eos = special.Id("eos");
  summary->add_bos = special.Add("bos");
  return Status::Ok();
}

// Llama 3 RoPE scaling as llama.cpp applies it: one factor per rotary frequency, stored in
// rope_freqs.weight (convert_hf_to_gguf.py LlamaModel.generate_extra_tensors, in float32).
std::vector<float> Llama3RopeFactors(const model::ModelConfig& cfg) {
  const model::RopeScaling& rs = cfg.rope_scaling;
  const auto dim = float(cfg.head_dim);
  const auto old_ctx = float(rs.original_max_position);
  const float low_wavelen = old_ctx / float(rs.low_freq_factor);
  const float high_wavelen = old_ctx / float(rs.high_freq_factor);
  std::vector<float> factors;
  for (int64_t i = 0; i < cfg.head_dim; i += 2) {
    const float freq = 1.0f / std::pow(float(cfg.rope_theta), float(i) / dim);
    const float wavelen = float(2.0 * std::numbers::pi) / freq;
    if (wavelen < high_wavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      factors.push_back(float(rs.factor));
    } else {
      const float smooth = (old_ctx / wavelen - float(rs.low_freq_factor)) /
                           float(rs.high_freq_factor - rs.low_freq_factor);
      factors.push_back(1.0f / ((1.0f - smooth) / float(rs.factor) + smooth));
    }
  }
  return factors;
}

bool SameStorage(DType d, GgmlType t) {
  return (d == DType::kF32 && t == GgmlType::kF32) || (d == DType::kF16 && t == GgmlType::kF16) ||
         (d == DType::kBF16 && t == GgmlType::kBF16);
}

}  // namespace

Result<uint32_t> GgufFileType(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return 0u;
    case GgmlType::kF16:
      return 1u;
    case GgmlType::kBF16:
      return 32u;
    default:
      return Err("no all-float llama.cpp file type for {}", Info(type).name);
  }
}

std::string GgufArchitecture(const model::ModelConfig& cfg) {
  return std::string(cfg.family->gguf_arch);  // the family table's column
}

Status AddGgufQuantizedFileType(uint32_t file_type, GgufWriter* w) {
  QF_TRY(w->Set("general.quantization_version", GgufValue(uint32_t{2})));
  return w->Set("general.file_type", GgufValue(file_type));
}

std::string GgufFolderName(const fs::path& dir) {
  std::error_code ec;
  const fs::path abs = fs::absolute(dir, ec).lexically_normal();
  return (abs.has_filename() ? abs : abs.parent_path()).filename().string();
}

Status AddGgufModelMetadata(const model::ModelConfig& cfg, const std::string& name,
                            std::optional<uint32_t> file_type, GgufWriter* w) {
  const std::string arch = GgufArchitecture(cfg);
  auto u32 = [&](const std::string& key, int64_t v) -> Status {
    QF_ASSIGN(uint32_t x, U32(v, key));
    return w->Set(arch + "." + key, GgufValue(x));
  };
  auto f32 = [&](const std::string& key, double v) {
    return w->Set(arch + "." + key, GgufValue(float(v)));
  };
  QF_TRY(w->Set("general.architecture", GgufValue(arch)));
  QF_TRY(w->Set("general.type", GgufValue("model")));
  QF_TRY(w->Set("general.name", GgufValue(name)));
  QF_TRY(u32("block_count", cfg.layers));
  QF_TRY(u32("context_length", cfg.max_position));
  QF_TRY(u32("embedding_length", cfg.hidden));
  QF_TRY(u32("feed_forward_length", cfg.intermediate));
  QF_TRY(u32("attention.head_count", cfg.heads));
  QF_TRY(u32("attention.head_count_kv", cfg.kv_heads));
  if (cfg.rope_scaling.type == model::RopeScaling::Type::kLinear) {
    QF_TRY(w->Set(arch + ".rope.scaling.type", GgufValue("linear")));
    QF_TRY(f32("rope.scaling.factor", cfg.rope_scaling.factor));
  }
  QF_TRY(f32("rope.freq_base", cfg.rope_theta));
  QF_TRY(f32("attention.layer_norm_rms_epsilon", cfg.rms_eps));
  // llama.cpp derives the head size as embedding_length / head_count unless told otherwise.
  if (cfg.hidden % cfg.heads != 0 || cfg.head_dim != cfg.hidden / cfg.heads) {
    QF_TRY(u32("attention.key_length", cfg.head_dim));
    QF_TRY(u32("attention.value_length", cfg.head_dim));
  }
  if (file_type) QF_TRY(w->Set("general.file_type", GgufValue(*file_type)));
  if (cfg.family->gguf_llama_layout) {  // LlamaModel.set_gguf_parameters
    QF_TRY(u32("vocab_size", cfg.vocab_size));
    QF_TRY(u32("rope.dimension_count", cfg.head_dim));
  }
  if (file_type) QF_TRY(w->Set("general.quantization_version", GgufValue(uint32_t{2})));
  return Status::Ok();
}

namespace {
Result<GgufVocabSummary> AddTokenizerImpl(const fs::path& dir, const model::ModelConfig& cfg,
                                          GgufWriter* w) {
  GgufVocabSummary summary;
  QF_ASSIGN(std::optional<Json> tc, ReadJson(dir / "tokenizer_config.json"));
  if (tc && !tc->is_object()) tc.reset();
  // LlamaModel.set_vocab: an explicit add_prefix_space is kept for the tokenizer.
  if (cfg.family->gguf_llama_layout && tc && tc->contains("add_prefix_space") &&
      (*tc)["add_prefix_space"].is_boolean()) {
    QF_TRY(w->Set("tokenizer.ggml.add_space_prefix",
                  GgufValue((*tc)["add_prefix_space"].get<bool>())));
  }
  std::error_code ec;
  if (fs::exists(dir / "tokenizer.model", ec)) {
    QF_TRY(AddSentencePieceVocab(dir, cfg, tc, w, &summary));
  } else {
    QF_TRY(AddBpeVocab(dir, cfg, w, &summary));
  }
  return summary;
}
}  // namespace

Result<GgufVocabSummary> AddGgufTokenizer(const fs::path& dir, const model::ModelConfig& cfg,
                                          GgufWriter* w) {
  try {
    return AddTokenizerImpl(dir, cfg, w);
  } catch (const nlohmann::json::exception& e) {  // a field of an unexpected JSON type
    return Err("{}: unexpected tokenizer file structure: {}", dir.string(), e.what());
  }
}

Result<VocabBos> LlamaCppVocabBos(const fs::path& model) {
  std::string tok_model, pre;
  std::optional<bool> key;
  VocabBos out;
  std::error_code ec;
  if (fs::is_regular_file(model, ec)) {  // a GGUF file: its own keys
    QF_ASSIGN(const GgufFile f, GgufFile::Open(model));
    auto str = [&](std::string_view k) {
      const GgufValue* v = f.Find(k);
      return v && v->get<std::string>() ? *v->get<std::string>() : std::string();
    };
    tok_model = str("tokenizer.ggml.model");
    pre = str("tokenizer.ggml.pre");
    if (const GgufValue* v = f.Find("tokenizer.ggml.add_bos_token"); v && v->get<bool>())
      key = *v->get<bool>();
    if (const GgufValue* v = f.Find("tokenizer.ggml.bos_token_id"); v && v->ToInt())
      out.bos = *v->ToInt();
  } else {  // a folder: the keys `qforge convert` would write
    QF_ASSIGN(const model::ModelConfig cfg, model::LoadHfConfig(model));
    GgufWriter w;
    QF_ASSIGN(const GgufVocabSummary vs, AddGgufTokenizer(model, cfg, &w));
    tok_model = vs.model;
    pre = vs.pre;
    key = vs.add_bos;
    out.bos = vs.bos;
  }
  out.add = text::LlamaCppAddsBos(tok_model, pre, key);
  return out;
}

Result<std::vector<GgufTensorPlan>> PlanGgufTensors(const model::ModelConfig& cfg,
                                                    const TensorStore& store) {
  const model::TensorNames& n = *cfg.family->names;
  const bool llama = cfg.family->gguf_llama_layout;
  const int64_t h = cfg.hidden, q = cfg.q_dim(), kv = cfg.kv_dim(), ff = cfg.intermediate;
  std::vector<GgufTensorPlan> plan;
  std::set<std::string> used;
  const std::string where = store.files().empty() ? "model" : store.files().front().string();

  auto take = [&](const std::string& hf, std::string gguf, std::vector<int64_t> shape,
                  bool f32_only, int64_t permute_heads) -> Status {
    const TensorInfo* t = store.Find(hf);
    if (t == nullptr) return Err("{}: missing tensor '{}'", where, hf);
    if (t->shape != shape) {
      return Err("{}: tensor '{}' has shape {}, expected {} from config.json", t->file, hf,
                 ShapeString(t->shape), ShapeString(shape));
    }
    if (!qf::Info(t->dtype).is_float)
      return Err("{}: tensor '{}' has dtype {} (expected a float type)", t->file, hf,
                 Name(t->dtype));
    used.insert(hf);
    GgufTensorPlan p;
    p.name = std::move(gguf);
    p.source = t;
    p.shape = std::move(shape);
    p.is_float32_only = f32_only;
    p.permute_heads = permute_heads;
    plan.push_back(std::move(p));
    return Status::Ok();
  };

  if (cfg.rope_scaling.type == model::RopeScaling::Type::kLlama3) {
    if (!llama) return Err("llama3 rope_scaling is only converted for Llama models");
    GgufTensorPlan p;
    p.name = "rope_freqs.weight";
    p.values = Llama3RopeFactors(cfg);
    p.shape = {int64_t(p.values.size())};
    p.is_float32_only = true;
    plan.push_back(std::move(p));
  }
  QF_TRY(take(n.embed, "token_embd.weight", {cfg.vocab_size, h}, false, 0));
  for (int64_t l = 0; l < cfg.layers; ++l) {
    auto hf = [&](const char* pattern) { return model::LayerTensorName(pattern, l); };
    const std::string blk = "blk." + std::to_string(l) + ".";
    QF_TRY(take(hf(n.attn_norm), blk + "attn_norm.weight", {h}, true, 0));
    QF_TRY(take(hf(n.q), blk + "attn_q.weight", {q, h}, false, llama ? cfg.heads : 0));
    QF_TRY(take(hf(n.k), blk + "attn_k.weight", {kv, h}, false, llama ? cfg.kv_heads : 0));
    QF_TRY(take(hf(n.v), blk + "attn_v.weight", {kv, h}, false, 0));
    QF_TRY(take(hf(n.o), blk + "attn_output.weight", {h, q}, false, 0));
    if (cfg.qkv_bias) {
      QF_TRY(take(hf(n.q_bias), blk + "attn_q.bias", {q}, true, llama ? cfg.heads : 0));
      QF_TRY(take(hf(n.k_bias), blk + "attn_k.bias", {kv}, true, llama ? cfg.kv_heads : 0));
      QF_TRY(take(hf(n.v_bias), blk + "attn_v.bias", {kv}, true, 0));
    }
    if (cfg.family->qk_norm) {
      QF_TRY(take(hf(n.q_norm), blk + "attn_q_norm.weight", {cfg.head_dim}, true, 0));
      QF_TRY(take(hf(n.k_norm), blk + "attn_k_norm.weight", {cfg.head_dim}, true, 0));
    }
    QF_TRY(take(hf(n.ffn_norm), blk + "ffn_norm.weight", {h}, true, 0));
    QF_TRY(take(hf(n.gate), blk + "ffn_gate.weight", {ff, h}, false, 0));
    QF_TRY(take(hf(n.up), blk + "ffn_up.weight", {ff, h}, false, 0));
    QF_TRY(take(hf(n.down), blk + "ffn_down.weight", {h, ff}, false, 0));
  }
  QF_TRY(take(n.final_norm, "output_norm.weight", {h}, true, 0));
  // Tied embeddings: llama.cpp reuses token_embd when output.weight is absent.
  if (store.Find(n.lm_head) != nullptr || !cfg.tie_embeddings)
    QF_TRY(take(n.lm_head, "output.weight", {cfg.vocab_size, h}, false, 0));

  for (const TensorInfo& t : store.tensors()) {
    if (used.count(t.name) || EndsWith(t.name, ".rotary_emb.inv_freq")) continue;
    return Err("{}: tensor '{}' has no counterpart in llama.cpp's '{}' architecture", t.file,
               t.name, GgufArchitecture(cfg));
  }
  return plan;
}

int64_t GgufSourceRow(const GgufTensorPlan& p, int64_t r, int64_t rows) {
  if (p.permute_heads <= 0) return r;
  // ggml's RoPE rotates adjacent pairs (2i, 2i+1) of a head; Hugging Face's rotate-half pairs
  // (i, i + head/2). Output row 2i+j of a head takes input row j*head/2 + i.
  const int64_t head = rows / p.permute_heads;
  const int64_t hd = r / head, rem = r % head;
  return hd * head + (rem % 2) * (head / 2) + rem / 2;
}

Status FillGgufFloatTensor(const GgufTensorPlan& p, GgmlType type, std::span<std::byte> out) {
  if (type != GgmlType::kF32 && type != GgmlType::kF16 && type != GgmlType::kBF16)
    return Err("cannot write {} as {}", p.name, Info(type).name);
  const size_t out_size = Info(type).type_size;
  if (p.source == nullptr) {
    if (out.size() != p.values.size() * out_size) return Err("{}: size mismatch", p.name);
    if (!ConvertFromF32(*FloatDType(type), p.values.data(), p.values.size(), out.data()))
      return Err("{}: cannot convert", p.name);
    return Status::Ok();
  }
  const TensorInfo& src = *p.source;
  const DType dt = src.dtype;
  const size_t in_size = qf::Info(dt).bytes;
  const int64_t numel = src.numel();
  // 1-D tensors are rows of one value, so that a bias permutes like its weight's rows.
  const int64_t cols = p.shape.size() >= 2 ? p.shape.back() : 1;
  const int64_t rows = cols == 0 ? 0 : numel / cols;
  if (out.size() != size_t(numel) * out_size || src.data.size() != size_t(numel) * in_size)
    return Err("{}: size mismatch", p.name);
  if (p.permute_heads > 0 && (rows % p.permute_heads != 0 || (rows / p.permute_heads) % 2 != 0))
    return Err("{}: {} rows do not split into {} heads of even size", p.name, rows,
               p.permute_heads);
  const DType out_dtype = *FloatDType(type);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t s = GgufSourceRow(p, r, rows);
    const std::byte* in = src.data.data() + size_t(s * cols) * in_size;
    std::byte* o = out.data() + size_t(r * cols) * out_size;
    if (SameStorage(dt, type)) {
      std::memcpy(o, in, size_t(cols) * in_size);
      continue;
    }
    if (!ConvertToF32(dt, in, size_t(cols), row.data()))
      return Err("{}: cannot convert {} to f32", src.name, Name(dt));
    ConvertFromF32(out_dtype, row.data(), size_t(cols), o);
  }
  return Status::Ok();
}

Result<GgufConvertReport> ConvertHfToGguf(const fs::path& model_dir, const fs::path& out,
                                          const GgufConvertOptions& options) {
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec))
    return Err("{}: expected a model folder (config.json + *.safetensors)", model_dir.string());
  QF_ASSIGN(model::ModelConfig cfg, model::LoadHfConfig(model_dir));
  // Packed codes and scales are not weights llama.cpp could use as they are.
  QF_TRY(model::CheckUnquantized(model_dir, "convert"));
  QF_ASSIGN(TensorStore store, TensorStore::Open(model_dir));

  GgufConvertReport report;
  report.architecture = GgufArchitecture(cfg);
  if (options.outtype) {
    report.outtype = *options.outtype;
  } else {  // "auto": the dtype of the first 2-D weight when it is 16-bit, else f16
    report.outtype = GgmlType::kF16;
    for (const TensorInfo& t : store.tensors()) {
      if (t.shape.size() < 2) continue;
      if (t.dtype == DType::kBF16) report.outtype = GgmlType::kBF16;
      break;
    }
  }
  QF_ASSIGN(uint32_t file_type, GgufFileType(report.outtype));

  const std::string name = options.name.empty() ? GgufFolderName(model_dir) : options.name;

  GgufWriter w;
  QF_ASSIGN(std::vector<GgufTensorPlan> plan, PlanGgufTensors(cfg, store));
  QF_TRY(AddGgufModelMetadata(cfg, name, file_type, &w));
  QF_ASSIGN(report.vocab, AddGgufTokenizer(model_dir, cfg, &w));
  for (const GgufTensorPlan& p : plan) {
    const GgmlType type = p.is_float32_only ? GgmlType::kF32 : report.outtype;
    QF_TRY(w.AddTensor(p.name, type, p.shape, [&p, type](std::span<std::byte> o) {
      return FillGgufFloatTensor(p, type, o);
    }));
  }
  if (cfg.sliding_window > 0 && cfg.sliding_window < cfg.max_position) {
    report.notes.push_back(fmt::format(
        "sliding_window {} is not stored: llama.cpp's '{}' architecture attends to the whole "
        "context",
        cfg.sliding_window, report.architecture));
  }
  QF_TRY(w.Write(out, options.progress));
  report.tensors = w.tensor_count();
  report.file_bytes = w.FileSize();
  return report;
}

}  // namespace qf::pipeline
