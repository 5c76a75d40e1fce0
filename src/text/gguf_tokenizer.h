// Tokenizers from a GGUF file's vocabulary (tokenizer.ggml.* keys), for running .gguf models.
//
// Contract: ids equal those of the tokenizer the file was converted from (LoadTokenizer on
// the source folder, for files `qforge convert` / convert_hf_to_gguf.py write):
//  - "llama": SentencePiece BPE from tokens + scores + token types, as libsentencepiece encodes
//    with an identity normalizer (what Llama-style tokenizer.model files use): spaces escaped
//    as "▁", a "▁" prefix unless tokenizer.ggml.add_space_prefix is false, invalid UTF-8 bytes
//    as U+FFFD, user-defined tokens matched whole, merges by the highest score of the merged
//    piece (leftmost first), unused pieces split back, unknown symbols as <0xNN> byte tokens
//    (or the unknown token). kind() "sentencepiece"; text is taken literally.
//  - "gpt2": byte-level BPE with tokenizer.ggml.merges, through the tokenizer.json pipeline
//    (text/hf_tokenizer.h) of the pre-tokenizer tokenizer.ggml.pre names: "gpt-2", "llama-bpe"
//    (Llama 3: its split regex, ignore_merges), "qwen2" (NFC + its split regex); CONTROL tokens
//    are special added tokens and USER_DEFINED ones plain added tokens, matched in the text.
//    kind() "bpe-bytelevel".
// bos/eos from tokenizer.ggml.bos_token_id / eos_token_id (else CONTROL tokens with well-known
// names: <s>, </s>, <|endoftext|>, ...).
// Other tokenizer models or pre-tokenizers, and malformed arrays, are one-line Errors naming
// the file and key.
#pragma once

#include <filesystem>
#include <memory>

#include "core/result.h"
#include "io/gguf.h"
#include "text/tokenizer.h"

namespace qf::text {

Result<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const std::filesystem::path& file);
Result<std::unique_ptr<Tokenizer>> GgufTokenizer(const io::GgufFile& file);

}  // namespace qf::text
