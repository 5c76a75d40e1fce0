// The entry points of ggml_dot.h: each type goes to its family's kernels (ggml_dot_legacy.cc,
// ggml_dot_kquants.cc, ggml_dot_iq4.cc) by the family column of formats/ggml_types.h's list;
// the interleaved layout's byte permutation and the references live here.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/ggml_dot.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "kernels/cpu/ggml_dot-inl.h"
#include "kernels/cpu/ggml_dot_family.h"

HWY_BEFORE_NAMESPACE();
namespace qf::kernels::HWY_NAMESPACE {

int ActivationMaxImpl() {
#if HWY_TARGET != HWY_SCALAR
  return XMax();
#else
  return 0;
#endif
}

}  // namespace qf::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qf::kernels {
HWY_EXPORT(ActivationMaxImpl);

int GgmlGemvActivationMax() { return HWY_DYNAMIC_DISPATCH(ActivationMaxImpl)(); }

namespace {

const ggml_dot::Family& KernelsOf(ggml::GgmlFamily f) {
  switch (f) {
    case ggml::GgmlFamily::kLegacy:
      return ggml_dot::kLegacyKernels;
    case ggml::GgmlFamily::kKQuant:
      return ggml_dot::kKQuantKernels;
    case ggml::GgmlFamily::kIQ4:
      return ggml_dot::kIQ4Kernels;
  }
  QF_CHECK(false, "unknown ggml family {}", int(f));
  return ggml_dot::kLegacyKernels;
}

// The kernels of a model-file type of the list; null for every other id.
const ggml_dot::Family* FamilyOf(int id) {
  switch (id) {
#define QF_GGML_FAMILY_CASE(T, id, type_name, weights, bytes, family) \
  case id:                                                            \
    return &KernelsOf(ggml::GgmlFamily::family);
    QF_GGML_TYPES(QF_GGML_FAMILY_CASE, QF_GGML_SKIP, QF_GGML_SKIP)
#undef QF_GGML_FAMILY_CASE
    default:
      return nullptr;
  }
}

const ggml_dot::Family& Kernels(const GgmlBlockType& t) {
  const ggml_dot::Family* f = t.activation_only ? nullptr : FamilyOf(t.id);
  QF_CHECK(f != nullptr, "no kernel for ggml type {}", t.name);
  return *f;
}

std::vector<ggml_dot::Unit> InterleaveUnits(const GgmlBlockType& t) {
  const ggml_dot::Family* f = t.activation_only ? nullptr : FamilyOf(t.id);
  return f ? f->interleave_units(t.id) : std::vector<ggml_dot::Unit>{};
}

}  // namespace

bool GgmlKernelSupports(const GgmlBlockType& t) {
  return !t.activation_only && FamilyOf(t.id) != nullptr;
}

void GgmlDecodeRows(const GgmlRows& w, float* out) { Kernels(*w.type).decode_rows(w, out); }

void GgmlGemv(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  Kernels(*w.type).gemv(w, x, m, y, ldy);
}

GgmlLevelsInfo GgmlDecodeLevels(const GgmlRows& w, int8_t* levels, float* a, float* c) {
  return Kernels(*w.type).decode_levels(w, levels, a, c);
}

namespace {

// GgmlInterleave (kTo) or its inverse: every unit of every block of each 16-row group moved.
template <bool kTo>
void PermuteUnits(const GgmlBlockType& t, const std::byte* in, int64_t rows, int64_t cols,
                  std::byte* out) {
  const std::vector<ggml_dot::Unit> units = InterleaveUnits(t);
  QF_CHECK(!units.empty() && rows % kGgmlInterleaveRows == 0 && cols % t.block == 0,
           "no interleaved layout for {} rows x {} cols of {}", rows, cols, t.name);
  constexpr size_t R = kGgmlInterleaveRows;
  const size_t B = t.block_bytes, nb = size_t(cols / t.block), row_bytes = nb * B;
  for (int64_t g = 0; g < rows; g += int64_t(R)) {
    const std::byte* src = in + size_t(g) * row_bytes;
    std::byte* dst = out + size_t(g) * row_bytes;
    for (size_t b = 0; b < nb; ++b) {
      size_t at = b * R * B;  // where the 16 rows' copies of the next unit go
      for (const ggml_dot::Unit& u : units) {
        for (size_t r = 0; r < R; ++r) {
          const size_t plain = r * row_bytes + b * B + u.from, inter = at + r * u.size;
          const std::byte* from = src + (kTo ? plain : inter);
          std::byte* to = dst + (kTo ? inter : plain);
          if (u.size == 2) {
            std::memcpy(to, from, 2);
          } else {
            std::memcpy(to, from, 1);
          }
        }
        at += R * u.size;
      }
    }
  }
}

}  // namespace

bool GgmlInterleaves(const GgmlBlockType& t) {
  return GgmlKernelSupports(t) && !InterleaveUnits(t).empty();
}

void GgmlInterleave(const GgmlBlockType& t, const std::byte* in, int64_t rows, int64_t cols,
                    std::byte* out) {
  PermuteUnits<true>(t, in, rows, cols, out);
}

void GgmlDeinterleave(const GgmlBlockType& t, const std::byte* in, int64_t rows, int64_t cols,
                      std::byte* out) {
  PermuteUnits<false>(t, in, rows, cols, out);
}

void GgmlDecodeRowsRef(const GgmlRows& w, float* out) {
  std::vector<std::byte> plain;
  const std::byte* data = w.data;
  if (w.interleaved) {
    plain.resize(size_t(w.rows) * w.row_bytes);
    GgmlDeinterleave(*w.type, w.data, w.rows, w.cols, plain.data());
    data = plain.data();
  }
  for (int64_t r = 0; r < w.rows; ++r)
    w.type->decode(data + size_t(r) * w.row_bytes, w.cols, out + r * w.cols);
}

void GgmlGemvRef(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  std::vector<float> dec(static_cast<size_t>(w.rows * w.cols));
  GgmlDecodeRowsRef(w, dec.data());
  for (int64_t r = 0; r < w.rows; ++r) {
    const float* row = dec.data() + r * w.cols;
    for (int64_t t = 0; t < m; ++t) {
      double s = 0;
      for (int64_t k = 0; k < w.cols; ++k) s += double(row[k]) * x[t * w.cols + k];
      y[t * ldy + r] = float(s);
    }
  }
}

}  // namespace qf::kernels
#endif  // HWY_ONCE
