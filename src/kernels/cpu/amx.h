// Intel AMX tiles, shared by the GEMMs that use them (fp8_gemm: AMX-BF16 tdpbf16ps, int8_gemm:
// AMX-INT8 tdpbusd): whether this process may use them, the token rows of the A operand, and the
// loop nest (AmxGemm). The GEMMs supply only their B tiles and read the sums out.
//
// Tiles: 16 rows × 64 bytes each. A step is 64 bytes of every token (32 bf16 or 64 int8
// columns): A = 16 tokens × the step, B = the step's 16 column pairs (bf16) or quads (int8) × 16
// output rows of 4 bytes (the VNNI layout), C = 16 tokens × 16 rows of fp32 / int32 sums.
// AmxGemm keeps 2 × 2 accumulators (32 tokens × 32 rows) and runs K in chunks whose A tiles (all
// tokens) stay in L2 and whose B tiles (two 16-row blocks) stay in L1; the accumulators go to a
// scratch between chunks (fp32 and int32 sums pass through memory unchanged).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace qf::kernels {

enum class AmxUnit : uint8_t { kBf16, kInt8 };

// Whether this CPU has AMX-TILE, the unit, AVX512F and AVX512BW, and Linux lets this process use
// tile data (asked once per process: arch_prctl, kernel 5.16+; a hypervisor may refuse).
bool AmxUsable(AmxUnit unit);

constexpr int64_t kAmxStepBytes = 64;
constexpr int64_t kAmxTileBytes = 16 * kAmxStepBytes;

// The A operand: m token rows of row_bytes each, copied into whole tiles - token block b (16
// tokens), step s at Tile(b, s), its rows 64 bytes apart - padded with zero bytes past the rows'
// ends and with zero tokens to a multiple of 32. (Read with the rows' own stride, a multiple of
// 4 KiB for the models' widths, a tile's 16 rows would all fall in one L1 set.) The copy is per
// thread and lives until that thread's next AmxTokens.
class AmxTokens {
 public:
  AmxTokens(const void* a, int64_t m, int64_t row_bytes);
  int64_t tokens() const { return m_; }
  int64_t Steps() const { return steps_; }
  const uint8_t* Tile(int64_t block, int64_t step) const {
    return data_ + (block * steps_ + step) * kAmxTileBytes;
  }

 private:
  int64_t m_, steps_;
  const uint8_t* data_;
};

// B tiles of one 16-row block (block < row_blocks) for steps [s0, s1): (s1 - s0) tiles, 1 KiB
// apart, valid until the next call with the same slot (0 or 1: the two blocks of a pass).
using AmxBTiles = std::function<const uint8_t*(int64_t block, int64_t s0, int64_t s1, int slot)>;

// The sums of every token (a.tokens(), padded to 32) and every row of row_blocks 16-row blocks
// (padded to 32 rows: b_tiles is asked for blocks < row_blocks only; the padding block is zero)
// over all a.Steps() steps, as 4-byte values (fp32 for kBf16, int32 for kInt8) in tiles, at
// AmxSumIndex (AmxForEachSums reads them out). Single-threaded; only where AmxUsable(unit).
void AmxGemm(AmxUnit unit, const AmxTokens& a, int64_t row_blocks, const AmxBTiles& b_tiles,
             std::vector<uint32_t>& out);
// Where AmxGemm's sum for token t, row r lies in out (row_blocks as given to it).
inline int64_t AmxSumIndex(int64_t row_blocks, int64_t t, int64_t r) {
  const int64_t row_pairs = (row_blocks + 1) / 2;
  const int64_t tile = (t / 32 * row_pairs + r / 32) * 4 + (t / 16 % 2) * 2 + r / 16 % 2;
  return tile * 256 + (t % 16) * 16 + r % 16;
}

// Calls fn(t, r0, v) for every token t < tokens and 16-row block start r0 = 16 b, b <
// row_blocks: v = AmxGemm's 16 sums of rows r0..r0 + 15 for token t.
template <class Fn>
void AmxForEachSums(const std::vector<uint32_t>& out, int64_t tokens, int64_t row_blocks, Fn fn) {
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t b = 0; b < row_blocks; ++b)
      fn(t, 16 * b, out.data() + AmxSumIndex(row_blocks, t, 16 * b));
}

}  // namespace qf::kernels
