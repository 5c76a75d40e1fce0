// The int8 GEMM paths of int8_gemm.h. Each computes Σ_k au[t, k] · w[r, k] (unsigned times
// signed, exact in int32) and subtracts 128 · Σ_k w[r, k]: the sums with the signed
// activations au - 128. Register blocking: up to two 16-row blocks times up to 6 tokens of
// accumulators, the whole of K at once; the block's weights (16 · cols4 bytes) stay in L1/L2
// while the tokens pass over them. AMX: kernels/cpu/amx.h's loop on the packed blocks.
#include "kernels/cpu/int8_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/result.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/int8_x86.h"

namespace qf::kernels {
namespace {

constexpr int kMaxTokens = 6;

using int8_x86::Load4;

void Portable(const Int8Rows& w, const uint8_t* au, int64_t m, int64_t r0, int64_t r1, int32_t* acc,
              int64_t ldacc) {
  const int64_t quads = Int8Cols4(w.cols) / 4, cols4 = quads * 4;
  const int64_t end = std::min(Int8Rows16(w.rows), (r1 + 15) / 16 * 16);
  for (int64_t b = r0 / 16; b * 16 < end; ++b) {
    const int8_t* blk = w.data + b * quads * 64;
    for (int64_t t = 0; t < m; ++t) {
      int32_t s[16] = {};
      const uint8_t* a = au + t * cols4;
      for (int64_t q = 0; q < quads; ++q)
        for (int i = 0; i < 16; ++i)
          for (int j = 0; j < 4; ++j) s[i] += int32_t(a[4 * q + j]) * blk[q * 64 + 4 * i + j];
      for (int i = 0; i < 16; ++i)
        acc[t * ldacc + b * 16 + i] = s[i] - 128 * w.row_sums[b * 16 + i];
    }
  }
}

#if defined(__x86_64__)
// vpdpbusd on 512 bits: NB row blocks × T tokens of accumulators.
template <int NB, int T>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void VnniTile(
    const int8_t* blk, int64_t quads, const uint8_t* a, int64_t cols4, const int32_t* sums,
    int32_t* acc, int64_t ldacc) {
  __m512i c[NB][T];
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) c[b][t] = _mm512_setzero_si512();
  for (int64_t q = 0; q < quads; ++q) {
    __m512i wv[NB];
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) wv[b] = _mm512_loadu_si512(blk + (b * quads + q) * 64);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512i av = _mm512_set1_epi32(Load4(a + t * cols4 + 4 * q));
#pragma GCC unroll 8
      for (int b = 0; b < NB; ++b) c[b][t] = _mm512_dpbusd_epi32(c[b][t], av, wv[b]);
    }
  }
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b) {
    const __m512i corr = _mm512_slli_epi32(_mm512_loadu_si512(sums + 16 * b), 7);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t)
      _mm512_storeu_si512(acc + t * ldacc + 16 * b, _mm512_sub_epi32(c[b][t], corr));
  }
}

// The same sums on AVX2 (int8_x86::DotBytes: the bytes split so that no pair sum saturates).
template <int NB, int T>
__attribute__((target("avx2"))) void Avx2Tile(const int8_t* blk, int64_t quads, const uint8_t* a,
                                              int64_t cols4, const int32_t* sums, int32_t* acc,
                                              int64_t ldacc) {
  __m256i c[NB][2][T];
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 8
    for (int h = 0; h < 2; ++h)
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) c[b][h][t] = _mm256_setzero_si256();
  for (int64_t q = 0; q < quads; ++q) {
    __m256i wv[NB][2];
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b)
#pragma GCC unroll 8
      for (int h = 0; h < 2; ++h)
        wv[b][h] = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(blk + (b * quads + q) * 64 + 32 * h));
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const int8_x86::Avx2Bytes av = int8_x86::SplitBytes(a + t * cols4 + 4 * q);
#pragma GCC unroll 8
      for (int b = 0; b < NB; ++b)
#pragma GCC unroll 8
        for (int h = 0; h < 2; ++h)
          c[b][h][t] = _mm256_add_epi32(c[b][h][t], int8_x86::DotBytes(av, wv[b][h]));
    }
  }
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 8
    for (int h = 0; h < 2; ++h) {
      const __m256i corr = _mm256_slli_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + 16 * b + 8 * h)), 7);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + t * ldacc + 16 * b + 8 * h),
                            _mm256_sub_epi32(c[b][h][t], corr));
    }
}

using TileFn = void (*)(const int8_t*, int64_t, const uint8_t*, int64_t, const int32_t*, int32_t*,
                        int64_t);

template <int NB, int T>
struct VnniK {
  static constexpr TileFn fn = &VnniTile<NB, T>;
};
template <int NB, int T>
struct Avx2K {
  static constexpr TileFn fn = &Avx2Tile<NB, T>;
};

template <template <int, int> class K>
TileFn Pick(int nb, int t) {
  static constexpr TileFn f[2][kMaxTokens] = {
      {K<1, 1>::fn, K<1, 2>::fn, K<1, 3>::fn, K<1, 4>::fn, K<1, 5>::fn, K<1, 6>::fn},
      {K<2, 1>::fn, K<2, 2>::fn, K<2, 3>::fn, K<2, 4>::fn, K<2, 5>::fn, K<2, 6>::fn}};
  return f[nb - 1][t - 1];
}

template <template <int, int> class K>
void Tiled(const Int8Rows& w, const uint8_t* au, int64_t m, int64_t r0, int64_t r1, int32_t* acc,
           int64_t ldacc) {
  const int64_t quads = Int8Cols4(w.cols) / 4, cols4 = quads * 4;
  const int64_t end = std::min(Int8Rows16(w.rows), (r1 + 15) / 16 * 16);
  for (int64_t b = r0 / 16; b * 16 < end;) {
    const int nb = b * 16 + 32 <= end ? 2 : 1;
    const int8_t* blk = w.data + b * quads * 64;
    for (int64_t t = 0; t < m; t += kMaxTokens) {
      const int nt = int(std::min<int64_t>(kMaxTokens, m - t));
      Pick<K>(nb, nt)(blk, quads, au + t * cols4, cols4, w.row_sums + b * 16,
                      acc + t * ldacc + b * 16, ldacc);
    }
    b += nb;
  }
}
// AMX-INT8 (kernels/cpu/amx.h's loop): the packed layout is the B operand as it lies - 16 column
// quads × 16 rows of 4 bytes is one 64-column step of a row block - and tdpbusd multiplies the
// unsigned activation bytes by it. A chunk that runs past the last whole step reads a
// zero-padded copy of the block's last quads.
void AmxTiled(const Int8Rows& w, const uint8_t* au, int64_t m, int64_t r0, int64_t r1, int32_t* acc,
              int64_t ldacc) {
  const int64_t quads = Int8Cols4(w.cols) / 4;
  const AmxTokens tokens(au, m, quads * 4);
  const int64_t end = std::min(Int8Rows16(w.rows), (r1 + 15) / 16 * 16);
  const int64_t row_blocks = (end - r0) / 16;
  thread_local std::vector<int8_t> padded[2];
  thread_local std::vector<uint32_t> sums;
  AmxGemm(
      AmxUnit::kInt8, tokens, row_blocks,
      [&](int64_t block, int64_t s0, int64_t s1, int slot) {
        const int8_t* blk = w.data + (r0 / 16 + block) * quads * 64;
        if (s1 * 16 <= quads) return reinterpret_cast<const uint8_t*>(blk + s0 * 1024);
        std::vector<int8_t>& buf = padded[slot];
        buf.assign(size_t((s1 - s0) * 1024), 0);
        std::memcpy(buf.data(), blk + s0 * 1024, size_t((quads - s0 * 16) * 64));
        return reinterpret_cast<const uint8_t*>(buf.data());
      },
      sums);
  AmxForEachSums(sums, m, row_blocks, [&](int64_t t, int64_t b0, const uint32_t* v) {
    int32_t* to = acc + t * ldacc + r0 + b0;
    const int32_t* s = w.row_sums + r0 + b0;
    for (int i = 0; i < 16; ++i) to[i] = int32_t(v[i]) - 128 * s[i];
  });
}
#endif

}  // namespace

void Int8Pack(const int8_t* w, int64_t rows, int64_t cols, int8_t* out, int32_t* row_sums) {
  QF_CHECK(cols <= kInt8MaxCols, "int8 GEMM: {} columns, at most {}", cols, kInt8MaxCols);
  const int64_t quads = Int8Cols4(cols) / 4;
  std::fill(out, out + Int8PackedBytes(rows, cols), int8_t(0));
  std::fill(row_sums, row_sums + Int8Rows16(rows), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) {
      const int8_t v = w[r * cols + k];
      out[((r / 16) * quads + k / 4) * 64 + (r % 16) * 4 + k % 4] = v;
      row_sums[r] += v;
    }
}

std::string_view Int8PathName(Int8Path p) {
  switch (p) {
    case Int8Path::kPortable:
      return "portable";
    case Int8Path::kAvx2:
      return "avx2";
    case Int8Path::kAvx512Vnni:
      return "avx512vnni";
    case Int8Path::kAmx:
      return "amx";
  }
  return "?";
}

std::vector<Int8Path> Int8Paths() {
  std::vector<Int8Path> p = {Int8Path::kPortable};
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) p.push_back(Int8Path::kAvx2);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vnni"))
    p.push_back(Int8Path::kAvx512Vnni);
#endif
  return p;
}

std::vector<Int8Path> Int8GemmPaths() {
  std::vector<Int8Path> p = Int8Paths();
  if (AmxUsable(AmxUnit::kInt8)) p.push_back(Int8Path::kAmx);
  return p;
}

void Int8GemmOn(Int8Path path, const Int8Rows& w, const uint8_t* au, int64_t m, int64_t r0,
                int64_t r1, int32_t* acc, int64_t ldacc) {
  switch (path) {
#if defined(__x86_64__)
    case Int8Path::kAmx:
      return AmxTiled(w, au, m, r0, r1, acc, ldacc);
    case Int8Path::kAvx512Vnni:
      return Tiled<VnniK>(w, au, m, r0, r1, acc, ldacc);
    case Int8Path::kAvx2:
      return Tiled<Avx2K>(w, au, m, r0, r1, acc, ldacc);
#endif
    default:
      return Portable(w, au, m, r0, r1, acc, ldacc);
  }
}

void Int8Gemm(const Int8Rows& w, const uint8_t* au, int64_t m, int64_t r0, int64_t r1, int32_t* acc,
              int64_t ldacc) {
  static const std::vector<Int8Path> paths = Int8GemmPaths();
  Int8Path p = paths.back();
  // AMX pads the tokens to 32 and copies them: below kInt8AmxMinTokens the vector path is faster
  // (one thread, 2048 × 2048: AVX512-VNNI 95 / AMX 49 GMAC/s at 4 tokens, 123 / 170 at 16).
  if (p == Int8Path::kAmx && m < kInt8AmxMinTokens) p = paths[paths.size() - 2];
  Int8GemmOn(p, w, au, m, r0, r1, acc, ldacc);
}

void Int8GemmRef(const Int8Rows& w, const uint8_t* au, int64_t m, int64_t r0, int64_t r1,
                 int32_t* acc, int64_t ldacc) {
  const int64_t cols4 = Int8Cols4(w.cols);
  for (int64_t t = 0; t < m; ++t)
    for (int64_t r = r0; r < std::min(r1, w.rows); ++r) {
      int64_t s = 0;
      for (int64_t k = 0; k < w.cols; ++k)
        s += int64_t(int(au[t * cols4 + k]) - 128) * Int8Weight(w, r, k);
      acc[t * ldacc + r] = int32_t(s);
    }
}

}  // namespace qf::kernels
