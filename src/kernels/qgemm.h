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
#include <string>

#include "core/memory.h"
#include "formats/activation.h"
#include "formats/ggml_blocks.h"
#include "formats/quantize.h"
#include "kernels/cpu/fp8_dot.h"
#include "kernels/cpu/int8_gemm.h"
#include "kernels/cpu/int_dot.h"

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
  // Prefill on the float tiles even where the integer prefill (MatMulGgmlQ8) runs: the exact
  // products of the decoded weights (Model::UseFloatActivationGemm; tests).
  bool float_prefill = false;
};

}  // namespace qf

namespace qf::kernels {

// A QuantizedTensor in the layout the kernels run, its codes held once (ToKernelLayout):
//   kNibbles: integer codes < 16 (int2/3/4) with cols % 64 == 0, two per byte
//             (kernels/cpu/int_dot.h's nibble layout);
//   kNibbles16: the same nibbles interleaved in groups of 16 rows (int_dot.h IntInterleave),
//             where IntInterleaves(rows, group): the decoding GEMV's lanes are rows;
//   kBytes:   one byte per code: int8 codes, fp8 bytes, and int2/3/4 rows of other widths;
//   kInt8x16: int8 codes of a linear whose activations are int8 too (W8A8) and whose
//             parameters are per channel or per tensor: code - 128 as signed bytes in
//             kernels/cpu/int8_gemm.h's 16-row blocks, with row sums.
// scales and zeros are [rows, cols / group] (group = cols for per-channel and per-tensor
// schemes: a tensor's one scale repeated per row); zeros hold the integer zero points as floats,
// 2^(bits-1) for symmetric schemes, and are empty for fp8.
struct QuantMatrix {
  enum class Layout : uint8_t { kNibbles, kNibbles16, kBytes, kInt8x16 };
  QuantScheme scheme;
  Layout layout = Layout::kBytes;
  int64_t rows = 0, cols = 0, group = 0;
  size_t row_bytes = 0;           // kNibbles, kNibbles16, kBytes
  AlignedVector<uint8_t> codes;   // rows * row_bytes, or Int8PackedBytes(rows, cols)
  std::vector<int32_t> row_sums;  // kInt8x16
  std::vector<float> scales, zeros;
  // Prefill of integer weights on the float tiles even where the A16 integer GEMM runs: the
  // exact products of the decoded weights (Model::UseFloatActivationGemm; tests).
  bool float_prefill = false;
  bool fp8_nan_free = false;  // fp8: no NaN code among the codes (Fp8Rows::nan_free)

  int64_t groups() const { return cols / group; }
  // Rows [r0, r1) for the integer kernels (kNibbles / kNibbles16 / kBytes of an integer scheme;
  // kNibbles16: r0 a multiple of 16).
  IntRows Rows(int64_t r0, int64_t r1) const;
  // Rows [r0, r1) of an fp8-e4m3 matrix for kernels/cpu/fp8_dot.
  Fp8Rows Fp8(int64_t r0, int64_t r1) const;
  Int8Rows Int8() const;
  // Bytes the kernels stream per product: codes, scales, zeros (asymmetric only), row sums.
  size_t StreamedBytes() const;
};

// act: the linear's activation quantization (int8 with per-channel/tensor int8 weights selects
// kInt8x16). Codes, scales and zeros are those of q, value for value.
QuantMatrix ToKernelLayout(const QuantizedTensor& q, const ActQuant& act);
// The codes back in QuantizedTensor form (tests; the plain reference below).
QuantizedTensor FromKernelLayout(const QuantMatrix& w);

// y[M, N] = act(x)[M, K] · deq(w)ᵀ (+ bias), where act is the activation quantization:
//   - kInt8x16: x quantized to int8 per QuantizeActivationsU8 (exactly QuantizeActivations'
//     codes), the int8 GEMM's exact sums acc, then y = float(acc) * scale_x * scale_w (+ bias):
//     the exact integer product times the scales, one rounding each. A call whose x has a
//     non-finite value takes the float path below instead.
//   - fp8-e4m3 weights with fp8 activations, more than kQuantGemvTokens tokens: x quantized per
//     QuantizeActivationsBf16 (QuantizeActivations' fp8 values), kernels/cpu/fp8_gemm's exact
//     fp8 × fp8 products summed in fp32 (AMX tiles, AVX512-BF16 or fp32 FMAs), then y = acc *
//     scale_x * scale_w (+ bias): within fp32 rounding of the float path below.
//   - otherwise x is quantized and dequantized (QuantizeActivations, when act is enabled), then
//     integer weights run, up to kQuantGemvTokens tokens, the fixed-point GEMV of
//     kernels/cpu/int_dot.h (its error bound); with more tokens, where A16GemmFast() and
//     A16Span(K, group) > 0 (and not w.float_prefill), the integer A16 GEMM of
//     kernels/cpu/a16_gemm.h (16-bit activations per span of up to 128 weights, exact int32
//     sums, its error bound: MatMulA16), else 64-row tiles decoded by IntDecodeRows before each
//     sgemm: the same floats and the same sgemm calls as MatMulDequantNT on the QuantizedTensor;
//     fp8-e4m3 bytes the same way with kernels/cpu/fp8_dot's GEMV and tile decoder (fp8-e5m2:
//     tiles of the table decoder at every token count).
constexpr int64_t kQuantGemvTokens = 8;
// Which prefill kernel each quantized kind runs on this CPU, for reports (`qforge bench`), e.g.
// "W8A8 amx, FP8 amx-bf16, W4A16/W8A16 avx512vnni, ggml avx512vnni" ("fp32 tiles" where the
// float tiles + fp32 GEMM run).
std::string PrefillKernels();
void MatMulQuantNT(const float* x, const QuantMatrix& w, const ActQuant& act, const float* bias,
                   float* y, int64_t m);
// The integer prefill of MatMulQuantNT for integer weights (kNibbles / kNibbles16 / kBytes): y =
// A16Gemm on QuantizeA16(x) with weights packed 64 rows at a time (+ bias); false (y untouched)
// when A16Span(K, group) is 0 or x has a non-finite value. Taken on any CPU when called directly
// (tests), by MatMulQuantNT only where A16GemmFast().
bool MatMulA16(const float* x, const QuantMatrix& w, const float* bias, float* y, int64_t m);
// The plain reference: kInt8x16 as the formula above with Int8GemmRef; the others the
// activations by QuantizeActivationsRef, then MatMulDequantNTRef on FromKernelLayout(w).
void MatMulQuantNTRef(const float* x, const QuantMatrix& w, const ActQuant& act, const float* bias,
                      float* y, int64_t m);

void MatMulDequantNT(const float* x, const QuantizedTensor& w, const float* bias, float* y,
                     int64_t m);
// y[M, N] = x · wᵀ (+ bias) for bf16 weights w[N, K] (bit patterns: an unquantized linear of a
// quantized checkpoint held as stored, half the bytes of fp32): a few tokens (GemmNT's GEMV
// range) by vec::GemvRowsBf16, the same rows per thread as GemmNT, so MatMulNT's bits on the
// widened weights; more tokens on 64-row tiles widened to fp32 before each sgemm.
void MatMulBf16NT(const float* x, const uint16_t* w, const float* bias, float* y, int64_t m,
                  int64_t n, int64_t k);
void MatMulDequantNTRef(const float* x, const QuantizedTensor& w, const float* bias, float* y,
                        int64_t m);

// Dequantizes rows [r0, r1) of w into out[(r1 - r0), K].
void DequantizeRows(const QuantizedTensor& w, int64_t r0, int64_t r1, float* out);

// Up to this many tokens MatMulGgmlNT runs the fused GEMV of kernels/cpu/ggml_dot: decoding the
// blocks costs more than the dot products until the decoded weights are reused by enough tokens.
constexpr int64_t kGgmlGemvTokens = 8;
// The same for ggml blocks. Up to kGgmlGemvTokens (decoding): the GEMV of kernels/cpu/ggml_dot on
// the blocks as stored (plain or interleaved), rows split over the threads (within that GEMV's
// error bound of the reference: fixed-point activations). More tokens (prefill): MatMulGgmlQ8 where
// it runs (within q8_gemm.h's bound: 8-bit activations in blocks of 32), else tiles of rows decoded
// by the SIMD decoders (bit-exact) into a per-thread buffer before each sgemm (up to 4 MiB of
// fp32 weights per tile).
void MatMulGgmlNT(const float* x, const GgmlTensor& w, const float* bias, float* y, int64_t m);
// The integer prefill of MatMulGgmlNT (kernels/cpu/q8_gemm.h: 8-bit activations in blocks of
// 32, exact int32 sums per span, float scales per span), taken above kGgmlGemvTokens tokens where
// GgmlQ8Runs(w); false (y untouched) when x has a non-finite value.
bool GgmlQ8Runs(const GgmlTensor& w);
bool MatMulGgmlQ8(const float* x, const GgmlTensor& w, const float* bias, float* y, int64_t m);
void MatMulGgmlNTRef(const float* x, const GgmlTensor& w, const float* bias, float* y, int64_t m);
// Decodes rows [r0, r1) of w into out[(r1 - r0), K].
void DequantizeRows(const GgmlTensor& w, int64_t r0, int64_t r1, float* out);
// w in the GEMV's compute layout where the kernels have one for its type and its rows divide
// into groups of 16 (an owned, interleaved copy; the old bytes are let go), else w unchanged.
GgmlTensor ForKernels(GgmlTensor w);

}  // namespace qf::kernels
