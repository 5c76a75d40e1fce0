// Hugging Face tokenizer.json pipeline (private to src/text): added-token split, normalizers,
// pre-tokenizers and a BPE model, as plain data built by the loader and run by HfTokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "text/bpe_model.h"
#include "text/regex_split.h"
#include "text/tokenizer.h"

namespace qf::text {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;  // special tokens decode to nothing (like skip_special_tokens)
  bool lstrip = false;   // swallows the whitespace before it
  bool rstrip = false;   // swallows the whitespace after it
};

struct NormalizerStep {
  enum class Kind { kNfc, kPrepend, kReplace };
  Kind kind = Kind::kNfc;
  std::string text;                       // kPrepend: the prefix; kReplace: the replacement
  std::shared_ptr<SplitPattern> pattern;  // kReplace: what is replaced
};

// HF SplitDelimiterBehavior: what happens to the matched delimiters.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
enum class PrependScheme { kAlways, kFirst, kNever };

struct PreTokenizerStep {
  enum class Kind { kSplit, kMetaspace, kByteLevel };
  Kind kind = Kind::kSplit;
  // kSplit, and kByteLevel with use_regex (the GPT-2 pattern, isolated).
  std::shared_ptr<SplitPattern> pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;  // the matches are the pieces and the gaps the delimiters
  // kMetaspace: spaces become `replacement`, which is prepended per `prepend`. Unlike HF
  // tokenizers (which skips it when the text already starts with a space), the prefix is
  // added unconditionally, as sentencepiece's add_dummy_prefix does, so that a converted
  // tokenizer.json gives the ids of the tokenizer.model it came from.
  std::string replacement;
  PrependScheme prepend = PrependScheme::kAlways;
  bool split = false;             // kMetaspace: cut before every replacement character
  bool add_prefix_space = false;  // kByteLevel: prepend ' ' to a piece not starting with one
};

struct HfPipeline {
  std::vector<AddedToken> added;  // matched in the raw text, longest first
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;  // a kByteLevel step can only be the last
  bool byte_level = false;                       // words map to the GPT-2 byte alphabet before BPE
  std::string meta_space;       // "▁" when spaces are written as a metaspace, else empty
  int decode_strip_spaces = 0;  // leading spaces Decode drops (Strip / Metaspace decoders)
  int32_t bos_id = -1;
  int32_t eos_id = -1;
};

// Parses the normalizer, pre_tokenizer and decoder sections of a tokenizer.json, each given as
// JSON text ("null" for none), into `p`: vocabularies stored elsewhere (GGUF's tokenizer.ggml.*
// arrays) describe their pipeline as the tokenizer.json it came from and reuse these parsers.
Status ParseHfPipelineSections(std::string_view normalizer, std::string_view pre_tokenizer,
                               std::string_view decoder, HfPipeline* p);

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(HfPipeline pipeline, std::unique_ptr<BpeModel> model);

  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const override;
  std::string DecodeToken(int32_t id) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;
  int32_t vocab_size() const override;
  int32_t bos_id() const override { return p_.bos_id; }
  int32_t eos_id() const override { return p_.eos_id; }
  std::string kind() const override;

 private:
  // Text between added tokens: normalize, pre-tokenize, BPE each word.
  void EncodeSegment(std::string_view text, bool at_start, std::vector<int32_t>* ids) const;
  void PreTokenize(const PreTokenizerStep& step, bool at_start,
                   std::vector<std::string>* words) const;
  const AddedToken* AddedById(int32_t id) const;

  HfPipeline p_;
  std::unique_ptr<BpeModel> model_;
  std::vector<std::vector<int>> added_by_first_byte_;  // indices into p_.added, longest first
  std::vector<int> added_index_by_id_;                 // id -> index in p_.added, or -1
  // Set when no token holds the metaspace after another character: words are then cut before
  // each metaspace run, which cannot change the merges but lets the word cache work when the
  // whole text is one pre-token (Metaspace without split, or Prepend/Replace normalizers).
  bool cut_at_meta_space_ = false;
};

}  // namespace qf::text
