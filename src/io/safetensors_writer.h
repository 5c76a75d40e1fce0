// safetensors writer: deterministic bytes (tensors and header keys in name order, header
// padded with spaces to 8 bytes), written through AtomicFile so no half file is ever left;
// Hugging Face's sharding into model-0000i-of-0000N.safetensors with an index; and a spill file
// that holds finished tensors on disk until the final write.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
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

// Hugging Face's default shard size ("5GB" in transformers' save_pretrained).
inline constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000;

// The files of a model folder as save_pretrained shards them: tensors in name order fill a shard
// until the next one would take its tensor data past max_shard_bytes (a tensor larger than that
// gets a shard of its own). One shard is written as dir/model.safetensors; several as
// dir/model-0000i-of-0000N.safetensors plus dir/model.safetensors.index.json
// ({"metadata": {"total_size": bytes of tensor data}, "weight_map": {tensor: file}}).
// Each shard carries `metadata`. Returns the file names written.
Result<std::vector<std::string>> WriteSafetensorsShards(
    const std::filesystem::path& dir, std::vector<TensorToWrite> tensors,
    const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes);

// Parses "5GB", "500MB", "2GiB", "1000000" (bytes) as transformers' max_shard_size does
// (KB/MB/GB powers of 1000, KiB/MiB/GiB powers of 1024); errors name the flag.
Result<uint64_t> ParseShardSize(const std::string& text);

// Tensors written to an unlinked scratch file in `dir` as they are finished, so memory holds
// one tensor at a time however large the model; Tensors() maps the file read-only (page cache,
// not anonymous memory) for the final write. The file disappears with the object (or the
// process). Move-only.
class TensorSpill {
 public:
  static Result<TensorSpill> Create(const std::filesystem::path& dir);
  TensorSpill(TensorSpill&&) noexcept;
  TensorSpill& operator=(TensorSpill&&) noexcept;
  ~TensorSpill();

  Status Add(std::string name, DType dtype, std::vector<int64_t> shape,
             std::span<const std::byte> bytes);
  // Every tensor added, in order; the spans stay valid while this object lives and nothing is
  // added after the call.
  Result<std::vector<TensorToWrite>> Tensors();
  uint64_t bytes() const;

 private:
  struct State;
  explicit TensorSpill(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
};

}  // namespace qf::io
