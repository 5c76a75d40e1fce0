// Whole-matrix RTN: fit every parameter set with Grid::Fit, then encode/round each element.
// Contract: reference loops, single-threaded and deterministic; callers parallelise tensors.
#include "formats/quantize.h"

namespace qf {
namespace {

// Parameters of a whole tensor: [1] for kTensor, [N, groups] otherwise.
struct FittedParams {
  ResolvedScheme resolved;
  int64_t group = 0;   // columns per set
  int64_t groups = 0;  // sets per row
  std::vector<GroupParams> params;

  const GroupParams& At(int64_t row, int64_t col) const {
    if (resolved.scheme.granularity == Granularity::kTensor) return params[0];
    return params[static_cast<size_t>(row * groups + col / group)];
  }
};

Result<FittedParams> FitAll(std::span<const float> w, int64_t n, int64_t k,
                            const QuantScheme& scheme, const FitOptions& options) {
  FittedParams f;
  QF_ASSIGN(f.resolved, ResolveScheme(scheme, n, k));
  if (w.size() != static_cast<size_t>(n * k)) {
    return Err("{}: weight has {} values, expected {} x {} = {}", scheme.name, w.size(), n, k,
               n * k);
  }
  if (!options.importance.empty() && options.importance.size() != static_cast<size_t>(k)) {
    return Err("{}: importance has {} entries, expected K = {}", scheme.name,
               options.importance.size(), k);
  }
  const Grid grid(f.resolved.scheme);
  f.group = ColumnsPerParam(f.resolved.scheme, k);
  f.groups = k / f.group;
  if (f.resolved.scheme.granularity == Granularity::kTensor) {
    std::vector<GroupParams> per_row(static_cast<size_t>(n));
    grid.Fit(w.data(), n, k, 0, k, per_row, options);
    f.params.assign(1, per_row[0]);
    return f;
  }
  f.params.resize(static_cast<size_t>(n * f.groups));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t j = 0; j < f.groups; ++j) {
      const std::span<GroupParams> out(&f.params[static_cast<size_t>(r * f.groups + j)], 1);
      grid.Fit(w.data() + r * k, 1, k, j * f.group, (j + 1) * f.group, out, options);
    }
  }
  return f;
}

}  // namespace

int64_t QuantizedTensor::ParamIndex(int64_t row, int64_t col) const {
  switch (scheme.granularity) {
    case Granularity::kTensor:
      return 0;
    case Granularity::kChannel:
      return row;
    case Granularity::kGroup:
      return row * groups() + col / group_size();
  }
  return 0;
}

GroupParams QuantizedTensor::Params(int64_t row, int64_t col) const {
  const size_t i = static_cast<size_t>(ParamIndex(row, col));
  GroupParams p;
  p.scale = scales[i];
  if (scheme.is_int()) {
    p.zero = scheme.symmetric ? static_cast<float>(1 << (scheme.bits - 1))
                              : static_cast<float>(zeros[i]);
  }
  return p;
}

Result<QuantizedTensor> Quantize(std::span<const float> w, int64_t n, int64_t k,
                                 const QuantScheme& scheme, const FitOptions& options) {
  QF_ASSIGN(FittedParams f, FitAll(w, n, k, scheme, options));
  QuantizedTensor q;
  q.scheme = f.resolved.scheme;
  q.fallback = std::move(f.resolved.fallback);
  q.rows = n;
  q.cols = k;
  q.scales.reserve(f.params.size());
  for (const GroupParams& p : f.params) q.scales.push_back(p.scale);
  if (q.scheme.is_int() && !q.scheme.symmetric) {
    q.zeros.reserve(f.params.size());
    for (const GroupParams& p : f.params) q.zeros.push_back(static_cast<int32_t>(p.zero));
  }
  const Grid grid(q.scheme);
  q.codes.resize(w.size());
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c0 = 0; c0 < k; c0 += f.group) {
      const GroupParams p = f.At(r, c0);
      const size_t base = static_cast<size_t>(r * k);
      grid.EncodeSpan(w.data() + base + c0, q.codes.data() + base + c0, f.group, p);
    }
  }
  return q;
}

Status Validate(const QuantizedTensor& q) {
  const std::string_view name = q.scheme.name;
  if (q.rows <= 0 || q.cols <= 0) return Err("{}: bad shape [{}, {}]", name, q.rows, q.cols);
  if (q.scheme.granularity == Granularity::kGroup && q.cols % q.scheme.group_size != 0) {
    return Err("{}: K = {} is not a multiple of {}", name, q.cols, q.scheme.group_size);
  }
  if (q.codes.size() != static_cast<size_t>(q.rows * q.cols)) {
    return Err("{}: {} codes, expected {} x {}", name, q.codes.size(), q.rows, q.cols);
  }
  const int64_t sets = q.scheme.granularity == Granularity::kTensor ? 1 : q.rows * q.groups();
  if (q.scales.size() != static_cast<size_t>(sets)) {
    return Err("{}: {} scales, expected {}", name, q.scales.size(), sets);
  }
  const bool has_zeros = q.scheme.is_int() && !q.scheme.symmetric;
  if (q.zeros.size() != (has_zeros ? static_cast<size_t>(sets) : 0u)) {
    return Err("{}: {} zero points, expected {}", name, q.zeros.size(), has_zeros ? sets : 0);
  }
  const int maxq = q.scheme.MaxCode();
  for (size_t i = 0; i < q.codes.size(); ++i) {
    if (q.codes[i] > maxq) return Err("{}: code {} at {} exceeds {}", name, q.codes[i], i, maxq);
  }
  for (size_t i = 0; i < q.zeros.size(); ++i) {
    if (q.zeros[i] < 0 || q.zeros[i] > maxq) {
      return Err("{}: zero point {} at {} outside [0, {}]", name, q.zeros[i], i, maxq);
    }
  }
  return Status::Ok();
}

Result<std::vector<float>> Dequantize(const QuantizedTensor& q) {
  QF_TRY(Validate(q));
  const Grid grid(q.scheme);
  const int64_t g = q.group_size();
  std::vector<float> w(q.codes.size());
  for (int64_t r = 0; r < q.rows; ++r) {
    for (int64_t c0 = 0; c0 < q.cols; c0 += g) {
      const GroupParams p = q.Params(r, c0);
      const size_t base = static_cast<size_t>(r * q.cols);
      for (size_t c = base + c0; c < base + static_cast<size_t>(c0 + g); ++c) {
        w[c] = grid.Decode(q.codes[c], p);
      }
    }
  }
  return w;
}

Result<FakeQuantized> QuantizeDequantize(std::span<const float> w, int64_t n, int64_t k,
                                         const QuantScheme& scheme, const FitOptions& options) {
  QF_ASSIGN(FittedParams f, FitAll(w, n, k, scheme, options));
  FakeQuantized out;
  out.scheme = f.resolved.scheme;
  out.fallback = std::move(f.resolved.fallback);
  out.weights.resize(w.size());
  const Grid grid(out.scheme);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c0 = 0; c0 < k; c0 += f.group) {
      const GroupParams p = f.At(r, c0);
      const size_t base = static_cast<size_t>(r * k);
      grid.RoundSpan(w.data() + base + c0, out.weights.data() + base + c0, f.group, p);
    }
  }
  return out;
}

}  // namespace qf
