// `qforge rotate` and `quantize --rotate`: a Hugging Face model folder rewritten with its
// RMSNorm weights folded into the linears that read each norm and its residual stream rotated by
// a randomised Hadamard matrix (methods/rotation.h; QuaRot's and SpinQuant's R1), optionally each
// attention head's values too (R2). The result is a plain checkpoint of the same architecture
// whose fp output equals the source's up to rounding, and whose linears have no outlier
// channels left to hurt a low-bit grid. Quantizing it (any method, any format) is how the
// rotation is used: `quantize --rotate` writes it to a scratch folder beside the output and
// quantizes that.
// Contract: memory holds one tensor at a time (written through a spill file); the output
// folder appears only when complete; same inputs and seed, same bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>

#include "core/atomic_file.h"
#include "core/result.h"

namespace qf::pipeline {

struct RotateOptions {
  bool heads = false;  // also rotate each attention head's values (v_proj rows, o_proj columns)
  uint64_t seed = 0;   // the rotations' random signs (and odd-size factors)
};

// "hadamard", or "hadamard+heads" with heads (the --rotate values).
std::string_view RotateName(const RotateOptions& opt);
// RotateName's inverse, with the seed: nullopt for any other name.
std::optional<RotateOptions> RotateFromName(std::string_view name, uint64_t seed);

struct RotateReport {
  bool untied = false;  // tied embeddings: lm_head written as its own tensor
  double seconds = 0;
};

// Writes `dst` (a new folder; an existing one is replaced only when complete): the rotated
// weights of the linears in fp32 (they are to be quantized), the embedding and lm_head in the
// source's dtype (16-bit floats stay 16-bit), every RMSNorm weight (attention, MLP, final) as
// ones; every other tensor and file as the source has it, except config.json's
// tie_word_embeddings, set false when the embeddings were tied (the final norm folded into
// lm_head makes it differ from the embedding).
Result<RotateReport> RotateModel(const std::filesystem::path& src, const std::filesystem::path& dst,
                                 const RotateOptions& opt);

// A rotated copy of `src` in a scratch folder beside `near` (an output path), removed with the
// object. For `quantize --rotate`.
class RotatedCopy {
 public:
  static Result<RotatedCopy> Make(const std::filesystem::path& src,
                                  const std::filesystem::path& near, const RotateOptions& opt);
  const std::filesystem::path& path() const { return dir_.path(); }
  const RotateReport& report() const { return report_; }

 private:
  RotatedCopy() = default;
  ScratchFolder dir_;  // removed with the object
  RotateReport report_;
};

}  // namespace qf::pipeline
