// Internals of formats/ggml_blocks: the scale searches ggml's quantizers share, and
// the per-type row encoders/decoders the table points to (ggml_legacy.cc, ggml_kquants.cc).
// Contract: each search repeats ggml-quants.c's float operations in the same order (same
// association, products before sums), so results agree to the bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/dtype.h"
#include "formats/ggml_blocks.h"
#include "formats/ggml_types.h"

// No fused multiply-add below, nor in the files that include this header (include it last, so
// other headers keep their own flags): ggml's quantizers (ggml-base) are built without -march
// flags, so every a * b + c there rounds twice. GCC contracts by default whenever the target has
// FMA (-march=native, x86-64-v3), clang within expressions; either changes codes and scales
// (with -march=native and no pragma, tests/ggml_blocks_test.cc fails for most types).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace qf::ggml {

inline constexpr int kQK = 256;                // weights per k-quant super-block (QK_K)
inline constexpr float kGroupMaxEps = 1e-15f;  // below this |max| a group is all zero

// ggml's nearest_int: adding 1.5 * 2^23 rounds to an integer (half to even) in the mantissa.
// Exact for |f| <= 2^22 - 1; larger inputs give some value in [-2^22, 2^22), never UB.
inline int NearestInt(float f) {
  const float v = f + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

// The blocks of a row (byte aligned: any address will do).
template <class Block>
Block* BlocksOf(std::byte* p) {
  return reinterpret_cast<Block*>(p);
}
template <class Block>
Block* BlocksOf(const std::byte* p) {
  static_assert(std::is_const_v<Block>);
  return reinterpret_cast<Block*>(p);
}

// ---- scale searches (ggml-quants.c's make_*_quants) ------------------------------------------

// Symmetric codes L[i] in [0, 2*nmax) for x ~ scale * (L - nmax), the scale chosen among 19
// candidate inverse scales -(nmax + 0.1 k)/max (k = -9..9) by weighted least squares.
// Weights: qw, or x^2 when qw is null (ggml's make_qx_quants with rmse_type 1, the only kind
// the types here use). Returns the scale (0 for an all-zero group).
float MakeQxQuants(int n, int nmax, const float* x, int8_t* L, const float* qw);

// Q3_K's reference search: codes in [0, 2*nmax), x^2 weights, then up to 5 rounds of moving
// single codes while the weighted fit improves (make_q3_quants with do_rmse).
float MakeQ3Quants(int n, int nmax, const float* x, int8_t* L);

// Asymmetric codes L[i] in [0, nmax] for x ~ scale * L - the_min (the_min >= 0), searched over
// nstep + 1 inverse scales (rmin + rdelta * k + nmax) / (max - min) with the weighted least
// squares scale and min of each; error is |diff| (use_mad) or diff^2 times the weight.
// weights must not be null. (make_qkx2_quants and make_qkx3_quants: the same for such weights.)
float MakeQkxQuants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                    float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                    bool use_mad);

// Non-negative codes L[i] in [0, nmax] for x >= 0 (the sub-block scales of a super-block) under
// importance weights qw: 9 candidate scales, then up to 5 rounds of single-code moves.
float MakeQpQuants(int n, int nmax, const float* x, uint8_t* L, const float* qw);

// ---- per type, from ggml_types.h's list (ggml_legacy.cc, ggml_kquants.cc) ---------------------
// Encode: x[cols] (cols a multiple of the block) -> cols / block blocks; importance null or
// [cols]. Decode: the inverse. kCodes (model-file types only): the code layout and lattice (see
// GgmlCodeFormat), defined beside the decoder.
#define QF_GGML_CODEC(T, ...)                                                            \
  void Encode##T(const float* x, int64_t cols, const float* importance, std::byte* out); \
  void Decode##T(const std::byte* in, int64_t cols, float* out);
#define QF_GGML_CODEC_AND_CODES(T, ...) \
  QF_GGML_CODEC(T)                      \
  extern const GgmlCodeFormat kCodes##T;
QF_GGML_TYPES(QF_GGML_CODEC_AND_CODES, QF_GGML_CODEC, QF_GGML_SKIP)
#undef QF_GGML_CODEC_AND_CODES
#undef QF_GGML_CODEC

}  // namespace qf::ggml
