// Importance matrices as llama.cpp's llama-imatrix writes them and llama-quantize reads them
// (tools/imatrix/imatrix.cpp, common/imatrix-loader.cpp, tools/quantize/quantize.cpp).
//
// GGUF format (current): general.type = "imatrix", imatrix.datasets [str], imatrix.chunk_count
// u32, imatrix.chunk_size u32; per entry, in name order, "<name>.in_sum2" F32 [ncols] (Σ x² of
// the linear's input per column over every token seen) and "<name>.counts" F32 [1] (the number
// of tokens). Legacy .dat: i32 n_entries; per entry, i32 name length, the name, i32 ncall, i32
// nval, nval × f32 = (Σx² / count) × ncall with ncall = ceil(count / chunk_size); then i32
// chunk count, i32 dataset length, the dataset name. Both little-endian.
//
// Contract (reader): ReadImatrix tells the formats apart by the "GGUF" magic and never throws or
// aborts on bad bytes; anything malformed is a one-line Error naming the file and the entry:
// truncation, trailing bytes, counts that cannot fit, an in_sum2 without counts (or the other
// way), non-F32 or non-1-D tensors, per-expert counts, values that are not finite and ≥ 0, a
// GGUF file without the imatrix.* keys llama-quantize requires. Legacy entries are kept as
// stored: sum2 = mean x² × ncall and count = ncall (1 when the file says ≤ 0), so Importance
// gives llama-quantize's weights for both formats.
// Contract (writers): bytes are a pure function of the Imatrix (entries in name order, as
// llama.cpp sorts them); files are written atomically.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"

namespace qf::io {

struct ImatrixEntry {
  std::vector<float> sum2;  // Σ x² per input column
  int64_t count = 0;        // tokens the sums are over
};

struct Imatrix {
  std::map<std::string, ImatrixEntry> entries;  // GGUF tensor name ("blk.0.attn_q.weight")
  std::vector<std::string> datasets;            // calibration files (paths as given)
  int64_t chunk_count = 0;                      // chunks of chunk_size tokens seen
  int64_t chunk_size = 0;                       // 0 when read from a legacy file
  bool legacy = false;                          // read from a .dat file
};

// Either format, told apart by the magic.
Result<Imatrix> ReadImatrix(const std::filesystem::path& path);
// The same from bytes; `name` is used in error messages only.
Result<Imatrix> ParseImatrix(std::span<const std::byte> bytes, const std::string& name);

Status WriteImatrixGguf(const Imatrix& m, const std::filesystem::path& path);
Result<std::vector<std::byte>> ImatrixGgufBytes(const Imatrix& m);
// Needs chunk_size > 0 unless m.legacy (then the stored values and ncalls are written back).
// The dataset recorded is the last of m.datasets.
Status WriteImatrixLegacy(const Imatrix& m, const std::filesystem::path& path);
Result<std::vector<std::byte>> ImatrixLegacyBytes(const Imatrix& m);

// The per-column weights llama-quantize passes to ggml_quantize_chunk: sum2 / count in fp32,
// all ones when count is 0.
std::vector<float> Importance(const ImatrixEntry& e);

}  // namespace qf::io
