// GEMM on quantized weights: Y[M,N] = X[M,K] · deq(W)ᵀ (+ bias), where W is a QuantizedTensor
// (integer codes with per-tensor/channel/group scale and zero, or FP8 bytes with scales) or a
// GgmlTensor (ggml blocks as a GGUF file holds them: Q4_0..Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS).
// Contract: rows of W are dequantized tile by tile into a small fp32 buffer right before the
// sgemm that uses them (ggml blocks with a few tokens: multiplied in registers instead); the
// whole matrix is never inflated. MatMulDequantNTRef and
// MatMulGgmlNTRef are the plain references (dequantize everything, then the reference GEMM).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "formats/ggml_blocks.h"
#include "formats/quantize.h"

namespace qf {

// A [rows, cols] matrix of ggml blocks, each row a whole number of blocks (row_bytes bytes),
// rows back to back at `data`, or (interleaved) in groups of 16 rows in the GEMV's compute
// layout (kernels/cpu/ggml_dot.h GgmlInterleave: the same bytes, permuted within each group).
// `owner` keeps the bytes alive: the GGUF file mapping, or an owned copy (rows reordered or
// interleaved at load).
struct GgmlTensor {
  const GgmlBlockType* type = nullptr;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  const std::byte* data = nullptr;
  std::shared_ptr<const void> owner;
  bool interleaved = false;
};

}  // namespace qf

namespace qf::kernels {

void MatMulDequantNT(const float* x, const QuantizedTensor& w, const float* bias, float* y,
                     int64_t m);
void MatMulDequantNTRef(const float* x, const QuantizedTensor& w, const float* bias, float* y,
                        int64_t m);

// Dequantizes rows [r0, r1) of w into out[(r1 - r0), K].
void DequantizeRows(const QuantizedTensor& w, int64_t r0, int64_t r1, float* out);

// The same for ggml blocks. Up to 8 tokens (decoding): the GEMV of kernels/cpu/ggml_dot on the
// blocks as stored (plain or interleaved), rows split over the threads (within that GEMV's error
// bound of the reference: fixed-point activations). More tokens (prefill): tiles of rows decoded by
// the SIMD decoders (bit-exact) into a per-thread buffer before each sgemm (up to 4 MiB of fp32
// weights per tile).
void MatMulGgmlNT(const float* x, const GgmlTensor& w, const float* bias, float* y, int64_t m);
void MatMulGgmlNTRef(const float* x, const GgmlTensor& w, const float* bias, float* y, int64_t m);
// Decodes rows [r0, r1) of w into out[(r1 - r0), K].
void DequantizeRows(const GgmlTensor& w, int64_t r0, int64_t r1, float* out);
// w in the GEMV's compute layout where the kernels have one for its type and its rows divide
// into groups of 16 (an owned, interleaved copy; the old bytes are let go), else w unchanged.
GgmlTensor ForKernels(GgmlTensor w);

}  // namespace qf::kernels
