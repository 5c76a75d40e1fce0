// safetensors reader: header parsing with full validation, single files and sharded folders.
// Contract: every header field is validated (known dtype, shape x dtype size == byte length,
// offsets in bounds, sorted, contiguous and non-overlapping); any violation is an Error that
// names the file and tensor. Tensor data stays memory-mapped (no copies).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mmap.h"
#include "core/result.h"

namespace qf::io {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;       // as stored, row-major; [] is a scalar
  std::span<const std::byte> data;  // points into the mapped file
  std::string file;                 // file the tensor lives in (for error messages)

  int64_t numel() const;
};

// "[d0, d1, ...]" for error messages and listings.
std::string ShapeString(const std::vector<int64_t>& shape);

// Parsed header of one safetensors file (pure function of the bytes; fuzzed).
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;              // in file order of data offsets
  std::map<std::string, std::string> metadata;  // "__metadata__" string map
};
// `file_bytes` is the whole file; `name` is used in error messages only.
Result<SafetensorsHeader> ParseSafetensors(std::span<const std::byte> file_bytes,
                                           const std::string& name);

// All tensors of a model: model.safetensors, a sharded folder (model.safetensors.index.json),
// or a single .safetensors path. Names are unique across shards.
class TensorStore {
 public:
  static Result<TensorStore> Open(const std::filesystem::path& path);

  const TensorInfo* Find(const std::string& name) const;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::vector<std::filesystem::path>& files() const { return files_; }
  uint64_t total_bytes() const;

 private:
  std::vector<std::shared_ptr<MappedFile>> maps_;
  std::vector<std::filesystem::path> files_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

}  // namespace qf::io
