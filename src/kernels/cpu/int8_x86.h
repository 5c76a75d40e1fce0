// Internal to kernels/cpu/int8_gemm.cc, q8_gemm.cc and a16_gemm.cc: the pieces the integer GEMMs
// build their x86 paths on (unsigned activation bytes times signed weight bytes, four per int32
// lane; the AVX-512 activation quantizers' CPU test and token split).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace qf::kernels::int8_x86 {

// One token's four activation bytes at p as one int32 (the callers broadcast it to every lane).
inline int32_t Load4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

#if defined(__x86_64__)
// AVX2 has no vpdpbusd: four bytes a = 128 h + l (h in {0, 1}, l < 128) are split so that
// vpmaddubsw's pair sums (at most 2 · 127 · 128) never saturate.
struct Avx2Bytes {
  __m256i lo, hi;
};
__attribute__((target("avx2"))) inline Avx2Bytes SplitBytes(const uint8_t* p) {
  const uint32_t v = uint32_t(Load4(p));
  return {_mm256_set1_epi32(int32_t(v & 0x7f7f7f7fu)),
          _mm256_set1_epi32(int32_t((v >> 7) & 0x01010101u))};
}
// Per int32 lane i: Σ_j a[j] · w[4 i + j], exact (vpmaddwd with ones sums the pairs).
__attribute__((target("avx2"))) inline __m256i DotBytes(const Avx2Bytes& a, __m256i w) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(a.lo, w), ones);
  const __m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(a.hi, w), ones);
  return _mm256_add_epi32(pl, _mm256_slli_epi32(ph, 7));
}

// Whether the activation quantizers' AVX-512 paths (F, BW, DQ) run here.
inline bool HasAvx512Quantize() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq");
  return has;
}
#endif

// quantize(t0, t1) over tokens [0, m) split over the threads (outside a parallel region; 32
// tokens at least each); true when every part returned true.
template <class Fn>
bool ForTokenParts(int64_t m, Fn&& quantize) {
  const int parts =
      omp_in_parallel() ? 1 : int(std::clamp<int64_t>(m / 32, 1, omp_get_max_threads()));
  bool ok = true;
#pragma omp parallel for num_threads(parts) reduction(&& : ok) if (parts > 1)
  for (int p = 0; p < parts; ++p) ok = quantize(m * p / parts, m * (p + 1) / parts);
  return ok;
}

}  // namespace qf::kernels::int8_x86
