// The ggml block types that are rows of the scheme table: Q4_0 is int4-g32-sym and Q8_0 is
// int8-g32-sym (x = d · (code − 2^(bits−1)), one fp16 d per 32 weights and nothing else in the
// block), so a method that works on a QuantizedTensor (QAT) can start from such blocks and
// write its result back as them. Types with a second header field (Q4_1's min, Q5_0's fifth
// bits), non-uniform grids (IQ4_NL) or quantized sub-block scales (k-quants) are not rows.
// Contract: GgmlToQuantized is exact (Dequantize of its result equals DequantizeRowsGgml bit for
// bit, negative d included: ggml's Q4_0 picks d = max / −8); QuantizedToGgml stores every scale
// rounded to fp16 (nearest even) and the codes as they are, so GgmlToQuantized of its bytes is
// the tensor with its scales rounded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "core/result.h"
#include "formats/ggml_blocks.h"
#include "formats/quantize.h"
#include "formats/scheme.h"

namespace qf {

// The scheme row whose values type t's blocks hold, or nullopt.
std::optional<QuantScheme> GgmlUniformScheme(const GgmlBlockType& t);

// rows x cols weights of type t (GgmlRowsBytes bytes) as codes and scales of that row.
Result<QuantizedTensor> GgmlToQuantized(const GgmlBlockType& t, std::span<const std::byte> in,
                                        int64_t rows, int64_t cols);

// q (on t's scheme row) as t's blocks, row after row.
Result<std::vector<std::byte>> QuantizedToGgml(const GgmlBlockType& t, const QuantizedTensor& q);

}  // namespace qf
