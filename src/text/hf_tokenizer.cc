// Runs a tokenizer.json pipeline (see hf_tokenizer.h): added tokens, then per segment the
// normalizers, the pre-tokenizer steps, the byte-level map and BPE; decoding reverses the map.
#include "text/hf_tokenizer.h"

#include <algorithm>
#include <utility>

#include "text/unicode_util.h"

namespace qf::text {
namespace {

bool IsAsciiSpace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The byte of a byte-fallback token "<0xNN>", or -1.
int ByteFallbackValue(std::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
  const int hi = HexDigit(token[3]), lo = HexDigit(token[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// Replaces every match of `pattern` in `s` by `with`.
std::string ReplaceAll(const SplitPattern& pattern, std::string_view s, std::string_view with) {
  std::string out;
  size_t last = 0;
  for (const auto& [b, e] : pattern.FindAll(s)) {
    out.append(s.substr(last, b - last));
    out.append(with);
    last = e;
  }
  out.append(s.substr(last));
  return out;
}

struct Piece {
  std::string_view text;
  bool delimiter;
};

// Applies an HF split behavior to pieces that alternate between text and delimiters.
void ApplyBehavior(const std::vector<Piece>& pieces, SplitBehavior behavior,
                   std::vector<std::string>* out) {
  std::string pending;  // kMergedWithNext: delimiters waiting for the next piece
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Piece& p = pieces[i];
    switch (behavior) {
      case SplitBehavior::kRemoved:
        if (!p.delimiter) out->emplace_back(p.text);
        break;
      case SplitBehavior::kIsolated:
        out->emplace_back(p.text);
        break;
      case SplitBehavior::kContiguous:
        if (p.delimiter && i > 0 && pieces[i - 1].delimiter) {
          out->back().append(p.text);
        } else {
          out->emplace_back(p.text);
        }
        break;
      case SplitBehavior::kMergedWithPrevious:
        if (p.delimiter && i > 0 && !pieces[i - 1].delimiter) {
          out->back().append(p.text);
        } else {
          out->emplace_back(p.text);
        }
        break;
      case SplitBehavior::kMergedWithNext:
        if (p.delimiter) {
          pending.append(p.text);
        } else {
          out->push_back(std::move(pending) + std::string(p.text));
          pending.clear();
        }
        break;
    }
  }
  if (!pending.empty()) out->push_back(std::move(pending));
}

// Cuts `s` into pieces by the matches of `pattern` (delimiters, or with `invert` the kept
// parts) and applies `behavior`.
void SplitWord(const SplitPattern& pattern, SplitBehavior behavior, bool invert, std::string_view s,
               std::vector<std::string>* out) {
  std::vector<Piece> pieces;
  size_t last = 0;
  for (const auto& [b, e] : pattern.FindAll(s)) {
    if (b > last) pieces.push_back({s.substr(last, b - last), invert});
    pieces.push_back({s.substr(b, e - b), !invert});
    last = e;
  }
  if (last < s.size()) pieces.push_back({s.substr(last), invert});
  ApplyBehavior(pieces, behavior, out);
}

}  // namespace

HfTokenizer::HfTokenizer(HfPipeline pipeline, std::unique_ptr<BpeModel> model)
    : p_(std::move(pipeline)), model_(std::move(model)), added_by_first_byte_(256) {
  int32_t max_id = model_->size() - 1;
  for (const AddedToken& t : p_.added) max_id = std::max(max_id, t.id);
  added_index_by_id_.assign(size_t(max_id) + 1, -1);
  for (size_t i = 0; i < p_.added.size(); ++i) {
    const AddedToken& t = p_.added[i];
    added_index_by_id_[t.id] = int(i);
    if (!t.content.empty()) added_by_first_byte_[uint8_t(t.content[0])].push_back(int(i));
  }
  for (auto& bucket : added_by_first_byte_) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](int a, int b) {
      return p_.added[a].content.size() > p_.added[b].content.size();
    });
  }
  cut_at_meta_space_ = !p_.byte_level && !p_.meta_space.empty() &&
                       model_->Find(p_.meta_space) >= 0 &&
                       !model_->AnyTokenHasInterior(p_.meta_space);
}

int32_t HfTokenizer::vocab_size() const { return int32_t(added_index_by_id_.size()); }

std::string HfTokenizer::kind() const {
  if (p_.byte_level) return "bpe-bytelevel";
  return p_.meta_space.empty() ? "bpe" : "bpe-spm";
}

const AddedToken* HfTokenizer::AddedById(int32_t id) const {
  if (id < 0 || size_t(id) >= added_index_by_id_.size() || added_index_by_id_[id] < 0) {
    return nullptr;
  }
  return &p_.added[added_index_by_id_[id]];
}

std::vector<int32_t> HfTokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos && p_.bos_id >= 0) ids.push_back(p_.bos_id);
  size_t seg_begin = 0;  // start of the text not yet encoded
  size_t i = 0;
  while (i < text.size()) {
    const AddedToken* match = nullptr;
    for (int k : added_by_first_byte_[uint8_t(text[i])]) {
      const std::string& c = p_.added[k].content;
      if (text.compare(i, c.size(), c) == 0) {
        match = &p_.added[k];
        break;
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    size_t seg_end = i;
    if (match->lstrip) {
      while (seg_end > seg_begin && IsAsciiSpace(text[seg_end - 1])) --seg_end;
    }
    EncodeSegment(text.substr(seg_begin, seg_end - seg_begin), seg_begin == 0, &ids);
    ids.push_back(match->id);
    i += match->content.size();
    if (match->rstrip) {
      while (i < text.size() && IsAsciiSpace(text[i])) ++i;
    }
    seg_begin = i;
  }
  EncodeSegment(text.substr(seg_begin), seg_begin == 0, &ids);
  return ids;
}

void HfTokenizer::EncodeSegment(std::string_view text, bool at_start,
                                std::vector<int32_t>* ids) const {
  if (text.empty()) return;
  std::string s(text);
  for (const NormalizerStep& n : p_.normalizers) {
    switch (n.kind) {
      case NormalizerStep::Kind::kNfc:
        s = NfcNormalize(s);
        break;
      case NormalizerStep::Kind::kPrepend:
        if (!s.empty()) s.insert(0, n.text);
        break;
      case NormalizerStep::Kind::kReplace:
        s = ReplaceAll(*n.pattern, s, n.text);
        break;
    }
  }
  std::vector<std::string> words;
  words.push_back(std::move(s));
  for (const PreTokenizerStep& step : p_.pre_tokenizers) PreTokenize(step, at_start, &words);

  std::string mapped;
  for (const std::string& w : words) {
    std::string_view word = w;
    if (p_.byte_level) {
      mapped.clear();
      for (char c : w) AppendUtf8(ByteToUnicode(uint8_t(c)), &mapped);
      word = mapped;
    }
    if (!cut_at_meta_space_) {
      model_->EncodeWord(word, ids);
      continue;
    }
    // Cut before each metaspace that follows another character (safe, see the header).
    const std::string_view m = p_.meta_space;
    size_t begin = 0;
    for (size_t pos = word.find(m, 1); pos != std::string_view::npos; pos = word.find(m, pos + 1)) {
      if (pos >= m.size() && word.compare(pos - m.size(), m.size(), m) == 0) continue;
      model_->EncodeWord(word.substr(begin, pos - begin), ids);
      begin = pos;
    }
    model_->EncodeWord(word.substr(begin), ids);
  }
}

void HfTokenizer::PreTokenize(const PreTokenizerStep& step, bool at_start,
                              std::vector<std::string>* words) const {
  std::vector<std::string> out;
  out.reserve(words->size());
  for (std::string& w : *words) {
    switch (step.kind) {
      case PreTokenizerStep::Kind::kSplit:
        SplitWord(*step.pattern, step.behavior, step.invert, w, &out);
        break;
      case PreTokenizerStep::Kind::kMetaspace: {
        std::string s;
        s.reserve(w.size() + step.replacement.size());
        const bool prepend = step.prepend == PrependScheme::kAlways ||
                             (step.prepend == PrependScheme::kFirst && at_start);
        if (prepend && !w.empty()) s = step.replacement;
        for (char c : w) {
          if (c == ' ') {
            s += step.replacement;
          } else {
            s.push_back(c);
          }
        }
        if (!step.split) {
          out.push_back(std::move(s));
          break;
        }
        size_t begin = 0, pos = 0;
        while ((pos = s.find(step.replacement, pos + 1)) != std::string::npos) {
          out.push_back(s.substr(begin, pos - begin));
          begin = pos;
        }
        out.push_back(s.substr(begin));
        break;
      }
      case PreTokenizerStep::Kind::kByteLevel: {
        if (step.add_prefix_space && !w.empty() && w[0] != ' ') w.insert(0, " ");
        if (step.pattern) {
          SplitWord(*step.pattern, SplitBehavior::kIsolated, false, w, &out);
        } else {
          out.push_back(std::move(w));
        }
        break;
      }
    }
  }
  *words = std::move(out);
}

std::string HfTokenizer::DecodeToken(int32_t id) const {
  if (const AddedToken* t = AddedById(id)) return t->special ? std::string() : t->content;
  const std::string& token = model_->Token(id);
  std::string out;
  if (p_.byte_level) {
    // Like HF's ByteLevel decoder: a token with a character outside the alphabet stays as is.
    int32_t cp;
    for (size_t i = 0; i < token.size();) {
      i += Utf8Next(token, i, &cp);
      const int b = ByteFromUnicode(cp);
      if (b < 0) return token;
      out.push_back(char(b));
    }
    return out;
  }
  if (const int byte = ByteFallbackValue(token); byte >= 0) return std::string(1, char(byte));
  if (p_.meta_space.empty()) return token;
  for (size_t i = 0; i < token.size();) {
    if (token.compare(i, p_.meta_space.size(), p_.meta_space) == 0) {
      out.push_back(' ');
      i += p_.meta_space.size();
    } else {
      out.push_back(token[i++]);
    }
  }
  return out;
}

std::string HfTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += DecodeToken(id);
  int strip = p_.decode_strip_spaces;
  size_t n = 0;
  while (strip-- > 0 && n < out.size() && out[n] == ' ') ++n;
  return out.substr(n);
}

}  // namespace qf::text
