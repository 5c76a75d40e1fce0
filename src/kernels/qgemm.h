// GEMM on quantized weights: Y[M,N] = X[M,K] · deq(W)ᵀ (+ bias), where W is a QuantizedTensor
// (integer codes with per-tensor/channel/group scale and zero, or FP8 bytes with scales).
// Contract: rows of W are dequantized tile by tile into a small fp32 buffer right before the
// sgemm that uses them; the whole matrix is never inflated. MatMulDequantNTRef is the plain
// reference (dequantize everything, then the reference GEMM).
#pragma once

#include <cstdint>

#include "formats/quantize.h"

namespace qf::kernels {

void MatMulDequantNT(const float* x, const QuantizedTensor& w, const float* bias, float* y,
                     int64_t m);
void MatMulDequantNTRef(const float* x, const QuantizedTensor& w, const float* bias, float* y,
                        int64_t m);

// Dequantizes rows [r0, r1) of w into out[(r1 - r0), K].
void DequantizeRows(const QuantizedTensor& w, int64_t r0, int64_t r1, float* out);

}  // namespace qf::kernels
