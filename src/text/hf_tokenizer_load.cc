// Reads a Hugging Face tokenizer.json (plus a sibling tokenizer_config.json for bos/eos) into an
// HfPipeline and a BpeModel. Contract: unsupported or malformed parts give one-line Errors.
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/json.h"
#include "text/hf_tokenizer.h"

namespace qf::text {
namespace {

using nlohmann::json;

// GPT-2's pre-tokenizer pattern, used by ByteLevel when use_regex is set.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

Result<std::string> ReadWholeFile(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    return Err("{}: {}", file.string(),
               std::filesystem::exists(file, ec) ? "not a regular file" : "no such file");
  }
  std::ifstream in(file, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (!in) return Err("{}: cannot read", file.string());
  return ss.str();
}

std::string TypeOf(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>()
                                                                      : "?";
}

// A {"String": s} or {"Regex": r} pattern.
Result<std::shared_ptr<SplitPattern>> ParsePattern(const json& j) {
  const bool literal = j.contains("String");
  if (!literal && !j.contains("Regex")) return Err("pattern is neither String nor Regex");
  const std::string text = j[literal ? "String" : "Regex"].get<std::string>();
  QF_ASSIGN(std::unique_ptr<SplitPattern> p, SplitPattern::Compile(text, literal));
  return std::shared_ptr<SplitPattern>(std::move(p));
}

Result<std::shared_ptr<SplitPattern>> Pattern(std::string_view regex) {
  QF_ASSIGN(std::unique_ptr<SplitPattern> p, SplitPattern::Compile(regex, false));
  return std::shared_ptr<SplitPattern>(std::move(p));
}

Status ParseNormalizer(const json& j, HfPipeline* p) {
  if (j.is_null()) return Status::Ok();
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    for (const json& n : j.at("normalizers")) QF_TRY(ParseNormalizer(n, p));
  } else if (type == "NFC") {
    p->normalizers.push_back({NormalizerStep::Kind::kNfc, "", nullptr});
  } else if (type == "Prepend") {
    p->normalizers.push_back(
        {NormalizerStep::Kind::kPrepend, j.at("prepend").get<std::string>(), nullptr});
  } else if (type == "Replace") {
    QF_ASSIGN(auto pattern, ParsePattern(j.at("pattern")));
    const std::string content = j.at("content").get<std::string>();
    if (j["pattern"].value("String", "") == " ") p->meta_space = content;
    p->normalizers.push_back({NormalizerStep::Kind::kReplace, content, pattern});
  } else {
    return Err("unsupported normalizer '{}'", type);
  }
  return Status::Ok();
}

Result<SplitBehavior> ParseBehavior(const std::string& s) {
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  return Err("unsupported split behavior '{}'", s);
}

Status AddSplit(std::string_view regex, SplitBehavior behavior, bool invert, HfPipeline* p) {
  PreTokenizerStep step;
  step.kind = PreTokenizerStep::Kind::kSplit;
  QF_ASSIGN(step.pattern, Pattern(regex));
  step.behavior = behavior;
  step.invert = invert;
  p->pre_tokenizers.push_back(std::move(step));
  return Status::Ok();
}

Status ParsePreTokenizer(const json& j, HfPipeline* p) {
  if (j.is_null()) return Status::Ok();
  if (p->byte_level) return Err("a pre-tokenizer after ByteLevel is not supported");
  const std::string type = TypeOf(j);
  PreTokenizerStep step;
  if (type == "Sequence") {
    for (const json& n : j.at("pretokenizers")) QF_TRY(ParsePreTokenizer(n, p));
    return Status::Ok();
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    QF_ASSIGN(step.pattern, ParsePattern(j.at("pattern")));
    QF_ASSIGN(step.behavior, ParseBehavior(j.at("behavior").get<std::string>()));
    step.invert = j.value("invert", false);
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::Kind::kMetaspace;
    step.replacement = j.value("replacement", "\u2581");
    const std::string scheme = j.value("prepend_scheme", "");
    if (scheme.empty()) {  // older files: add_prefix_space
      step.prepend =
          j.value("add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
    } else if (scheme == "always" || scheme == "first" || scheme == "never") {
      step.prepend = scheme == "always"  ? PrependScheme::kAlways
                     : scheme == "first" ? PrependScheme::kFirst
                                         : PrependScheme::kNever;
    } else {
      return Err("unsupported Metaspace prepend_scheme '{}'", scheme);
    }
    step.split = j.value("split", true);
    p->meta_space = step.replacement;
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    step.add_prefix_space = j.value("add_prefix_space", true);
    if (j.value("use_regex", true)) {
      QF_ASSIGN(step.pattern, Pattern(kGpt2Pattern));
    }
    p->byte_level = true;
  } else if (type == "Digits") {
    return AddSplit(j.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)",
                    SplitBehavior::kIsolated, false, p);
  } else if (type == "Whitespace") {
    return AddSplit(R"(\w+|[^\w\s]+)", SplitBehavior::kRemoved, true, p);
  } else if (type == "WhitespaceSplit") {
    return AddSplit(R"(\s+)", SplitBehavior::kRemoved, false, p);
  } else if (type == "Punctuation") {
    QF_ASSIGN(SplitBehavior behavior, ParseBehavior(j.value("behavior", "Isolated")));
    return AddSplit(R"([\p{P}!-\/:-@\[-`{-~])", behavior, false, p);
  } else {
    return Err("unsupported pre_tokenizer '{}'", type);
  }
  p->pre_tokenizers.push_back(std::move(step));
  return Status::Ok();
}

// Decoders only matter for how many leading spaces Decode drops.
void ParseDecoder(const json& j, HfPipeline* p) {
  if (j.is_null()) return;
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    for (const json& d : j.at("decoders")) ParseDecoder(d, p);
  } else if (type == "Strip" && j.value("content", " ") == " ") {
    p->decode_strip_spaces += j.value("start", 0);
  } else if (type == "Metaspace") {
    const bool prefix = j.contains("prepend_scheme") ? j["prepend_scheme"] != "never"
                                                     : j.value("add_prefix_space", true);
    p->decode_strip_spaces += prefix ? 1 : 0;
  }
}

// Id of a token given as a string or as {"content": ...}; -1 when null or unknown.
int32_t TokenId(const json& j, const HfPipeline& p, const BpeModel& model) {
  std::string name;
  if (j.is_string()) {
    name = j.get<std::string>();
  } else if (j.is_object() && j.contains("content") && j["content"].is_string()) {
    name = j["content"].get<std::string>();
  } else {
    return -1;
  }
  for (const AddedToken& t : p.added) {
    if (t.content == name) return t.id;
  }
  return model.Find(name);
}

// bos/eos: tokenizer_config.json beside the file when it names them; else the post-processor
// template (bos = a special token before $A, eos = one after it); else well-known names.
void FindBosEos(const json& j, const std::filesystem::path& file, const BpeModel& model,
                HfPipeline* p) {
  bool have_bos = false, have_eos = false;
  std::string config_name = file.filename().string();
  const std::string_view kSuffix = "tokenizer.json";
  if (config_name.size() >= kSuffix.size() &&
      config_name.compare(config_name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0) {
    config_name.replace(config_name.size() - kSuffix.size(), kSuffix.size(),
                        "tokenizer_config.json");
    auto text = ReadWholeFile(file.parent_path() / config_name);
    json config = text.ok() ? json::parse(*text, nullptr, false) : json();
    if (config.is_object()) {
      have_bos = config.contains("bos_token");
      have_eos = config.contains("eos_token");
      if (have_bos) p->bos_id = TokenId(config["bos_token"], *p, model);
      if (have_eos) p->eos_id = TokenId(config["eos_token"], *p, model);
    }
  }
  std::vector<const json*> processors;
  static const json kNull;
  const json& post = j.contains("post_processor") ? j["post_processor"] : kNull;
  if (TypeOf(post) == "Sequence" && post.contains("processors")) {
    for (const json& q : post["processors"]) processors.push_back(&q);
  } else {
    processors.push_back(&post);
  }
  for (const json* q : processors) {
    if (TypeOf(*q) != "TemplateProcessing" || !q->contains("single")) continue;
    bool seen_sequence = false;
    for (const json& item : (*q)["single"]) {
      if (item.contains("Sequence")) seen_sequence = true;
      if (!item.contains("SpecialToken")) continue;
      const std::string name = item["SpecialToken"].at("id").get<std::string>();
      int32_t id = -1;
      const json& specials = q->contains("special_tokens") ? (*q)["special_tokens"] : kNull;
      if (specials.contains(name) && !specials[name].at("ids").empty()) {
        id = JsonInt<int32_t>(specials[name]["ids"][0], "post_processor special token id");
      } else {
        id = TokenId(name, *p, model);
      }
      if (!seen_sequence && !have_bos) {
        p->bos_id = id;
        have_bos = true;
      } else if (seen_sequence && !have_eos) {
        p->eos_id = id;
        have_eos = true;
      }
    }
  }
  for (const char* name : {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"}) {
    if (!have_bos && p->bos_id < 0) p->bos_id = TokenId(name, *p, model);
  }
  for (const char* name : {"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"}) {
    if (!have_eos && p->eos_id < 0) p->eos_id = TokenId(name, *p, model);
  }
}

Result<std::unique_ptr<Tokenizer>> Build(const json& j, const std::filesystem::path& file) {
  if (!j.is_object() || !j.contains("model")) return Err("no \"model\" section");
  const json& m = j["model"];
  const std::string type = m.contains("type") ? TypeOf(m) : m.contains("merges") ? "BPE" : "?";
  if (type != "BPE") return Err("unsupported tokenizer model type '{}' (only BPE)", type);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (m.contains(key) && m[key].is_string() && !m[key].get<std::string>().empty()) {
      return Err("BPE {} is not supported", key);
    }
  }

  if (!m.contains("vocab") || !m["vocab"].is_object()) return Err("model.vocab is not an object");
  if (!m.contains("merges") || !m["merges"].is_array()) return Err("model.merges is not a list");
  StringMap<int32_t> vocab;
  vocab.reserve(m.at("vocab").size());
  for (const auto& [token, id] : m["vocab"].items())
    vocab.emplace(token, JsonInt<int32_t>(id, "model.vocab id"));
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(m.at("merges").size());
  for (const json& merge : m["merges"]) {
    if (merge.is_array() && merge.size() == 2) {
      merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
      continue;
    }
    const std::string s = merge.get<std::string>();
    const size_t space = s.find(' ');
    if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
      return Err("merge #{} '{}' is not two tokens", merges.size(), s);
    }
    merges.emplace_back(s.substr(0, space), s.substr(space + 1));
  }
  BpeOptions options;
  auto flag = [&](const char* key) {
    return m.contains(key) && m[key].is_boolean() && m[key].get<bool>();
  };
  options.byte_fallback = flag("byte_fallback");
  options.ignore_merges = flag("ignore_merges");
  options.fuse_unk = flag("fuse_unk");
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    const std::string unk = m["unk_token"].get<std::string>();
    auto it = vocab.find(unk);
    if (it == vocab.end()) return Err("unk_token '{}' is not in the vocabulary", unk);
    options.unk_id = it->second;
  }
  QF_ASSIGN(std::unique_ptr<BpeModel> model, BpeModel::Create(std::move(vocab), merges, options));

  HfPipeline p;
  if (j.contains("added_tokens")) {
    for (const json& t : j["added_tokens"]) {
      AddedToken a;
      a.content = t.at("content").get<std::string>();
      a.id = JsonInt<int32_t>(t.at("id"), "added token id");
      if (a.id < 0 || a.id >= BpeModel::kMaxTokenId) {
        return Err("added token '{}' has id {} out of range", a.content, a.id);
      }
      a.special = t.value("special", false);
      a.lstrip = t.value("lstrip", false);
      a.rstrip = t.value("rstrip", false);
      p.added.push_back(std::move(a));
    }
  }
  QF_TRY(ParseNormalizer(j.value("normalizer", json()), &p));
  QF_TRY(ParsePreTokenizer(j.value("pre_tokenizer", json()), &p));
  ParseDecoder(j.value("decoder", json()), &p);
  FindBosEos(j, file, *model, &p);
  return std::unique_ptr<Tokenizer>(new HfTokenizer(std::move(p), std::move(model)));
}

}  // namespace

Status ParseHfPipelineSections(std::string_view normalizer, std::string_view pre_tokenizer,
                               std::string_view decoder, HfPipeline* p) {
  try {
    const json n = json::parse(normalizer), t = json::parse(pre_tokenizer),
               d = json::parse(decoder);
    QF_TRY(ParseNormalizer(n, p));
    QF_TRY(ParsePreTokenizer(t, p));
    ParseDecoder(d, p);
  } catch (const json::exception& e) {
    return Err("bad tokenizer pipeline description: {}", e.what());
  }
  return Status::Ok();
}

Result<std::unique_ptr<Tokenizer>> LoadHfTokenizerJson(const std::filesystem::path& file) {
  QF_ASSIGN(std::string text, ReadWholeFile(file));
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return Err("{}: not valid JSON: {}", file.string(), e.what());
  }
  try {
    auto tokenizer = Build(j, file);
    if (!tokenizer.ok()) return tokenizer.error().Context(file.string());
    return tokenizer;
  } catch (const json::exception& e) {
    return Err("{}: unexpected tokenizer.json structure: {}", file.string(), e.what());
  }
}

}  // namespace qf::text
