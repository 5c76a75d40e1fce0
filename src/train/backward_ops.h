// Backward passes of the forward ops in kernels/ops.h, for training (methods/qat; RoPE's is
// kernels::RopeInverse, beside the forward rotation): each takes
// the forward's inputs (and what the forward kept) and the gradient of a loss with respect to
// the op's output, and returns the gradients with respect to its inputs. Plain loops in float
// with double where a sum runs over a whole row; the parallel loops split rows or KV heads, so
// every output is computed by one thread in a fixed order: the results do not depend on the
// thread count. tests/train_test.cc checks each against finite differences.
#pragma once

#include <cstdint>

namespace qf::train {

// y = x / rms(x) · weight per row of d (kernels::RmsNorm). dx = (or +=, with accumulate) the
// gradient with respect to x.
void RmsNormBackward(const float* x, const float* weight, const float* dy, float* dx, int64_t m,
                     int64_t d, float eps, bool accumulate);
// The same norm's weight gradient: dweight[j] += Σ_rows dy[i, j] · x[i, j] / rms(x_i).
void RmsNormWeightBackward(const float* x, const float* dy, float* dweight, int64_t m, int64_t d,
                           float eps);

// h = silu(gate) · up (kernels::SiluMul, gate before the op): dgate and dup from dh.
void SiluMulBackward(const float* gate, const float* up, const float* dh, float* dgate, float* dup,
                     int64_t m, int64_t f);

// Causal grouped-query attention of one sequence of t tokens from position 0
// (kernels::Attention with pos0 = 0): q [t, heads·D], k/v [t, kv_heads·D], dout [t, heads·D].
// Writes dq, dk, dv (same shapes). The softmax is recomputed from q and k.
void AttentionBackward(const float* q, const float* k, const float* v, const float* dout, float* dq,
                       float* dk, float* dv, int64_t t, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, int64_t window);

// y[m, n] = x[m, k] · wᵀ (a linear without bias): dx[m, k] = dy · w (when dx is non-null; or
// += with accumulate) and dw[n, k] += dyᵀ · x (when dw is non-null). Scratch: dyt of n·m floats,
// dw_tmp of max(m, n)·k. The products run on kernels::F32Gemm (one fma chain per output, any thread
// count).
void LinearBackward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                    int64_t m, int64_t n, int64_t k, bool accumulate_dx, float* dyt, float* dw_tmp);

}  // namespace qf::train
