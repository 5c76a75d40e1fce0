// safetensors writer: deterministic bytes (tensors and header keys in name order, header
// padded with spaces to 8 bytes), written through AtomicFile so no half file is ever left.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/result.h"

namespace qf::io {

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> data;  // numel × dtype bytes, must outlive the call
};

Status WriteSafetensors(const std::filesystem::path& path, std::vector<TensorToWrite> tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace qf::io
