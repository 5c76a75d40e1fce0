#include "kernels/cpu/amx.h"

#include <immintrin.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <cstring>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "core/result.h"

namespace qf::kernels {
namespace {

#if defined(__x86_64__) && defined(__linux__)
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

constexpr TileConfig MakeTileConfig() {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = kAmxStepBytes;
    cfg.rows[i] = 16;
  }
  return cfg;
}
// A constant in memory: GCC's _tile_loadconfig names only the first 8 bytes as its operand, so
// stores into a local configuration could be dropped.
constexpr TileConfig kTileConfig = MakeTileConfig();

bool TileDataGranted() {
  static const bool v = [] {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return v;
}
#endif

}  // namespace

bool AmxUsable(AmxUnit unit) {
#if defined(__x86_64__) && defined(__linux__)
  static const auto probe = [](unsigned unit_bit) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) return false;
    // CPUID leaf 7: EDX bit 24 AMX-TILE, 22 AMX-BF16, 25 AMX-INT8 (clang 14's
    // __builtin_cpu_supports does not know them).
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    return (edx >> 24 & 1) && (edx >> unit_bit & 1) && TileDataGranted();
  };
  static const bool bf16 = probe(22), int8 = probe(25);
  return unit == AmxUnit::kBf16 ? bf16 : int8;
#else
  (void)unit;
  return false;
#endif
}

AmxTokens::AmxTokens(const void* a, int64_t m, int64_t row_bytes)
    : m_(m), steps_((row_bytes + kAmxStepBytes - 1) / kAmxStepBytes) {
  thread_local std::vector<uint8_t> copy;
  const int64_t blocks = (m + 31) / 32 * 2;
  const size_t bytes = size_t(blocks * steps_ * kAmxTileBytes);
  if (copy.size() < bytes) copy.resize(bytes);
  data_ = copy.data();
  const uint8_t* src = static_cast<const uint8_t*>(a);
  for (int64_t t = 0; t < blocks * 16; ++t) {
    uint8_t* row = copy.data() + (t / 16) * steps_ * kAmxTileBytes + (t % 16) * kAmxStepBytes;
    const int64_t have = t < m ? row_bytes : 0;
    for (int64_t s = 0; s < steps_; ++s) {
      const int64_t n = std::clamp<int64_t>(have - s * kAmxStepBytes, 0, kAmxStepBytes);
      uint8_t* to = row + s * kAmxTileBytes;
      if (n > 0) std::memcpy(to, src + t * row_bytes + s * kAmxStepBytes, size_t(n));
      if (n < kAmxStepBytes) std::memset(to + n, 0, size_t(kAmxStepBytes - n));
    }
  }
}

namespace {

#if defined(__x86_64__) && defined(__linux__)
__attribute__((target("amx-tile"))) void Configure() { _tile_loadconfig(&kTileConfig); }
__attribute__((target("amx-tile"))) void Release() { _tile_release(); }

// One pass of the 2 × 2 accumulators (tiles 0..3, in c: 4 KiB, tile i at c + 1 KiB · i) over
// `steps` steps: A tiles 4, 5 from a0, a1 (1 KiB per step), B tiles 6, 7 from b0, b1 (1 KiB per
// step); c loaded first unless `first`, stored after.
template <AmxUnit U>
__attribute__((target("amx-tile,amx-bf16,amx-int8"))) void Pass(const uint8_t* a0,
                                                                const uint8_t* a1,
                                                                const uint8_t* b0,
                                                                const uint8_t* b1, int64_t steps,
                                                                uint32_t* c, bool first) {
  if (first) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    _tile_loadd(0, c, 64);
    _tile_loadd(1, c + 256, 64);
    _tile_loadd(2, c + 512, 64);
    _tile_loadd(3, c + 768, 64);
  }
  for (int64_t s = 0; s < steps; ++s) {
    _tile_loadd(4, a0 + s * kAmxTileBytes, kAmxStepBytes);
    _tile_loadd(5, a1 + s * kAmxTileBytes, kAmxStepBytes);
    _tile_loadd(6, b0 + s * kAmxTileBytes, kAmxStepBytes);
    _tile_loadd(7, b1 + s * kAmxTileBytes, kAmxStepBytes);
    if constexpr (U == AmxUnit::kBf16) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    } else {
      _tile_dpbusd(0, 4, 6);
      _tile_dpbusd(1, 4, 7);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    }
  }
  _tile_stored(0, c, 64);
  _tile_stored(1, c + 256, 64);
  _tile_stored(2, c + 512, 64);
  _tile_stored(3, c + 768, 64);
}
#endif

// Steps per chunk of K: as many as let the chunk's A tiles of every token fit in this (L2).
constexpr int64_t kChunkABytes = int64_t(512) << 10;

}  // namespace

void AmxGemm(AmxUnit unit, const AmxTokens& a, int64_t row_blocks, const AmxBTiles& b_tiles,
             std::vector<uint32_t>& out) {
#if defined(__x86_64__) && defined(__linux__)
  QF_CHECK(AmxUsable(unit), "AMX GEMM on a CPU or OS without the unit");
  const int64_t token_pairs = (a.tokens() + 31) / 32, row_pairs = (row_blocks + 1) / 2;
  const int64_t steps = a.Steps();
  const int64_t chunk =
      std::clamp<int64_t>(kChunkABytes / (token_pairs * 2 * kAmxTileBytes), 1, steps);
  if (out.size() < size_t(token_pairs * row_pairs * 1024))
    out.resize(size_t(token_pairs * row_pairs * 1024));
  thread_local std::vector<uint8_t> zeros;  // the padding block's B tiles
  const auto pass = unit == AmxUnit::kBf16 ? Pass<AmxUnit::kBf16> : Pass<AmxUnit::kInt8>;
  Configure();
  for (int64_t s0 = 0; s0 < steps; s0 += chunk) {
    const int64_t s1 = std::min(steps, s0 + chunk);
    for (int64_t rp = 0; rp < row_pairs; ++rp) {
      const uint8_t* b0 = b_tiles(2 * rp, s0, s1, 0);
      const uint8_t* b1 = nullptr;
      if (2 * rp + 1 < row_blocks) {
        b1 = b_tiles(2 * rp + 1, s0, s1, 1);
      } else {
        if (zeros.size() < size_t((s1 - s0) * kAmxTileBytes))
          zeros.assign(size_t((s1 - s0) * kAmxTileBytes), 0);
        b1 = zeros.data();
      }
      for (int64_t tp = 0; tp < token_pairs; ++tp)
        pass(a.Tile(2 * tp, s0), a.Tile(2 * tp + 1, s0), b0, b1, s1 - s0,
             out.data() + (tp * row_pairs + rp) * 1024, s0 == 0);
    }
  }
  Release();
#else
  (void)unit, (void)a, (void)row_blocks, (void)b_tiles, (void)out;
  QF_CHECK(false, "AMX GEMM on a build without it");
#endif
}

}  // namespace qf::kernels
