// Writes safetensors files (see safetensors_writer.h for the byte-level contract).
#include "io/safetensors_writer.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"

namespace qf::io {

Status WriteSafetensors(const std::filesystem::path& path, std::vector<TensorToWrite> tensors,
                        const std::map<std::string, std::string>& metadata) {
  std::sort(tensors.begin(), tensors.end(),
            [](const TensorToWrite& a, const TensorToWrite& b) { return a.name < b.name; });
  nlohmann::json header = nlohmann::json::object();  // std::map-backed: keys sorted
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorToWrite& t = tensors[i];
    if (i > 0 && tensors[i - 1].name == t.name)
      return Err("{}: duplicate tensor name '{}'", path.string(), t.name);
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return Err("{}: tensor '{}' has a negative dimension", path.string(), t.name);
      numel *= d;
    }
    if (uint64_t(numel) * Info(t.dtype).bytes != t.data.size())
      return Err("{}: tensor '{}' has {} bytes, expected {} for its shape", path.string(), t.name,
                 t.data.size(), uint64_t(numel) * Info(t.dtype).bytes);
    header[t.name] = {{"dtype", std::string(Name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  const uint64_t n = text.size();
  std::byte len[8];
  for (int i = 0; i < 8; ++i) len[i] = std::byte((n >> (8 * i)) & 0xff);

  QF_ASSIGN(AtomicFile out, AtomicFile::Create(path));
  QF_TRY(out.Write(std::span<const std::byte>(len, 8)));
  QF_TRY(out.Write(text));
  for (const TensorToWrite& t : tensors) QF_TRY(out.Write(t.data));
  return out.Commit();
}

}  // namespace qf::io
