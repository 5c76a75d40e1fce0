// The one list of ggml tensor types (QF_GGML_TYPES) and the block layouts of those qforge encodes.
// Contract: ids are ggml.h's enum ggml_type, sizes those of ggml-common.h's structs (each
// checked by a static_assert); io's GgmlType enum and size table, the format table (ggml_blocks.cc)
// and the kernel dispatch (kernels/cpu/ggml_dot*) are all expanded from QF_GGML_TYPES.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/dtype.h"

namespace qf::ggml {

static_assert(std::endian::native == std::endian::little, "the kernels load block fields in place");

// ---- fields: little-endian, one byte aligned, so that a block may start at any byte ----------
struct F16 {  // IEEE half; stored rounding to nearest even
  uint8_t bytes[2];
  uint16_t Bits() const { return uint16_t(bytes[0] | bytes[1] << 8); }
  float Get() const { return F16ToF32(Bits()); }
  void Set(float v) { SetBits(F16BitsRne(v)); }
  void SetBits(uint16_t h) {
    bytes[0] = uint8_t(h & 0xff);
    bytes[1] = uint8_t(h >> 8);
  }
};
struct U16 {
  uint8_t bytes[2];
  uint16_t Get() const { return uint16_t(bytes[0] | bytes[1] << 8); }
  void Set(uint16_t v) {
    bytes[0] = uint8_t(v & 0xff);
    bytes[1] = uint8_t(v >> 8);
  }
};
struct U32 {
  uint8_t bytes[4];
  uint32_t Get() const {
    return uint32_t(bytes[0]) | uint32_t(bytes[1]) << 8 | uint32_t(bytes[2]) << 16 |
           uint32_t(bytes[3]) << 24;
  }
  void Set(uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes[i] = uint8_t(v >> (8 * i));
  }
};

// ---- blocks (ggml-common.h), bits per weight and the formula back to floats ------------------
// Legacy blocks of 32 weights: weight j in the low nibble of qs[j], weight j + 16 in the high.

struct BlockQ4_0 {  // 4.5 bpw; x = d * (q - 8)
  F16 d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_0) == 18);
struct BlockQ4_1 {  // 5.0 bpw; x = d * q + m
  F16 d, m;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_1) == 20);
struct BlockQ5_0 {  // 5.5 bpw; x = d * (q - 16), the fifth bit of weight j is bit j of qh
  F16 d;
  U32 qh;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_0) == 22);
struct BlockQ5_1 {  // 6.0 bpw; x = d * q + m, fifth bits as Q5_0
  F16 d, m;
  U32 qh;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_1) == 24);
struct BlockQ8_0 {  // 8.5 bpw; x = d * q
  F16 d;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_0) == 34);
struct BlockQ8_1 {  // 9.0 bpw; x = d * q, s = d * Σq (the activation partner of Q4_1 / Q5_1)
  F16 d, s;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_1) == 36);

// k-quants: super-blocks of 256 weights in sub-blocks of 16 or 32.

struct BlockQ2_K {     // 2.625 bpw; x = d * sc * q - dmin * m, q in [0, 3]
  uint8_t scales[16];  // sub-block j of 16: scale sc (low nibble), min m (high nibble)
  uint8_t qs[64];      // byte 32 h + l: weights 128 h + l + {0, 32, 64, 96} at bits 0, 2, 4, 6
  F16 d, dmin;
};
static_assert(sizeof(BlockQ2_K) == 84);
struct BlockQ3_K {     // 3.4375 bpw; x = d * s * (q - 4), q in [0, 7]
  uint8_t hmask[32];   // third bit of weight w: bit w / 32 of hmask[w % 32]
  uint8_t qs[64];      // low 2 bits, as Q2_K
  uint8_t scales[12];  // 16 signed 6-bit scales (ScaleQ3)
  F16 d;
};
static_assert(sizeof(BlockQ3_K) == 110);
struct BlockQ4_K {  // 4.5 bpw; x = d * sc * q - dmin * m
  F16 d, dmin;
  uint8_t scales[12];  // 8 6-bit scales and mins (GetScaleMinK4)
  uint8_t qs[128];     // byte 32 c + l: weight 64 c + l (low nibble), 64 c + 32 + l (high)
};
static_assert(sizeof(BlockQ4_K) == 144);
struct BlockQ5_K {  // 5.5 bpw; as Q4_K with a fifth bit
  F16 d, dmin;
  uint8_t scales[12];
  uint8_t qh[32];   // fifth bit of weight 64 c + l at bit 2 c of qh[l], of 64 c + 32 + l at 2 c + 1
  uint8_t qs[128];  // low nibbles, as Q4_K
};
static_assert(sizeof(BlockQ5_K) == 176);
// Half n of 128 weights: ql[64 n + l] holds the low nibbles of weights l and l + 64 of the half,
// ql[64 n + 32 + l] of l + 32 and l + 96; qh[32 n + l] their top 2 bits (bits 0, 2, 4, 6).
struct BlockQ6_K {  // 6.5625 bpw; x = d * sc * (q - 32), q in [0, 63]
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];  // one per sub-block of 16
  F16 d;
};
static_assert(sizeof(BlockQ6_K) == 210);
struct BlockQ8_K {  // 9.125 bpw; x = d * q (the activation partner of the k-quants)
  U32 d;            // f32 bits
  int8_t qs[256];
  U16 bsums[16];  // int16 sums of 16 codes
};
static_assert(sizeof(BlockQ8_K) == 292);

// Non-uniform 4-bit grid (kValuesIq4nl).

struct BlockIQ4_NL {  // 4.5 bpw; x = d * grid[q], nibbles as Q4_0
  F16 d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockIQ4_NL) == 18);
struct BlockIQ4_XS {  // 4.25 bpw; x = d * (ls - 32) * grid[q], 8 sub-blocks of 32
  F16 d;
  U16 scales_h;         // the 2 high bits of sub-block j's 6-bit ls at bit 2 j
  uint8_t scales_l[4];  // the 4 low bits: sub-block 2 i in the low nibble of byte i, 2 i + 1 high
  uint8_t qs[128];      // 16 bytes per sub-block, nibbles as IQ4_NL
};
static_assert(sizeof(BlockIQ4_XS) == 136);

// ---- families: ggml's groups of block types; kernels/cpu has one file of kernels per family ---
enum class GgmlFamily { kLegacy, kKQuant, kIQ4 };

}  // namespace qf::ggml

// ---- the list --------------------------------------------------------------------------------
// Every ggml tensor type by id, one row each, in three kinds that each consumer expands with its
// own macro (or QF_GGML_SKIP):
//   WEIGHTS(Name, id, type_name, weights per block, bytes per block, family): model-file block
//     types qforge encodes, decodes and runs (a codec in formats/, a decoder in kernels/cpu/)
//   ACTIVATIONS(Name, id, type_name, weights, bytes): dot-product partners, codecs only
//   OTHER(Name, id, type_name, weights, bytes): every other type; io knows its size only
// type_name is ggml's (ggml_type_name); Name gives io's GgmlType::kName and the format table's
// name ("Q4_K").
#define QF_GGML_TYPES(WEIGHTS, ACTIVATIONS, OTHER)                                  \
  OTHER(F32, 0, "f32", 1, 4)                                                        \
  OTHER(F16, 1, "f16", 1, 2)                                                        \
  WEIGHTS(Q4_0, 2, "q4_0", 32, sizeof(::qf::ggml::BlockQ4_0), kLegacy)              \
  WEIGHTS(Q4_1, 3, "q4_1", 32, sizeof(::qf::ggml::BlockQ4_1), kLegacy)              \
  WEIGHTS(Q5_0, 6, "q5_0", 32, sizeof(::qf::ggml::BlockQ5_0), kLegacy)              \
  WEIGHTS(Q5_1, 7, "q5_1", 32, sizeof(::qf::ggml::BlockQ5_1), kLegacy)              \
  WEIGHTS(Q8_0, 8, "q8_0", 32, sizeof(::qf::ggml::BlockQ8_0), kLegacy)              \
  ACTIVATIONS(Q8_1, 9, "q8_1", 32, sizeof(::qf::ggml::BlockQ8_1)) /* gguf-py: 40 */ \
  WEIGHTS(Q2_K, 10, "q2_K", 256, sizeof(::qf::ggml::BlockQ2_K), kKQuant)            \
  WEIGHTS(Q3_K, 11, "q3_K", 256, sizeof(::qf::ggml::BlockQ3_K), kKQuant)            \
  WEIGHTS(Q4_K, 12, "q4_K", 256, sizeof(::qf::ggml::BlockQ4_K), kKQuant)            \
  WEIGHTS(Q5_K, 13, "q5_K", 256, sizeof(::qf::ggml::BlockQ5_K), kKQuant)            \
  WEIGHTS(Q6_K, 14, "q6_K", 256, sizeof(::qf::ggml::BlockQ6_K), kKQuant)            \
  ACTIVATIONS(Q8_K, 15, "q8_K", 256, sizeof(::qf::ggml::BlockQ8_K))                 \
  OTHER(IQ2_XXS, 16, "iq2_xxs", 256, 2 + 256 / 4)                                   \
  OTHER(IQ2_XS, 17, "iq2_xs", 256, 2 + 256 / 4 + 256 / 32)                          \
  OTHER(IQ3_XXS, 18, "iq3_xxs", 256, 2 + 256 / 4 + 256 / 8)                         \
  OTHER(IQ1_S, 19, "iq1_s", 256, 2 + 256 / 8 + 256 / 16)                            \
  WEIGHTS(IQ4_NL, 20, "iq4_nl", 32, sizeof(::qf::ggml::BlockIQ4_NL), kIQ4)          \
  OTHER(IQ3_S, 21, "iq3_s", 256, 2 + 256 / 4 + 256 / 8 + 256 / 32 + 4)              \
  OTHER(IQ2_S, 22, "iq2_s", 256, 2 + 256 / 4 + 256 / 16)                            \
  WEIGHTS(IQ4_XS, 23, "iq4_xs", 256, sizeof(::qf::ggml::BlockIQ4_XS), kIQ4)         \
  OTHER(I8, 24, "i8", 1, 1)                                                         \
  OTHER(I16, 25, "i16", 1, 2)                                                       \
  OTHER(I32, 26, "i32", 1, 4)                                                       \
  OTHER(I64, 27, "i64", 1, 8)                                                       \
  OTHER(F64, 28, "f64", 1, 8)                                                       \
  OTHER(IQ1_M, 29, "iq1_m", 256, 256 / 8 + 256 / 16 + 256 / 32)                     \
  OTHER(BF16, 30, "bf16", 1, 2)                                                     \
  OTHER(TQ1_0, 34, "tq1_0", 256, 2 + 4 * 13)                                        \
  OTHER(TQ2_0, 35, "tq2_0", 256, 2 + 64)                                            \
  OTHER(MXFP4, 39, "mxfp4", 32, 1 + 16)                                             \
  OTHER(NVFP4, 40, "nvfp4", 64, 4 + 32)                                             \
  OTHER(Q1_0, 41, "q1_0", 128, 2 + 16)                                              \
  OTHER(Q2_0, 42, "q2_0", 64, 2 + 16)
#define QF_GGML_SKIP(...)

namespace qf::ggml {

// Byte aligned: a block may start at any byte of a file or buffer.
#define QF_GGML_CHECK_ALIGN(T, ...) static_assert(alignof(Block##T) == 1, #T);
QF_GGML_TYPES(QF_GGML_CHECK_ALIGN, QF_GGML_CHECK_ALIGN, QF_GGML_SKIP)
#undef QF_GGML_CHECK_ALIGN

// The id of the list's row `Name` ("Q4_K" -> 12) at compile time; a compile error for any other
// name. (io/gguf.h expands the list into io::GgmlType, the enum files and users see.)
consteval uint32_t GgmlId(std::string_view name) {
#define QF_GGML_ID_OF(T, id, ...) \
  if (name == #T) return id;
  QF_GGML_TYPES(QF_GGML_ID_OF, QF_GGML_ID_OF, QF_GGML_ID_OF)
#undef QF_GGML_ID_OF
  throw "not a row of QF_GGML_TYPES";
}

}  // namespace qf::ggml
