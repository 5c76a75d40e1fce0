// GPTQ column sweep (see gptq.h): fp64 inverse-Hessian Cholesky (kernels/cpu/cholesky), fp32 sweep
// with row-parallel in-block updates and one GEMM per block for the trailing columns (qforge's
// own F32Gemm: the same bits on every CPU, whatever kernels the BLAS would pick).
// Contract: work is split into fixed row chunks, each computed by one thread, so codes do not
// depend on the thread count.
#include "methods/gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/dist.h"
#include "kernels/cpu/cholesky.h"
#include "kernels/cpu/f32_gemm.h"

namespace qf::methods {
namespace {

// Damping schedule when Cholesky fails: ×10 per retry (starting from kDampFirstRetry when the
// caller asked for none), giving up above kDampMax (λ = mean(diag H)). With fp64 and any
// positive damping this only happens for badly broken Hessians; GPTQModel retries likewise.
constexpr double kDampRetryFactor = 10.0;
constexpr double kDampFirstRetry = 0.01;
constexpr double kDampMax = 1.0;

// Rows per work item of the sweep: small enough to balance N = 128 over a few threads, large
// enough for an efficient sgemm; [32, K] fp32 rows stay in L2.
constexpr int64_t kRowChunk = kGptqRowChunk;

// Sweep position -> original column. kDescending: stable sort by descending diag(H) (torch's
// argsort is unstable; ties only matter for dead columns). kGroupAware: GPTQModel's GAR with
// the "max" group score; g = k makes it plain descending.
std::vector<int64_t> SweepOrder(const std::vector<double>& diag, ActOrder order, int64_t g) {
  const auto k = static_cast<int64_t>(diag.size());
  std::vector<int64_t> perm(static_cast<size_t>(k));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  auto by_diag = [&](int64_t a, int64_t b) {
    return diag[static_cast<size_t>(a)] > diag[static_cast<size_t>(b)];
  };
  if (order == ActOrder::kOff) return perm;
  if (order == ActOrder::kDescending) {
    std::stable_sort(perm.begin(), perm.end(), by_diag);
    return perm;
  }
  const int64_t groups = k / g;
  std::vector<double> score(static_cast<size_t>(groups));
  for (int64_t j = 0; j < groups; ++j) {
    score[static_cast<size_t>(j)] =
        *std::max_element(diag.begin() + j * g, diag.begin() + (j + 1) * g);
  }
  std::vector<int64_t> group_order(static_cast<size_t>(groups));
  std::iota(group_order.begin(), group_order.end(), int64_t{0});
  std::stable_sort(group_order.begin(), group_order.end(), [&](int64_t a, int64_t b) {
    return score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)];
  });
  for (int64_t j = 0; j < groups; ++j) {
    auto first = perm.begin() + j * g;
    std::iota(first, first + g, group_order[static_cast<size_t>(j)] * g);
    std::stable_sort(first, first + g, by_diag);
  }
  return perm;
}

// kernels::CholeskySplit over this job's ranks: each rank's strips broadcast from it, in rank
// order.
kernels::CholeskySplit RankSplit() {
  kernels::CholeskySplit s{dist::Rank(), dist::Size(), {}};
  s.share = [me = s.part, parts = s.parts](double* a, int64_t n, int64_t r0, int64_t c0,
                                           int64_t c1) {
    const int64_t w = c1 - c0;
    std::vector<double> buf;
    for (int q = 0; q < parts; ++q) {
      buf.clear();
      for (int64_t i = r0; i < n; ++i) {
        if (kernels::CholeskyStripPart(i, parts) != q) continue;
        if (q == me) {
          buf.insert(buf.end(), a + i * n + c0, a + i * n + c1);
        } else {
          buf.resize(buf.size() + size_t(w));
        }
      }
      if (buf.empty()) continue;
      dist::Broadcast(buf, q);
      if (q == me) continue;
      const double* from = buf.data();
      for (int64_t i = r0; i < n; ++i) {
        if (kernels::CholeskyStripPart(i, parts) != q) continue;
        std::copy(from, from + w, a + i * n + c0);
        from += w;
      }
    }
  };
  return s;
}

// U [k, k] row-major, upper triangular (zeros below), with UᵀU = (H + λI)⁻¹ where
// λ = damp · mean(diag H), in fp64. The reference computes it as cholesky -> cholesky_inverse
// -> cholesky(upper). With J the reversal permutation and J(H + λI)J = L Lᵀ (L lower), the
// same factor is U = J L⁻¹ J: upper triangular, positive diagonal, UᵀU = J L⁻ᵀL⁻¹ J. One
// factorization and one triangular inverse (kernels/cpu/cholesky), half the flops of the chain;
// J H J is the row-major H read backwards, and U is L⁻¹ read backwards.
// In place on h (consumed): memory is h, a packed copy of its upper triangle for damping retries
// (dropped before u is made) and u. across_ranks: made by every rank together (RankSplit).
Result<std::vector<float>> InverseCholeskyUpper(std::vector<double> h, int64_t k, double damp,
                                                bool across_ranks, double* damp_used) {
  double mean = 0.0;
  for (int64_t i = 0; i < k; ++i) mean += h[static_cast<size_t>(i * k + i)];
  mean /= static_cast<double>(k);
  std::vector<double> upper(static_cast<size_t>(k * (k + 1) / 2));  // H, for another damping
  for (int64_t i = 0, p = 0; i < k; ++i)
    for (int64_t j = i; j < k; ++j) upper[size_t(p++)] = h[size_t(i * k + j)];
  std::vector<double>& a = h;
  const kernels::CholeskySplit split = across_ranks ? RankSplit() : kernels::CholeskySplit{};
  for (double d = damp; d <= kDampMax; d = d > 0.0 ? d * kDampRetryFactor : kDampFirstRetry) {
    // a = J H J + damping; only its lower triangle is read: a[r, c] (c <= r) = H[k-1-r, k-1-c],
    // row k-1-r of the packed upper triangle read backwards.
    for (int64_t r = 0; r < k; ++r) {
      const int64_t i = k - 1 - r;
      const double* row = upper.data() + (i * k - i * (i - 1) / 2) - i;  // row[j] = H[i, j]
      double* out = a.data() + r * k;
      for (int64_t c = 0; c <= r; ++c) out[c] = row[k - 1 - c];
    }
    for (int64_t i = 0; i < k; ++i) a[static_cast<size_t>(i * k + i)] += d * mean;
    if (kernels::CholeskyInverseLower(a.data(), k, split) != 0) continue;
    upper = {};
    std::vector<float> u(a.size(), 0.0f);
    const double* back = a.data() + (a.size() - 1);  // back[-(i * k + j)] = U[i, j]
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t j = i; j < k; ++j) {
        u[static_cast<size_t>(i * k + j)] = static_cast<float>(back[-(i * k + j)]);
      }
    }
    *damp_used = d;
    return u;
  }
  return Err(
      "gptq: Hessian [{} x {}] is not positive definite even with damping {} x "
      "mean(diag H) = {}",
      k, k, kDampMax, kDampMax * mean);
}

Status CheckWeights(std::span<const float> w, int64_t n, int64_t k, const GptqOptions& opt) {
  if (w.size() != static_cast<size_t>(n * k)) {
    return Err("gptq: weight has {} values, expected {} x {} = {}", w.size(), n, k, n * k);
  }
  if (opt.block_size < 1) return Err("gptq: block size {} < 1", opt.block_size);
  if (!(opt.damp >= 0.0 && opt.damp <= kDampMax)) {
    return Err("gptq: damping {} outside [0, {}]", opt.damp, kDampMax);
  }
  if (!opt.fit.importance.empty() && opt.fit.importance.size() != static_cast<size_t>(k)) {
    return Err("gptq: importance has {} entries, expected K = {}", opt.fit.importance.size(), k);
  }
  for (size_t i = 0; i < w.size(); ++i) {
    if (!std::isfinite(w[i])) {
      return Err("gptq: weight [{}, {}] is {}", static_cast<int64_t>(i) / k,
                 static_cast<int64_t>(i) % k, w[i]);
    }
  }
  return Status::Ok();
}

Status CheckHessian(int64_t k, std::span<const double> h, const GptqOptions& opt) {
  if (h.size() != static_cast<size_t>(k * k)) {
    return Err("gptq: Hessian has {} values, expected {} x {}", h.size(), k, k);
  }
  if (!(opt.damp >= 0.0 && opt.damp <= kDampMax)) {
    return Err("gptq: damping {} outside [0, {}]", opt.damp, kDampMax);
  }
  for (size_t i = 0; i < h.size(); ++i) {
    if (!std::isfinite(h[i])) {
      return Err("gptq: Hessian [{}, {}] is {}", static_cast<int64_t>(i) / k,
                 static_cast<int64_t>(i) % k, h[i]);
    }
  }
  for (int64_t i = 0; i < k; ++i) {
    const double d = h[static_cast<size_t>(i * k + i)];
    if (d < 0.0) return Err("gptq: Hessian diagonal [{}] = {} < 0", i, d);
  }
  return Status::Ok();
}

Status CheckInputs(std::span<const float> w, int64_t n, int64_t k, std::span<const double> h,
                   const GptqOptions& opt) {
  QF_TRY(CheckWeights(w, n, k, opt));
  return CheckHessian(k, h, opt);
}

// The weights of the factor's dead columns (inputs that were always 0) zeroed, as the reference
// does; W [n, f.k] in original column order.
void ZeroDeadWeights(const GptqFactor& f, std::vector<float>& wk, int64_t n) {
  const int64_t k = f.k;
  for (int64_t i = 0; i < k; ++i)
    if (f.dead[static_cast<size_t>(i)])
      for (int64_t r = 0; r < n; ++r) wk[static_cast<size_t>(r * k + i)] = 0.0f;
}

// Lazy-update block size: group starts must fall on the current, fully updated columns, so a
// block holds whole groups (B multiple of G) or a group whole blocks (B divides G).
int64_t BlockSize(int64_t requested, int64_t g, bool dynamic_groups) {
  if (!dynamic_groups) return requested;
  if (requested >= g) return requested - requested % g;
  int64_t b = requested;
  while (g % b != 0) --b;
  return b;
}

// The column sweep over W [n, k] (already in sweep order), U the upper inverse-Cholesky factor,
// lazy-update blocks of `block` columns. The rounder decides each column's code and value:
// rounder.ForChunk(r0, rows) gives a per-chunk object whose Column(r, row, c) returns
// {code, value} for sweep column c of row r (row = the row's current, error-updated weights).
// Codes land at codes[r * k + perm[c]] (original order). Returns the GPTQ loss.
template <class Rounder>
double Sweep(std::vector<float>& wk, int64_t n, int64_t k, const std::vector<float>& u,
             const std::vector<int64_t>& perm, int64_t block, Rounder& rounder, uint8_t* codes) {
  std::vector<double> row_loss(static_cast<size_t>(n), 0.0);
  // Rows are independent through the whole sweep (U is shared, read-only), so each chunk of
  // kRowChunk rows runs every block on its own: no barrier per block, the chunk's rows stay
  // in cache, and a chunk computes the same bits whichever thread runs it.
  const int64_t chunks = (n + kRowChunk - 1) / kRowChunk;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t r0 = chunk * kRowChunk;
    const int64_t rows = std::min(kRowChunk, n - r0);
    auto rc = rounder.ForChunk(r0, rows);
    std::vector<float> err(static_cast<size_t>(rows * std::min(block, k)));  // [rows, nb]
    std::vector<float> upd(static_cast<size_t>(rows * k));                   // [rows, K - i2]
    for (int64_t i1 = 0; i1 < k; i1 += block) {
      const int64_t i2 = std::min(i1 + block, k);
      const int64_t nb = i2 - i1;
      for (int64_t r = r0; r < r0 + rows; ++r) {
        // Quantize column c, then push its error into the row's remaining block columns (the
        // reference's W1[:, i:] -= err1 ⊗ Hinv1[i, i:]).
        float* row = wk.data() + r * k;
        float* e_row = err.data() + (r - r0) * nb;
        uint8_t* code_row = codes + r * k;
        double loss = 0.0;
        for (int64_t c = i1; c < i2; ++c) {
          const float x = row[c];
          const auto [code, value] = rc.Column(r, row, c);
          const float d = u[static_cast<size_t>(c * k + c)];
          const float e = (x - value) / d;
          code_row[perm[static_cast<size_t>(c)]] = code;
          e_row[c - i1] = e;
          loss += 0.5 * static_cast<double>(e) * e;
          const float* u_row = u.data() + c * k;
#pragma omp simd
          for (int64_t j = c + 1; j < i2; ++j) row[j] -= e * u_row[j];
        }
        row_loss[static_cast<size_t>(r)] += loss;
      }
      // Lazy update of the chunk's columns after the block: W[:, i2:] -= Err1 · Hinv[i1:i2, i2:],
      // the product by qforge's own GEMM (one fma chain per entry: the same bits on every CPU;
      // serial inside the parallel region), then subtracted.
      if (i2 < k) {
        const int64_t rest = k - i2;
        kernels::F32Gemm(kernels::BLayout::kNN, rows, rest, nb, 1.0f, err.data(), nb,
                         u.data() + i1 * k + i2, k, upd.data(), rest);
        for (int64_t r = 0; r < rows; ++r) {
          float* w = wk.data() + (r0 + r) * k + i2;
          const float* d = upd.data() + r * rest;
#pragma omp simd
          for (int64_t j = 0; j < rest; ++j) w[j] -= d[j];
        }
      }
    }
  }
  double loss = 0.0;
  for (double l : row_loss) loss += l;
  return loss;
}

}  // namespace

Result<GptqFactor> FactorHessian(std::vector<double> h, int64_t k, int64_t g,
                                 const GptqOptions& opt) {
  QF_TRY(CheckHessian(k, h, opt));
  if (g < 1 || k % g != 0) return Err("gptq: {} columns per parameter set for K = {}", g, k);
  GptqFactor f;
  f.k = k;
  f.g = g;
  f.act_order = opt.act_order;
  f.damp_asked = opt.damp;
  std::vector<double>& hw = h;  // transformed in place
  f.dead.assign(static_cast<size_t>(k), 0);
  for (int64_t i = 0; i < k; ++i) {  // the reference's dead columns: H[i,i] = 1
    double& d = hw[static_cast<size_t>(i * k + i)];
    if (d != 0.0) continue;
    d = 1.0;
    f.dead[static_cast<size_t>(i)] = 1;
    ++f.dead_count;
  }
  std::vector<double> diag(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) diag[static_cast<size_t>(i)] = hw[static_cast<size_t>(i * k + i)];
  f.perm = SweepOrder(diag, opt.act_order, g);
  if (opt.act_order != ActOrder::kOff) {
    std::vector<double> hp(hw.size());
    for (int64_t a = 0; a < k; ++a) {
      const double* src = hw.data() + f.perm[static_cast<size_t>(a)] * k;
      double* dst = hp.data() + a * k;
      for (int64_t b = 0; b < k; ++b) dst[b] = src[f.perm[static_cast<size_t>(b)]];
    }
    hw = std::move(hp);
  }
  QF_ASSIGN(f.u,
            InverseCholeskyUpper(std::move(hw), k, opt.damp, opt.factor_across_ranks, &f.damp));
  return f;
}

Result<QuantizedTensor> Gptq(std::span<const float> w, int64_t n, int64_t k,
                             std::span<const double> h, const QuantScheme& scheme,
                             const GptqOptions& opt, GptqStats* stats) {
  QF_ASSIGN(ResolvedScheme resolved, ResolveScheme(scheme, n, k));
  QF_TRY(CheckInputs(w, n, k, h, opt));
  QF_ASSIGN(const GptqFactor f, FactorHessian(std::vector<double>(h.begin(), h.end()), k,
                                              ColumnsPerParam(resolved.scheme, k), opt));
  return Gptq(w, n, k, f, scheme, opt, stats);
}

Result<QuantizedTensor> Gptq(std::span<const float> w, int64_t n, int64_t k, const GptqFactor& f,
                             const QuantScheme& scheme, const GptqOptions& opt, GptqStats* stats) {
  QF_ASSIGN(ResolvedScheme resolved, ResolveScheme(scheme, n, k));
  QF_TRY(CheckWeights(w, n, k, opt));
  const QuantScheme& s = resolved.scheme;
  const Grid grid(s);
  const bool grouped = s.granularity == Granularity::kGroup;
  const int64_t g = ColumnsPerParam(s, k);  // columns per parameter set (k unless grouped)
  const int64_t groups = k / g;             // parameter sets per row
  if (f.k != k || f.g != g || f.act_order != opt.act_order || f.damp_asked != opt.damp)
    return Err("gptq: the Hessian factor was made for other options (K, group or act-order)");
  const bool static_fit = grouped && (opt.static_groups || opt.act_order == ActOrder::kDescending);
  const auto un = static_cast<size_t>(n);

  std::vector<float> wk(w.begin(), w.end());  // [n, k] working copy, original order
  std::vector<GroupParams> params(un * static_cast<size_t>(groups));  // [n, groups]
  if (s.granularity == Granularity::kTensor) {
    grid.Fit(wk.data(), n, k, 0, k, params, opt.fit);
  } else if (!grouped) {
    // Reference order: per-channel parameters come from W before dead columns are zeroed.
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t r = 0; r < n; ++r) {
      grid.Fit(wk.data() + r * k, 1, k, 0, k, {&params[static_cast<size_t>(r)], 1}, opt.fit);
    }
  }
  ZeroDeadWeights(f, wk, n);

  if (static_fit) {
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < groups; ++j) {
        grid.Fit(wk.data() + r * k, 1, k, j * g, (j + 1) * g,
                 {&params[static_cast<size_t>(r * groups + j)], 1}, opt.fit);
      }
    }
  }

  // Permute W and the importance into sweep order; slot[c] is the parameter set (original
  // group) of sweep column c.
  const std::vector<int64_t>& perm = f.perm;
  std::vector<int64_t> slot(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) slot[static_cast<size_t>(c)] = perm[static_cast<size_t>(c)] / g;
  std::vector<float> importance;
  FitOptions fit = opt.fit;
  if (opt.act_order != ActOrder::kOff) {
    std::vector<float> wp(wk.size());
    for (int64_t r = 0; r < n; ++r) {
      const float* src = wk.data() + r * k;
      float* dst = wp.data() + r * k;
      for (int64_t c = 0; c < k; ++c) dst[c] = src[perm[static_cast<size_t>(c)]];
    }
    wk = std::move(wp);
    if (!opt.fit.importance.empty()) {
      importance.resize(static_cast<size_t>(k));
      for (int64_t c = 0; c < k; ++c) {
        importance[static_cast<size_t>(c)] =
            opt.fit.importance[static_cast<size_t>(perm[static_cast<size_t>(c)])];
      }
      fit.importance = importance;
    }
  }
  const int64_t block = BlockSize(opt.block_size, g, grouped && !static_fit);
  QuantizedTensor q;
  q.codes.resize(wk.size());
  // Group parameters: fitted when the sweep reaches a group unless fitted up front.
  struct GridRounder {
    const Grid& grid;
    std::vector<GroupParams>& params;
    const std::vector<int64_t>& slot;
    const FitOptions& fit;
    int64_t k, g, groups;
    bool refit;
    struct Chunk {
      GridRounder& o;
      std::pair<uint8_t, float> Column(int64_t r, float* row, int64_t c) {
        GroupParams& p =
            o.params[static_cast<size_t>(r * o.groups + o.slot[static_cast<size_t>(c)])];
        if (o.refit && c % o.g == 0) o.grid.Fit(row, 1, o.k, c, c + o.g, {&p, 1}, o.fit);
        const uint8_t code = o.grid.Encode(row[c], p);
        return {code, o.grid.Decode(code, p)};
      }
    };
    Chunk ForChunk(int64_t, int64_t) { return Chunk{*this}; }
  } rounder{grid, params, slot, fit, k, g, groups, grouped && !static_fit};
  const double loss = Sweep(wk, n, k, f.u, perm, block, rounder, q.codes.data());

  q.scheme = s;
  q.fallback = std::move(resolved.fallback);
  q.rows = n;
  q.cols = k;
  const size_t sets = s.granularity == Granularity::kTensor ? 1 : params.size();
  const bool has_zeros = s.is_int() && !s.symmetric;
  for (size_t i = 0; i < sets; ++i) {
    q.scales.push_back(params[i].scale);
    if (has_zeros) q.zeros.push_back(static_cast<int32_t>(params[i].zero));
  }
  if (stats) {
    stats->loss = loss;
    stats->dead_columns = f.dead_count;
    stats->damp = f.damp;
  }
  return q;
}

Result<std::vector<std::byte>> GptqGgml(std::span<const float> w, int64_t n, int64_t k,
                                        std::span<const double> h, const GgmlBlockType& t,
                                        std::span<const float> importance, const GptqOptions& opt,
                                        GptqStats* stats) {
  if (!t.codes) return Err("gptq: ggml {} is not a weight type", t.name);
  QF_ASSIGN(const uint64_t bytes, GgmlRowsBytes(t, n, k));
  QF_TRY(CheckInputs(w, n, k, h, opt));
  if (opt.act_order != ActOrder::kOff)
    return Err("gptq: act-order is not supported with ggml block types");
  if (!importance.empty() && importance.size() != static_cast<size_t>(k))
    return Err("gptq: importance has {} entries, expected K = {}", importance.size(), k);
  std::vector<float> imp(importance.begin(), importance.end());
  if (imp.empty()) {
    // diag(H), floored: ggml's importance paths give NaN scales to all-zero sub-blocks.
    double mean = 0.0;
    for (int64_t i = 0; i < k; ++i) mean += h[static_cast<size_t>(i * k + i)];
    mean /= static_cast<double>(k);
    const double floor = mean > 0.0 ? mean * 1e-6 : 1.0;
    imp.resize(static_cast<size_t>(k));
    for (int64_t i = 0; i < k; ++i)
      imp[static_cast<size_t>(i)] =
          static_cast<float>(std::max(h[static_cast<size_t>(i * k + i)], floor));
  }

  // No act-order: the factor's sweep order is the columns' own.
  QF_ASSIGN(const GptqFactor f, FactorHessian(std::vector<double>(h.begin(), h.end()), k, k, opt));
  std::vector<float> wk(w.begin(), w.end());
  ZeroDeadWeights(f, wk, n);

  // A block is fitted by the type's own encoder when the sweep reaches it (its columns are
  // then fully updated: the lazy-update block divides it or is a multiple of it), and every
  // column is rounded to the nearest point of the fitted block's lattice.
  const int64_t B = t.block;
  const size_t row_bytes =
      static_cast<size_t>(bytes / static_cast<uint64_t>(std::max<int64_t>(n, 1)));
  std::vector<std::byte> out(static_cast<size_t>(bytes));
  struct BlockRounder {
    const GgmlBlockType& t;
    const float* imp;
    std::byte* out;
    size_t row_bytes;
    struct Chunk {
      const BlockRounder& o;
      int64_t r0;
      std::vector<GgmlLattice> lat;  // [rows, block] of each row's current block
      std::pair<uint8_t, float> Column(int64_t r, float* row, int64_t c) {
        const int64_t B = o.t.block, j = c % B;
        GgmlLattice* l = lat.data() + (r - r0) * B;
        if (j == 0) {
          std::byte* blk = o.out + static_cast<size_t>(r) * o.row_bytes +
                           static_cast<size_t>(c / B) * o.t.block_bytes;
          o.t.encode(row + c, B, o.imp + c, blk);
          o.t.codes->lattice(blk, l);
        }
        const int code = o.t.codes->Nearest(l[j], row[c]);
        return {static_cast<uint8_t>(code), o.t.codes->Value(l[j], code)};
      }
    };
    Chunk ForChunk(int64_t r0, int64_t rows) const {
      return Chunk{*this, r0, std::vector<GgmlLattice>(static_cast<size_t>(rows * t.block))};
    }
  } rounder{t, imp.data(), out.data(), row_bytes};
  const int64_t block = BlockSize(opt.block_size, B, true);
  std::vector<uint8_t> codes(wk.size());
  const double loss = Sweep(wk, n, k, f.u, f.perm, block, rounder, codes.data());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t b = 0; b < k / B; ++b) {
      GgmlSetCodes(
          t, codes.data() + r * k + b * B,
          out.data() + static_cast<size_t>(r) * row_bytes + static_cast<size_t>(b) * t.block_bytes);
    }
  }
  if (stats) {
    stats->loss = loss;
    stats->dead_columns = f.dead_count;
    stats->damp = f.damp;
  }
  return out;
}

Result<QuantizedTensor> Gptq(std::span<const float> w, int64_t n, int64_t k,
                             const HessianAccumulator& h, const QuantScheme& scheme,
                             const GptqOptions& opt, GptqStats* stats) {
  if (h.k() != k) return Err("gptq: Hessian is {} x {}, weight has K = {}", h.k(), h.k(), k);
  if (h.samples() == 0) return Err("gptq: no calibration samples reached this layer");
  return Gptq(w, n, k, std::span<const double>(h.matrix()), scheme, opt, stats);
}

}  // namespace qf::methods
