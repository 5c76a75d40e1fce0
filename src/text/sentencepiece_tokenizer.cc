// Tokenizer over libsentencepiece for tokenizer.model files: ids exactly as sentencepiece
// gives them; DecodeToken turns byte pieces into their byte and "▁" into a space.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <exception>
#include <system_error>

#include "text/tokenizer.h"

namespace qf::text {
namespace {

// What sentencepiece prints for an unknown piece (TrainerSpec's default unk_surface).
constexpr std::string_view kUnkSurface = " \xE2\x81\x87 ";
constexpr std::string_view kMetaSpace = "\xE2\x96\x81";  // U+2581

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> sp)
      : sp_(std::move(sp)) {}

  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const override {
    std::vector<int> ids;
    if (!sp_->Encode(text, &ids).ok()) ids.clear();
    std::vector<int32_t> out;
    out.reserve(ids.size() + 1);
    if (add_bos && bos_id() >= 0) out.push_back(bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }

  std::string DecodeToken(int32_t id) const override {
    if (id < 0 || id >= vocab_size() || sp_->IsControl(id) || sp_->IsUnused(id)) return "";
    if (sp_->IsUnknown(id)) return std::string(kUnkSurface);
    const std::string& piece = sp_->IdToPiece(id);
    if (sp_->IsByte(id)) {
      // Byte pieces are spelled <0xNN>.
      return std::string(1, char(std::strtol(piece.substr(3, 2).c_str(), nullptr, 16)));
    }
    std::string out;
    out.reserve(piece.size());
    for (size_t i = 0; i < piece.size();) {
      if (piece.compare(i, kMetaSpace.size(), kMetaSpace) == 0) {
        out.push_back(' ');
        i += kMetaSpace.size();
      } else {
        out.push_back(piece[i++]);
      }
    }
    return out;
  }

  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> valid;
    valid.reserve(ids.size());
    for (int32_t id : ids) {
      if (id >= 0 && id < vocab_size()) valid.push_back(id);
    }
    std::string out;
    if (!sp_->Decode(valid, &out).ok()) out.clear();
    return out;
  }

  int32_t vocab_size() const override { return sp_->GetPieceSize(); }
  int32_t bos_id() const override { return sp_->bos_id(); }
  int32_t eos_id() const override { return sp_->eos_id(); }
  std::string kind() const override { return "sentencepiece"; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace

Result<std::unique_ptr<Tokenizer>> LoadSentencePiece(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    return Err("{}: {}", file.string(),
               std::filesystem::exists(file, ec) ? "not a regular file" : "no such file");
  }
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  // libsentencepiece reports most defects in its status, but some by throwing from its trie
  // builder (a zero-length piece: "failed to insert key"; found by sentencepiece_fuzz).
  sentencepiece::util::Status status;
  try {
    status = sp->Load(file.string());
  } catch (const std::exception& e) {
    return Err("{}: not a valid SentencePiece model: {}", file.string(), e.what());
  }
  if (!status.ok()) {
    return Err("{}: not a valid SentencePiece model: {}", file.string(), status.ToString());
  }
  if (sp->GetPieceSize() <= 0) return Err("{}: SentencePiece model has no pieces", file.string());
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(sp)));
}

}  // namespace qf::text
