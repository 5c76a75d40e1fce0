// fp32 building blocks of the decoder forward pass. Shapes use M = tokens (rows),
// N = output features, K = input features; all matrices row-major.
// Contract: *Ref functions are the plain-loop references; the others use SIMD and OpenMP and
// are tested against them.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

namespace qf::kernels {

// Y[M,N] = X[M,K] · W[N,K]ᵀ (+ bias[N] when non-null): GemmNT, then the bias.
void MatMulNT(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n,
              int64_t k);
// Up to this many rows, GemmNT runs one GEMV per row (W streamed once per row).
constexpr int64_t kGemmNTGemvTokens = 2;
// Y[M,N] (row stride ldy) = X[M,K] · W[N,K]ᵀ without bias: a GEMV (vec_math GemvRows) per row
// for M <= kGemmNTGemvTokens, else kernels/cpu/f32_gemm F32Gemm (one fma chain per output).
void GemmNT(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k, int64_t ldy);
void MatMulNTRef(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t n,
                 int64_t k);

// Rows [0, n) as one contiguous range per thread (the GEMVs of decoding: each range streams its
// own weights once): fn(r0, r1) for ranges of max(min_rows, n / threads) rows rounded up to a
// multiple of `multiple`, in an OpenMP loop (serial inside a parallel region).
// The fp32/bf16 GEMVs' row multiple: 16 floats of output per cache line, so no two threads write
// one line of an aligned y.
inline constexpr int64_t kGemvRowMultiple = 16;
void ForEachThreadRows(int64_t n, int64_t min_rows, int64_t multiple,
                       const std::function<void(int64_t, int64_t)>& fn);

// out[M,D] = x[M,D] / rms(x row) * weight[D]; rms = sqrt(mean(x²) + eps).
void RmsNorm(const float* x, const float* weight, float* out, int64_t m, int64_t d, float eps);

// In place on x[M, heads*head_dim]: rotate-half RoPE (pairs i and i + head_dim/2) for the
// token at position pos0 + row, with cos/sin tables [positions, head_dim/2].
void Rope(float* x, int64_t m, int64_t heads, int64_t head_dim, int64_t pos0, const float* cos,
          const float* sin);
// The rotation back (by −θ), in place: RoPE's transpose, i.e. its backward pass (train/).
void RopeInverse(float* x, int64_t m, int64_t heads, int64_t head_dim, int64_t pos0,
                 const float* cos, const float* sin);

// gate[M,F] = silu(gate) * up, in place.
void SiluMul(float* gate, const float* up, int64_t m, int64_t f);

// Causal grouped-query attention of M new queries at positions pos0.. against the first
// pos0+M cached keys/values. q[M, H*D], k/v cache [T, Hkv*D], out[M, H*D].
// window > 0 limits each query to the last `window` keys (sliding-window attention).
void Attention(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t m,
               int64_t pos0, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window);
void AttentionRef(const float* q, const float* k_cache, const float* v_cache, float* out, int64_t m,
                  int64_t pos0, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window);

// Row-wise log-sum-exp in double precision (for exact perplexity/KL).
double LogSumExp(const float* x, int64_t n);

// Sets OpenMP's thread count (omp_set_num_threads), the one thread setting qforge has: library
// code reads omp_get_max_threads() where it splits work, and keeps no count of its own.
void SetThreads(int threads);

}  // namespace qf::kernels
