// LoadTokenizer: picks the tokenizer file of a model folder (tokenizer.model first, then
// tokenizer.json) or loads a file by its extension (.model, .json, or the vocabulary of a
// .gguf model). Errors name the path.
#include "text/tokenizer.h"

#include <fstream>
#include <string_view>
#include <system_error>

#include "text/gguf_tokenizer.h"

namespace qf::text {
namespace {

bool HasGgufMagic(const std::filesystem::path& path) {
  char magic[4] = {};
  std::ifstream in(path, std::ios::binary);
  return in.read(magic, 4) && std::string_view(magic, 4) == "GGUF";
}

}  // namespace

bool LlamaCppAddsBos(std::string_view model, std::string_view pre,
                     std::optional<bool> add_bos_token) {
  if (add_bos_token) return *add_bos_token;
  if (model == "llama") return true;
  if (model != "gpt2") return false;
  static constexpr std::string_view kLlama3Group[] = {
      "llama3",   "llama-v3", "llama-bpe",    "falcon3", "falcon-h1", "pixtral",
      "midm-2.0", "lfm2",     "jina-v5-nano", "tekken",  "chameleon"};
  for (std::string_view p : kLlama3Group)
    if (pre == p) return true;
  return false;
}

Result<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    if (std::filesystem::exists(path / "tokenizer.model", ec)) {
      return LoadSentencePiece(path / "tokenizer.model");
    }
    if (std::filesystem::exists(path / "tokenizer.json", ec)) {
      return LoadHfTokenizerJson(path / "tokenizer.json");
    }
    return Err("{}: no tokenizer.model or tokenizer.json in this folder", path.string());
  }
  if (!std::filesystem::exists(path, ec)) return Err("{}: no such file", path.string());
  const std::string ext = path.extension().string();
  if (ext == ".gguf" || HasGgufMagic(path)) return LoadGgufTokenizer(path);
  if (ext == ".model") return LoadSentencePiece(path);
  if (ext == ".json") return LoadHfTokenizerJson(path);
  return Err("{}: unknown tokenizer file type '{}' (expected .model, .json or .gguf)",
             path.string(), ext);
}

}  // namespace qf::text
