// Tokenizers: SentencePiece tokenizer.model (libsentencepiece) and Hugging Face tokenizer.json
// (byte-level BPE: GPT-2 / Llama-3 / Qwen2 pre-tokenizers; SentencePiece-style BPE with byte
// fallback), behind one interface.
// Contract: Encode never adds BOS unless asked; ids are exact against the reference tokenizers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace qf::text {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes text as it is (special-token strings in the text are matched as added tokens
  // for tokenizer.json; the SentencePiece tokenizer treats text literally).
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_bos) const = 0;
  // The text piece of one token, as bytes to print when streaming (byte-fallback tokens give
  // their raw byte; the SentencePiece "▁" becomes a space). Special/control tokens (BOS, EOS,
  // chat markers flagged special) and ids out of range give "".
  virtual std::string DecodeToken(int32_t id) const = 0;
  // The text of `ids`: their DecodeTokens joined, less the leading space that the SentencePiece
  // dummy prefix put there.
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the vocabulary has none
  virtual int32_t eos_id() const = 0;  // -1 when the vocabulary has none
  // "sentencepiece", "bpe-bytelevel", "bpe-spm" (metaspace BPE, byte fallback), or "bpe".
  virtual std::string kind() const = 0;
};

// llama.cpp's add-BOS rule for a vocabulary (llama-vocab.cpp): the tokenizer.ggml.add_bos_token
// key when present; else true for SentencePiece vocabularies (tokenizer.ggml.model "llama") and
// for byte-level BPE with a pre-tokenizer of the Llama-3 group (tokenizer.ggml.pre "llama-bpe",
// "llama3", "falcon3", "pixtral", ...); else false. The one add-BOS policy of qforge (see
// pipeline::LlamaCppVocabBos for where model/pre/key come from).
bool LlamaCppAddsBos(std::string_view model, std::string_view pre,
                     std::optional<bool> add_bos_token);

// Loads tokenizer.model (preferred when present) or tokenizer.json from a model folder,
// or the file itself when `path` is a file (by extension: .model, .json, or .gguf for the
// vocabulary stored in a GGUF model, text/gguf_tokenizer.h).
// tokenizer.json: model type BPE; normalizers NFC, Prepend, Replace, Sequence; pre-tokenizers
// Split, ByteLevel, Metaspace, Digits, Whitespace(Split), Punctuation, Sequence; bos/eos from a
// sibling tokenizer_config.json (NAME.tokenizer.json -> NAME.tokenizer_config.json), else the
// post-processor template, else well-known names. Metaspace prepends "▁" even to text that
// starts with a space, as sentencepiece does (HF tokenizers does not; only that first token
// can differ), so that a converted tokenizer.json matches its tokenizer.model.
Result<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::filesystem::path& path);
Result<std::unique_ptr<Tokenizer>> LoadSentencePiece(const std::filesystem::path& file);
Result<std::unique_ptr<Tokenizer>> LoadHfTokenizerJson(const std::filesystem::path& file);

}  // namespace qf::text
