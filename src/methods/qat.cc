// Block-wise quantization-aware training (see qat.h).
#include "methods/qat.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <tuple>

#include "core/dist.h"
#include "core/dtype.h"
#include "formats/fp8.h"
#include "kernels/cpu/f32_gemm.h"
#include "kernels/ops.h"
#include "model/decoder_walk.h"
#include "train/backward_ops.h"
#include "train/block_backward.h"

namespace qf::methods {
namespace {

using Clock = std::chrono::steady_clock;

// AdamW over one parameter array: Step moves p by −lr · (m̂ / (√v̂ + ε) + wd · p); StepLog
// trains log p instead (the gradient g · p, the move a factor exp(−lr · m̂ / (√v̂ + ε))), so
// that lr is a relative rate whatever the magnitude of p (scales span orders of magnitude).
struct Adam {
  std::vector<float> m, v;
  explicit Adam(size_t n) : m(n, 0.0f), v(n, 0.0f) {}
  static constexpr double kB1 = 0.9, kB2 = 0.999, kEps = 1e-8;
  // Bias corrections of step t (from 1).
  struct Bias {
    double c1, c2;
    explicit Bias(int64_t t)
        : c1(1.0 - std::pow(kB1, double(t))), c2(1.0 - std::pow(kB2, double(t))) {}
  };
  double Direction(size_t i, double g, const Bias& b) {
    const double mi = kB1 * m[i] + (1 - kB1) * g;
    const double vi = kB2 * v[i] + (1 - kB2) * g * g;
    m[i] = float(mi);
    v[i] = float(vi);
    return (mi / b.c1) / (std::sqrt(vi / b.c2) + kEps);
  }
  // One entry's step; unit: the size of a step of lr = 1 for p[j].
  void Update(std::vector<float>& p, size_t j, float g, double lr, double unit, double wd,
              const Bias& b) {
    p[j] = float(p[j] - lr * (unit * Direction(j, g, b) + wd * p[j]));
  }
  // unit(i): the size of a step of lr = 1 for p[i]. Entries [i0, i1) only.
  template <class Unit>
  void Step(std::vector<float>& p, const float* g, double lr, double wd, int64_t t, Unit unit,
            int64_t i0, int64_t i1) {
    const Bias b(t);
#pragma omp parallel for if (i1 - i0 > 65536)
    for (int64_t i = i0; i < i1; ++i) Update(p, size_t(i), g[i], lr, double(unit(i)), wd, b);
  }
  void StepLog(std::vector<float>& p, const float* g, double lr, int64_t t, int64_t i0,
               int64_t i1) {
    const Bias b(t);
#pragma omp parallel for if (i1 - i0 > 65536)
    for (int64_t i = i0; i < i1; ++i) {
      const size_t j = size_t(i);
      p[j] = float(p[j] * std::exp(-lr * Direction(j, double(g[i]) * p[j], b)));
    }
  }
  void StepLog(std::vector<float>& p, const float* g, double lr, int64_t t) {
    StepLog(p, g, lr, t, 0, int64_t(p.size()));
  }
};

// One trained linear's optimiser and gradient buffers (QatLinear or GgmlQatLinear): AdamW on the
// latent weights in units of one code step of their run, on log s (relative) and on the zeros
// (code units; GgmlQatLinear's min factors m as log(m / d)).
template <class Q>
struct QatStepper {
  Adam w, s, z;
  std::vector<float> dw, ds, dz;
  std::vector<float> s_before;  // the scales before a step (min factors follow them)
  explicit QatStepper(const Q& q)
      : w(q.w.size()),
        s(q.s.size()),
        z(q.z.size()),
        dw(q.w.size()),
        ds(q.s.size()),
        dz(q.z.size()) {}
  // The gradients from ∂loss/∂ŵ, then step t of each (lr: weights; lr_q: scales and zeros),
  // for rows [r0, r1) and their parameter sets.
  void Step(Q& q, const float* dwhat, double lr, double lr_q, double wd, int64_t t, int64_t r0,
            int64_t r1) {
    q.Backward(dwhat, dw.data(), ds.data(), dz.data(), r0, r1);
    const Adam::Bias b(t);
    const int64_t k = q.cols();
    // Frozen codes: the latent weights get no gradient and decide nothing; no step for them.
    if (!q.codes_frozen()) {
#pragma omp parallel for if ((r1 - r0) * k > 65536)
      for (int64_t r = r0; r < r1; ++r)
        q.ForEachRun(r, [&](int64_t c0, int64_t c1, double unit) {
          for (int64_t i = r * k + c0; i < r * k + c1; ++i)
            w.Update(q.w, size_t(i), dw[size_t(i)], lr, unit, wd, b);
        });
    }
    const auto [p0, p1] = q.ParamsOfRows(r0, r1);
    if constexpr (Q::kMinsFollowScales) s_before.assign(q.s.begin() + p0, q.s.begin() + p1);
    s.StepLog(q.s, ds.data(), lr_q, t, p0, p1);
    if constexpr (Q::kMinsFollowScales) {
      // Min factors m, trained as m / d: the gradient ∂/∂m at fixed d times m is ∂/∂log(m / d);
      // then m follows d's step.
      z.StepLog(q.z, dz.data(), lr_q, t, p0, p1);
      for (int64_t p = p0; p < p1; ++p)
        if (s_before[size_t(p - p0)] != 0)
          q.z[size_t(p)] *= q.s[size_t(p)] / s_before[size_t(p - p0)];
    } else {
      z.Step(
          q.z, dz.data(), lr_q, 0, t, [](int64_t) { return 1.0f; }, p0, p1);
    }
  }
};

// An RMSNorm weight vector under training (trained in place): its gradient, starting values and
// AdamW (no decay), a step of lr moving a weight by at most ~lr of its starting magnitude. Every
// rank steps every norm (from the same summed gradients).
struct TunedNorm {
  std::vector<float>* p;
  std::vector<float> g, start;
  Adam adam;
  explicit TunedNorm(std::vector<float>* v) : p(v), g(v->size()), start(*v), adam(v->size()) {}
  void ZeroGrad() { std::fill(g.begin(), g.end(), 0.0f); }
  void Step(double lr, int64_t t) {
    adam.Step(
        *p, g.data(), lr, 0.0, t, [this](int64_t i) { return std::fabs(start[size_t(i)]); }, 0,
        int64_t(p->size()));
  }
  void Revert() { *p = start; }
};

// Puts block `layer`'s two input norms under training (appended to `norms`, whose capacity must
// hold them: the returned gradients point into the entries). `what` names the pass in errors.
Result<train::NormGrads> TuneBlockNorms(model::Layer& blk, int64_t layer, int64_t H,
                                        std::vector<TunedNorm>& norms, const char* what) {
  if (int64_t(blk.attn_norm.size()) != H || int64_t(blk.ffn_norm.size()) != H)
    return Err("{}: layer {} has no input norms of {} values", what, layer, H);
  QF_CHECK(norms.capacity() >= norms.size() + 2, "qat: norms would reallocate");
  train::NormGrads g;
  g.attn_norm = norms.emplace_back(&blk.attn_norm).g.data();
  g.ffn_norm = norms.emplace_back(&blk.ffn_norm).g.data();
  return g;
}

// The rows of a linear whose optimizer step this rank takes: all of them in one process or
// when one parameter set spans every row; under mpirun otherwise a share (dist::ShareRows),
// and Gather() hands each rank's rows of a row-major array to every rank afterwards. Every
// update is per element or per row, so the steps give the single process's bits.
struct RowShare {
  int64_t r0 = 0, r1 = 0, n = 0;
  bool split = false;
  RowShare() = default;
  RowShare(int64_t rows, bool rows_own) : r1(rows), n(rows) {
    if (dist::Size() > 1 && rows_own) {
      std::tie(r0, r1) = dist::ShareRows(rows, 1);
      split = true;
    }
  }
  void Gather(std::span<float> v) const {
    if (split) dist::AllGatherRows(std::as_writable_bytes(v), n, 1);
  }
};

// The windows held out of training (the last eighth, at least one; none when S = 1): both
// training passes measure their start and end losses on them, so that fitting the training
// windows at the expense of unseen text is caught (and reverted).
int64_t HeldOutWindows(int64_t S) { return S >= 2 ? std::max<int64_t>(1, S / 8) : 0; }

// 0 .. n-1 shuffled (Fisher-Yates with the library-independent engine): one epoch's order.
void Shuffle(std::vector<int64_t>& order, std::mt19937_64& rng) {
  const int64_t n = int64_t(order.size());
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(order[size_t(i)], order[size_t(rng() % uint64_t(i + 1))]);
}

// Under mpirun (core/dist.h): the ranks holding the windows order[b0, b0 + nb) of S, ascending.
// Each rank computes the gradients of the windows it holds; the parts are summed over these
// ranks only, so a batch held by one rank (always, with --batch 1) gives that rank's bits.
std::vector<int> BatchHolders(std::span<const int64_t> batch, int64_t S) {
  std::vector<int> h;
  for (const int64_t s : batch) h.push_back(dist::HolderOf(S, s));
  std::sort(h.begin(), h.end());
  h.erase(std::unique(h.begin(), h.end()), h.end());
  return h;
}

// A sum of per-window figures over the ranks (each rank's windows in order, then rank order).
double SumOverRanks(double v) {
  std::vector<double> one{v};
  dist::SumInRankOrder(one);
  return one[0];
}

double CosineLr(double lr, int64_t step, int64_t total) {
  const double lo = lr / 20;  // EfficientQAT's eta_min
  return lo + 0.5 * (lr - lo) *
                  (1 + std::cos(M_PI * double(step) / double(std::max<int64_t>(1, total))));
}

}  // namespace

Result<QatLinear> QatLinear::Init(const QuantizedTensor& start, std::span<const float> w) {
  if (!start.scheme.is_int()) return Err("qat: {} is not an integer scheme", start.scheme.name);
  if (int64_t(w.size()) != start.rows * start.cols) return Err("qat: weight shape mismatch");
  QatLinear q;
  q.n_ = start.rows;
  q.k_ = start.cols;
  q.maxq_ = float(start.scheme.MaxCode());
  q.shape_.scheme = start.scheme;
  q.shape_.fallback = start.fallback;
  q.shape_.rows = start.rows;
  q.shape_.cols = start.cols;
  q.w.assign(w.begin(), w.end());
  q.s = start.scales;
  // A zero scale (a ggml block of zeros) would make every code undefined: the smallest normal
  // float keeps the group at zero. Negative scales (ggml's Q4_0 picks d = max / -8) train as
  // they are: the log-space step keeps the sign.
  for (float& v : q.s)
    if (v == 0.0f) v = std::numeric_limits<float>::min();
  q.z.resize(q.s.size());
  for (size_t i = 0; i < q.z.size(); ++i)
    q.z[i] = start.scheme.symmetric ? float(1 << (start.scheme.bits - 1)) : float(start.zeros[i]);
  return q;
}

float QatLinear::Zero(int64_t p) const {
  if (shape_.scheme.symmetric) return float(1 << (shape_.scheme.bits - 1));
  return std::clamp(RoundHalfEven(z[size_t(p)]), 0.0f, maxq_);
}

void QatLinear::FakeQuantize(float* out, int64_t r0, int64_t r1) const {
#pragma omp parallel for if ((r1 - r0) * k_ > 65536)
  for (int64_t r = r0; r < r1; ++r)
    ForEachParam(r, [&](int64_t p, int64_t c0, int64_t c1) {
      const float sc = s[size_t(p)], zi = Zero(p);
      for (int64_t i = r * k_ + c0; i < r * k_ + c1; ++i)
        out[i] = sc * (Code(w[size_t(i)], sc, zi) - zi);
    });
}

void QatLinear::Backward(const float* dwhat, float* dw, float* ds, float* dz, int64_t r0,
                         int64_t r1) const {
  const bool asym = !shape_.scheme.symmetric;
  // Rows in parallel own their parameters, except the one set of a per-tensor scheme.
  const bool rows_own = RowsOwnParams();
  QF_CHECK(rows_own || (r0 == 0 && r1 == n_), "qat: a per-tensor scale needs every row");
  // Each parameter set's sums run over its columns in order; a per-tensor scheme's one set sums
  // each row's part first (rows in parallel), then the rows in order.
  std::vector<double> row_s(rows_own ? 0 : size_t(n_)), row_z(row_s.size());
#pragma omp parallel for if ((r1 - r0) * k_ > 65536)
  for (int64_t r = r0; r < r1; ++r)
    ForEachParam(r, [&](int64_t p, int64_t c0, int64_t c1) {
      const float sc = s[size_t(p)], zi = Zero(p);
      double as = 0, az = 0;
      for (int64_t c = c0; c < c1; ++c) {
        const size_t i = size_t(r * k_ + c);
        const float rq = RoundHalfEven(w[i] / sc);
        const float code = rq + zi;
        const double g = dwhat[i];
        if (code >= 0.0f && code <= maxq_) {
          dw[i] = dwhat[i];
          as += g * double(rq);
        } else {
          dw[i] = 0.0f;
          as += g * (double(std::clamp(code, 0.0f, maxq_)) - zi);
          if (asym) az -= g * sc;
        }
      }
      if (rows_own) {
        ds[p] = float(as);
        dz[p] = asym ? float(az) : 0.0f;
      } else {
        row_s[size_t(r)] = as;
        row_z[size_t(r)] = az;
      }
    });
  if (!rows_own) {
    double ts = 0, tz = 0;
    for (int64_t r = 0; r < n_; ++r) ts += row_s[size_t(r)], tz += row_z[size_t(r)];
    ds[0] = float(ts);
    dz[0] = asym ? float(tz) : 0.0f;
  }
}

QuantizedTensor QatLinear::Freeze() const {
  QuantizedTensor q = shape_;
  q.codes.resize(size_t(n_ * k_));
  q.scales = s;
  if (!shape_.scheme.symmetric) {
    q.zeros.resize(z.size());
    for (size_t p = 0; p < z.size(); ++p) q.zeros[p] = int32_t(Zero(int64_t(p)));
  }
  for (int64_t r = 0; r < n_; ++r)
    ForEachParam(r, [&](int64_t p, int64_t c0, int64_t c1) {
      const float sc = s[size_t(p)], zi = Zero(p);
      for (int64_t i = r * k_ + c0; i < r * k_ + c1; ++i)
        q.codes[size_t(i)] = uint8_t(Code(w[size_t(i)], sc, zi));
    });
  return q;
}

namespace {
float HeaderField(const std::byte* block, int at) {
  uint16_t h;
  std::memcpy(&h, block + at, 2);
  return F16ToF32(h);
}
void SetHeaderField(std::byte* block, int at, float v) {
  const uint16_t h = F16BitsRne(v);
  std::memcpy(block + at, &h, 2);
}
}  // namespace

Result<GgmlQatLinear> GgmlQatLinear::Init(const GgmlBlockType& t, std::span<const std::byte> blocks,
                                          int64_t rows, int64_t cols, std::span<const float> w) {
  if (t.activation_only || !t.codes) return Err("qat: {} blocks hold no codes", t.name);
  const GgmlCodeFormat& f = *t.codes;
  QF_ASSIGN(const uint64_t bytes, GgmlRowsBytes(t, rows, cols));
  if (blocks.size() != bytes)
    return Err("qat: {} bytes of {} for {} x {} weights, expected {}", blocks.size(), t.name, rows,
               cols, bytes);
  if (int64_t(w.size()) != rows * cols) return Err("qat: weight shape mismatch");
  GgmlQatLinear q;
  q.t_ = &t;
  q.n_ = rows;
  q.k_ = cols;
  q.blocks_per_row_ = cols / t.block;
  q.runs_per_block_ = t.block / f.run;
  const int top = (1 << f.bits) - 1;
  q.spacing_ = (f.Level(top) - f.Level(0)) / float(top);
  q.lo_ = f.Level(0) - (f.Level(1) - f.Level(0)) / 2;
  q.hi_ = f.Level(top) + (f.Level(top) - f.Level(top - 1)) / 2;
  q.start_.assign(blocks.begin(), blocks.end());
  q.w.assign(w.begin(), w.end());
  const size_t nb = size_t(rows * q.blocks_per_row_);
  q.s.resize(nb);
  q.z.assign(nb, 0.0f);
  q.coef_.resize(nb * size_t(q.runs_per_block_) * 4);
  std::vector<std::byte> unit(t.block_bytes);
  std::vector<GgmlLattice> l1(size_t(t.block)), l2(size_t(t.block));
  for (size_t b = 0; b < nb; ++b) {
    const std::byte* block = blocks.data() + b * t.block_bytes;
    q.s[b] = HeaderField(block, f.d_at);
    if (f.m_at >= 0) q.z[b] = HeaderField(block, f.m_at);
    if (!std::isfinite(q.s[b]) || !std::isfinite(q.z[b]))
      return Err("qat: a {} block with a non-finite header", t.name);
    // The lattice at d = 1, m = 0 and at d = 0, m = 1: its coefficients.
    std::memcpy(unit.data(), block, t.block_bytes);
    SetHeaderField(unit.data(), f.d_at, 1.0f);
    if (f.m_at >= 0) SetHeaderField(unit.data(), f.m_at, 0.0f);
    f.lattice(unit.data(), l1.data());
    if (f.m_at >= 0) {
      SetHeaderField(unit.data(), f.d_at, 0.0f);
      SetHeaderField(unit.data(), f.m_at, 1.0f);
      f.lattice(unit.data(), l2.data());
    }
    for (int64_t j = 0; j < q.runs_per_block_; ++j) {
      const size_t e = size_t(j * f.run);
      float* k = q.coef_.data() + 4 * (b * size_t(q.runs_per_block_) + size_t(j));
      k[0] = l1[e].scale;
      k[1] = l1[e].offset;
      k[2] = f.m_at >= 0 ? l2[e].scale : 0.0f;
      k[3] = f.m_at >= 0 ? l2[e].offset : 0.0f;
    }
  }
  return q;
}

void GgmlQatLinear::FakeQuantize(float* out, int64_t r0, int64_t r1) const {
  const GgmlCodeFormat& f = *t_->codes;
#pragma omp parallel for if ((r1 - r0) * k_ > 65536)
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c0 = 0; c0 < k_; c0 += f.run) {
      const GgmlLattice l = Lattice(r, c0);
      for (int64_t i = r * k_ + c0; i < r * k_ + c0 + f.run; ++i)
        out[i] = f.Value(l, CodeOf(size_t(i), l));
    }
}

void GgmlQatLinear::Backward(const float* dwhat, float* dw, float* dd, float* dm, int64_t r0,
                             int64_t r1) const {
  const GgmlCodeFormat& f = *t_->codes;
  const int64_t B = t_->block;
  const bool frozen = codes_frozen();
#pragma omp parallel for if ((r1 - r0) * k_ > 65536)
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c0 = 0; c0 < k_; c0 += B) {  // block by block, its runs in order
      const int64_t b = r * blocks_per_row_ + c0 / B;
      const double d = s[size_t(b)], ratio = d != 0 ? z[size_t(b)] / d : 0.0;
      double gd = 0, gm = 0;
      for (int64_t j = 0; j < runs_per_block_; ++j) {
        const int64_t c = c0 + j * f.run;
        const GgmlLattice l = Lattice(r, c);
        const float* k = coef_.data() + 4 * (b * runs_per_block_ + j);
        for (int64_t i = r * k_ + c; i < r * k_ + c + f.run; ++i) {
          const float lev = f.Level(CodeOf(size_t(i), l));
          const float u = (w[size_t(i)] - l.offset) / l.scale;  // level units
          const double g = dwhat[i];
          const bool in = u >= lo_ && u <= hi_;  // false for a zero or NaN scale
          dw[i] = in && !frozen ? dwhat[i] : 0.0f;
          // ŵ = d · ((a + r a') · level + o + r o') with r = m / d: ∂/∂d at fixed codes and r;
          // ∂/∂m at fixed d where the weight is out of the grid only, as QatLinear's zeros.
          const double ma = double(k[2]) * lev + k[3];
          gd += g * (double(k[0]) * lev + k[1] + ratio * ma);
          if (!in && !frozen) gm += g * ma;
        }
      }
      dd[b] = float(gd);
      dm[b] = float(gm);
    }
}

void GgmlQatLinear::FreezeCodes() {
  std::vector<uint8_t> c(w.size());
  for (int64_t r = 0; r < n_; ++r)
    for (int64_t c0 = 0; c0 < k_; c0 += t_->codes->run) {
      const GgmlLattice l = Lattice(r, c0);
      for (size_t i = size_t(r * k_ + c0); i < size_t(r * k_ + c0 + t_->codes->run); ++i)
        c[i] = uint8_t(t_->codes->Nearest(l, w[i]));
    }
  codes_ = std::move(c);
}

std::vector<std::byte> GgmlQatLinear::Freeze() const {
  const GgmlCodeFormat& f = *t_->codes;
  std::vector<std::byte> out = start_;
  std::vector<GgmlLattice> l(size_t(t_->block));
  std::vector<uint8_t> codes(size_t(t_->block));
  for (size_t b = 0; b < s.size(); ++b) {
    std::byte* block = out.data() + b * t_->block_bytes;
    SetHeaderField(block, f.d_at, s[b]);
    if (f.m_at >= 0) SetHeaderField(block, f.m_at, z[b]);
    f.lattice(block, l.data());
    const size_t i0 = b * size_t(t_->block);  // blocks are consecutive in row order
    for (size_t i = 0; i < size_t(t_->block); ++i) codes[i] = uint8_t(CodeOf(i0 + i, l[i]));
    GgmlSetCodes(*t_, codes.data(), block);
  }
  return out;
}

namespace {
template <class Q>
Result<QatBlockReport> TrainBlockOf(const model::ModelConfig& c, model::Layer& blk, int64_t layer,
                                    std::array<Q*, 7> train, const float* inputs,
                                    const float* targets, int64_t S, int64_t T, const float* cos,
                                    const float* sin, const QatOptions& opt,
                                    const QatProgress& progress) {
  if (opt.epochs < 0 || opt.batch < 1 || !(opt.lr >= 0) || !(opt.lr_q >= 0))
    return Err("qat: bad --epochs / --batch / --lr");
  const auto t0 = Clock::now();
  const int64_t H = c.hidden, n_out = T * H;
  // This rank's windows (all of them in one process): inputs/targets hold [w0, w1).
  const auto [w0, w1] = dist::Share(S);
  auto held = [w0 = w0, w1 = w1](int64_t s) { return s >= w0 && s < w1; };
  // The linears the walk runs: a fake-quantized fp32 copy for each trained one.
  std::array<model::Linear, 7> fq;
  train::BlockLinears lin{};
  std::array<std::vector<float>, 7> dwhat;
  std::array<std::optional<QatStepper<Q>>, 7> stepper;
  std::array<RowShare, 7> share;  // the rows each rank steps
  for (size_t i = 0; i < 7; ++i) {
    const model::Linear& own = blk[model::kBlockLinears[i]];
    lin[i] = &own;
    if (!train[i]) continue;
    Q& q = *train[i];
    if (q.rows() != own.n || q.cols() != own.k) return Err("qat: linear {} shape mismatch", i);
    fq[i].n = own.n;
    fq[i].k = own.k;
    fq[i].bias = own.bias;
    fq[i].act = own.act;  // activation schemes: the forward quantizes the input as inference does
    fq[i].weight.resize(size_t(own.n * own.k));
    q.FakeQuantize(fq[i].weight.data());
    lin[i] = &fq[i];
    dwhat[i].resize(fq[i].weight.size());
    stepper[i].emplace(q);
    share[i] = RowShare(own.n, q.RowsOwnParams());
  }
  // With block_norms, the block's two input norms train too (in place).
  std::vector<TunedNorm> norms;
  train::NormGrads dnorm;
  if (opt.block_norms) {
    norms.reserve(2);
    QF_ASSIGN(dnorm, TuneBlockNorms(blk, layer, H, norms, "qat"));
  }
  train::BlockTape tape(c, T);
  train::BackwardScratch scratch(c, T);
  std::vector<float> dout(static_cast<size_t>(n_out));

  // Each token's weight in the loss (BlockLoss), [this rank's windows, T].
  std::vector<double> tok_w(static_cast<size_t>((w1 - w0) * T), 1.0);
  if (opt.block_loss == BlockLoss::kRelative)
    for (int64_t t = 0; t < (w1 - w0) * T; ++t) {
      double ms = 0;
      for (int64_t h = 0; h < H; ++h) ms += double(targets[t * H + h]) * targets[t * H + h];
      tok_w[size_t(t)] = 1.0 / std::max(ms / double(H), 1e-12);
    }
  // The loss (the mean over elements of the weighted squared error) over the held-out windows
  // (all of them when none is) with the current weights.
  const int64_t V = HeldOutWindows(S), S_train = S - V;
  auto evaluate = [&] {
    double total = 0;
    const int64_t e0 = V ? S_train : 0;
    for (int64_t s = e0; s < S; ++s) {
      if (!held(s)) continue;
      train::ForwardBlock(c, blk, layer, lin, inputs + (s - w0) * n_out, cos, sin, tape);
      const float* y = targets + (s - w0) * n_out;
      const double* tw = tok_w.data() + (s - w0) * T;
      for (int64_t i = 0; i < n_out; ++i) {
        const double d = double(tape.x[size_t(i)]) - y[i];
        total += d * d * tw[i / H];
      }
    }
    return SumOverRanks(total) / double((S - e0) * n_out);
  };

  QatBlockReport rep;
  rep.layer = layer;
  rep.loss = opt.block_loss;
  rep.norms = opt.block_norms;
  rep.loss_start = evaluate();
  // The starting state, kept in case training ends worse than it started.
  std::array<std::optional<Q>, 7> start;
  for (size_t i = 0; i < 7; ++i)
    if (train[i]) start[i] = *train[i];
  const int64_t steps_per_epoch = (S_train + opt.batch - 1) / opt.batch;
  const int64_t total = steps_per_epoch * opt.epochs;
  std::mt19937_64 rng(opt.seed ^ (0x9e3779b97f4a7c15ull * uint64_t(layer + 1)));
  std::vector<int64_t> order(static_cast<size_t>(S_train));
  int64_t step = 0;
  for (int epoch = 0; epoch < opt.epochs; ++epoch) {
    Shuffle(order, rng);
    double epoch_loss = 0;
    for (int64_t b0 = 0; b0 < S_train; b0 += opt.batch) {
      const int64_t nb = std::min(opt.batch, S_train - b0);
      for (size_t i = 0; i < 7; ++i)
        if (train[i]) std::fill(dwhat[i].begin(), dwhat[i].end(), 0.0f);
      for (TunedNorm& n : norms) n.ZeroGrad();
      double loss = 0;
      const double norm = 2.0 / double(nb * n_out);
      for (int64_t j = 0; j < nb; ++j) {
        const int64_t s = order[size_t(b0 + j)];
        if (!held(s)) continue;
        const float* x0 = inputs + (s - w0) * n_out;
        train::ForwardBlock(c, blk, layer, lin, x0, cos, sin, tape);
        const float* y = targets + (s - w0) * n_out;
        const double* tw = tok_w.data() + (s - w0) * T;
        for (int64_t i = 0; i < n_out; ++i) {
          const double d = double(tape.x[size_t(i)]) - y[i];
          loss += d * d * tw[i / H];
          dout[size_t(i)] = float(norm * d * tw[i / H]);
        }
        std::array<float*, 7> g{};
        for (size_t i = 0; i < 7; ++i) g[i] = train[i] ? dwhat[i].data() : nullptr;
        train::BackwardBlock(c, blk, lin, tape, x0, dout.data(), cos, sin, g, nullptr, scratch,
                             dnorm);
      }
      const std::vector<int> holders =
          BatchHolders(std::span<const int64_t>(order).subspan(size_t(b0), size_t(nb)), S);
      for (size_t i = 0; i < 7; ++i)
        if (train[i]) dist::SumOver(dwhat[i], holders);
      for (TunedNorm& n : norms) dist::SumOver(n.g, holders);
      loss = SumOverRanks(loss) / double(nb * n_out);
      if (!std::isfinite(loss))
        return Err("qat: layer {}: the loss is not finite (lower --lr)", layer);
      epoch_loss += loss * double(nb);
      rep.step_loss.push_back(float(loss));
      ++step;
      const double lr = CosineLr(opt.lr, step - 1, total),
                   lr_q = CosineLr(opt.lr_q, step - 1, total);
      for (size_t i = 0; i < 7; ++i) {
        if (!train[i]) continue;
        const RowShare& sh = share[i];
        stepper[i]->Step(*train[i], dwhat[i].data(), lr, lr_q, opt.weight_decay, step, sh.r0,
                         sh.r1);
        train[i]->FakeQuantize(fq[i].weight.data(), sh.r0, sh.r1);
        sh.Gather(fq[i].weight);
      }
      for (TunedNorm& n : norms) n.Step(lr_q, step);
      if (progress) progress(step, total, loss);
    }
    rep.epoch_loss.push_back(epoch_loss / double(S_train));
  }
  rep.steps = step;
  for (size_t i = 0; i < 7; ++i)
    if (train[i]) {
      share[i].Gather(train[i]->w);
      share[i].Gather(train[i]->s);
      share[i].Gather(train[i]->z);
    }
  rep.loss_end = evaluate();
  if (!(rep.loss_end <= rep.loss_start)) {
    for (size_t i = 0; i < 7; ++i)
      if (train[i]) *train[i] = std::move(*start[i]);
    for (TunedNorm& n : norms) n.Revert();
    rep.reverted = true;
    rep.loss_end = rep.loss_start;
  }
  rep.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return rep;
}
}  // namespace

Result<QatBlockReport> TrainBlock(const model::ModelConfig& c, model::Layer& blk, int64_t layer,
                                  std::array<QatLinear*, 7> train, const float* inputs,
                                  const float* targets, int64_t S, int64_t T, const float* cos,
                                  const float* sin, const QatOptions& opt,
                                  const QatProgress& progress) {
  return TrainBlockOf(c, blk, layer, train, inputs, targets, S, T, cos, sin, opt, progress);
}

Result<QatBlockReport> TrainBlock(const model::ModelConfig& c, model::Layer& blk, int64_t layer,
                                  std::array<GgmlQatLinear*, 7> train, const float* inputs,
                                  const float* targets, int64_t S, int64_t T, const float* cos,
                                  const float* sin, const QatOptions& opt,
                                  const QatProgress& progress) {
  return TrainBlockOf(c, blk, layer, train, inputs, targets, S, T, cos, sin, opt, progress);
}

std::vector<float> CodeLevels(const QuantizedTensor& q) {
  std::vector<float> level(q.codes.size());
  for (int64_t r = 0; r < q.rows; ++r)
    q.ForEachParam(r, [&](int64_t, int64_t c0, int64_t c1) {
      const float zero = q.Params(r, c0).zero;
      for (int64_t e = r * q.cols + c0; e < r * q.cols + c1; ++e)
        level[size_t(e)] = float(q.codes[size_t(e)]) - zero;
    });
  return level;
}

void ScaleGradients(const QuantizedTensor& q, std::span<const float> level, const float* dw,
                    int64_t r0, int64_t r1, float* ds) {
  const int64_t k = q.cols;
  if (!q.RowsOwnParams()) {
    double a = 0;
    for (int64_t e = r0 * k; e < r1 * k; ++e) a += double(dw[size_t(e)]) * level[size_t(e)];
    ds[0] = float(a);
    return;
  }
  // Rows own their sets: each set's sum is one row's, in element order, on any thread.
#pragma omp parallel for if ((r1 - r0) * k > 65536)
  for (int64_t r = r0; r < r1; ++r)
    q.ForEachParam(r, [&](int64_t p, int64_t c0, int64_t c1) {
      double a = 0;
      for (int64_t e = r * k + c0; e < r * k + c1; ++e)
        a += double(dw[size_t(e)]) * level[size_t(e)];
      ds[size_t(p)] = float(a);
    });
}

Result<QatE2eReport> TuneScalesEndToEnd(
    const model::ModelConfig& c, std::vector<model::Layer>& layers,
    const std::vector<std::array<QuantizedTensor*, 7>>& tensors, std::span<const float> embed,
    std::vector<float>& final_norm, const model::Linear& lm_head,
    const std::vector<std::vector<int32_t>>& windows, const float* cos, const float* sin,
    const QatOptions& opt, const QatProgress& progress, const std::vector<model::Layer>* fp_layers,
    const std::vector<std::array<GgmlBlocks*, 7>>* ggml) {
  const auto t0 = Clock::now();
  const int64_t L = int64_t(layers.size()), H = c.hidden, V = c.vocab_size;
  const int64_t S = int64_t(windows.size());
  if (S == 0 || tensors.size() != layers.size()) return Err("qat e2e: no windows or bad layers");
  const int64_t T = int64_t(windows[0].size());
  if (T < 2) return Err("qat e2e: windows of at least 2 tokens");
  // The loss's parts: KL to the fp model (every position; with the next-token loss, every
  // position that has a next token) and the next-token cross-entropy.
  const bool kl = opt.e2e_loss != E2eLoss::kNextToken, ce = opt.e2e_loss != E2eLoss::kKlToFp;
  if (kl && (!fp_layers || fp_layers->size() != layers.size()))
    return Err("qat e2e: the KL loss needs the fp model's blocks");
  if (int64_t(final_norm.size()) != H)
    return Err("qat e2e: final norm of {} values", final_norm.size());
  const std::vector<float> fp_final_norm = final_norm;  // the KL reference's
  // The trained norms: every block's two (e2e_norms), then the final norm (e2e_final_norm).
  std::vector<TunedNorm> norms;
  norms.reserve(size_t(2 * L + 1));  // no reallocation: dnorm and dfinal point into the entries
  std::vector<train::NormGrads> dnorm(static_cast<size_t>(L));
  float* dfinal = nullptr;
  if (opt.e2e_norms)
    for (int64_t l = 0; l < L; ++l) {
      QF_ASSIGN(dnorm[size_t(l)], TuneBlockNorms(layers[size_t(l)], l, H, norms, "qat e2e"));
    }
  if (opt.e2e_final_norm) dfinal = norms.emplace_back(&final_norm).g.data();
  // Each tuned linear: its codes as (code - zero) floats, the scale index of each element, the
  // scales' optimiser; with e2e_weights a QatLinear (latent weights, scales, zeros) and its
  // optimiser instead.
  struct Tuned {
    QuantizedTensor* q;  // null for ggml blocks
    model::Linear* lin;
    std::vector<float> level;   // code - zero, [n, k]
    std::vector<float> dw, ds;  // ∂loss/∂ŵ, ∂loss/∂s
    Adam adam;                  // the scales' (empty when the QatLinear trains)
    std::optional<QatLinear> ql;
    std::optional<QatStepper<QatLinear>> stepper;
    RowShare share;  // the rows this rank steps
    // ggml blocks: their trainer (codes frozen unless e2e_weights) and its optimiser.
    GgmlBlocks* g = nullptr;
    std::optional<GgmlQatLinear> gl;
    std::optional<QatStepper<GgmlQatLinear>> gstepper;
    Tuned(QuantizedTensor* qt, model::Linear* l, bool weights)
        : q(qt),
          lin(l),
          adam(weights ? 0 : qt->scales.size()),
          share(qt->rows, qt->RowsOwnParams()) {}
    Tuned(GgmlBlocks* gt, model::Linear* l)
        : q(nullptr), lin(l), adam(0), share(gt->rows, true), g(gt) {}
    // The weights the model runs with, rows [r0, r1).
    void Install(int64_t r0, int64_t r1) {
      if (ql) {
        ql->FakeQuantize(lin->weight.data(), r0, r1);
        return;
      }
      if (gl) {
        gl->FakeQuantize(lin->weight.data(), r0, r1);
        return;
      }
      const int64_t k = q->cols;
#pragma omp parallel for if ((r1 - r0) * k > 65536)
      for (int64_t r = r0; r < r1; ++r)
        q->ForEachParam(r, [&](int64_t p, int64_t c0, int64_t c1) {
          const float sc = q->scales[size_t(p)];
          for (int64_t e = r * k + c0; e < r * k + c1; ++e)
            lin->weight[size_t(e)] = sc * level[size_t(e)];
        });
    }
    void Install() { Install(0, lin->n); }
  };
  std::vector<Tuned> tuned;
  tuned.reserve(size_t(L) * 7);  // no reallocation: dw below points into the entries
  std::vector<std::array<float*, 7>> dw(static_cast<size_t>(L));  // null: not tuned
  for (int64_t l = 0; l < L; ++l)
    for (size_t i = 0; i < 7; ++i) {
      QuantizedTensor* q = tensors[size_t(l)][i];
      if (!q) continue;
      if (!q->scheme.is_int()) return Err("qat e2e: {} is not an integer scheme", q->scheme.name);
      model::Linear& lin = layers[size_t(l)][model::kBlockLinears[i]];
      tuned.emplace_back(q, &lin, opt.e2e_weights);
      Tuned& t = tuned.back();
      t.dw.resize(q->codes.size());
      if (opt.e2e_weights) {
        QF_ASSIGN(const std::vector<float> w, Dequantize(*q));
        QF_ASSIGN(t.ql, QatLinear::Init(*q, w));
        t.stepper.emplace(*t.ql);
      } else {
        t.level = CodeLevels(*q);
        t.ds.resize(q->scales.size());
      }
      t.Install();
      dw[size_t(l)][i] = t.dw.data();
    }
  // Linears stored as ggml blocks: a GgmlQatLinear from their values (scale-only: codes frozen,
  // each block's d trains and m follows it; with e2e_weights as in TrainBlock).
  if (ggml) {
    if (ggml->size() != layers.size()) return Err("qat e2e: bad ggml layers");
    for (int64_t l = 0; l < L; ++l)
      for (size_t i = 0; i < 7; ++i) {
        GgmlBlocks* g = (*ggml)[size_t(l)][i];
        if (!g) continue;
        if (tensors[size_t(l)][i]) return Err("qat e2e: layer {} linear {} given twice", l, i);
        model::Linear& lin = layers[size_t(l)][model::kBlockLinears[i]];
        if (g->rows != lin.n || g->cols != lin.k) return Err("qat e2e: ggml shape mismatch");
        std::vector<float> v(size_t(lin.n * lin.k));
        QF_TRY(DequantizeRowsGgml(*g->type, g->bytes.data(), lin.n, lin.k, v.data()));
        tuned.emplace_back(g, &lin);
        Tuned& t = tuned.back();
        t.dw.resize(v.size());
        QF_ASSIGN(t.gl, GgmlQatLinear::Init(*g->type, g->bytes, lin.n, lin.k, v));
        if (!opt.e2e_weights) t.gl->FreezeCodes();
        t.gstepper.emplace(*t.gl);
        t.Install();
        dw[size_t(l)][i] = t.dw.data();
      }
  }
  std::vector<train::BlockLinears> lin(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l)
    for (size_t i = 0; i < 7; ++i) lin[size_t(l)][i] = &layers[size_t(l)][model::kBlockLinears[i]];

  std::vector<train::BlockTape> tapes;
  for (int64_t l = 0; l < L; ++l) tapes.emplace_back(c, T);
  train::BackwardScratch scratch(c, T);
  std::vector<float> x0(static_cast<size_t>(T * H)), h(x0.size()), logits(size_t(T * V)),
      dx(x0.size()), dx_next(x0.size()), dh(x0.size());
  // KL: the fp model's log-probabilities of the window [T, V], from its blocks (two tapes in
  // turn: each block reads the one before's output).
  std::vector<float> logp_fp;
  std::vector<train::BlockLinears> fp_lin;
  std::vector<train::BlockTape> fp_tapes;
  if (kl) {
    logp_fp.resize(logits.size());
    fp_lin.resize(size_t(L));
    for (int64_t l = 0; l < L; ++l)
      for (size_t i = 0; i < 7; ++i)
        fp_lin[size_t(l)][i] = &(*fp_layers)[size_t(l)][model::kBlockLinears[i]];
    fp_tapes.emplace_back(c, T);
    fp_tapes.emplace_back(c, T);
  }
  auto fp_log_probs = [&](const std::vector<int32_t>& ids) {
    model::Embed(embed, H, ids, x0.data());
    const float* in = x0.data();
    for (int64_t l = 0; l < L; ++l) {
      train::BlockTape& tp = fp_tapes[size_t(l % 2)];
      train::ForwardBlock(c, (*fp_layers)[size_t(l)], l, fp_lin[size_t(l)], in, cos, sin, tp);
      in = tp.x.data();
    }
    kernels::RmsNorm(in, fp_final_norm.data(), h.data(), T, H, float(c.rms_eps));
    lm_head.Apply(h.data(), logp_fp.data(), T);
    for (int64_t t = 0; t < T; ++t) {
      float* row = logp_fp.data() + t * V;
      const float lse = float(kernels::LogSumExp(row, V));
      for (int64_t v = 0; v < V; ++v) row[v] -= lse;
    }
  };
  // Positions scored per window: every one for the KL alone, else those with a next token.
  const int64_t positions = ce ? T - 1 : T;
  // Forward of one window; returns its summed loss over the scored positions (cross-entropy of
  // the next tokens and/or KL to the fp model); with `grad`, backpropagates it (scaled by
  // `scale`) into the linears' dw (and the norms' gradients).
  auto run = [&](const std::vector<int32_t>& ids, bool grad, double scale) -> double {
    if (kl) fp_log_probs(ids);
    model::Embed(embed, H, ids, x0.data());
    for (int64_t l = 0; l < L; ++l)
      train::ForwardBlock(c, layers[size_t(l)], l, lin[size_t(l)],
                          l == 0 ? x0.data() : tapes[size_t(l - 1)].x.data(), cos, sin,
                          tapes[size_t(l)]);
    const float* xl = tapes[size_t(L - 1)].x.data();
    kernels::RmsNorm(xl, final_norm.data(), h.data(), T, H, float(c.rms_eps));
    lm_head.Apply(h.data(), logits.data(), T);
    double total = 0;
    for (int64_t t = 0; t < positions; ++t) {
      float* row = logits.data() + t * V;
      const double lse = kernels::LogSumExp(row, V);
      const float* lp = kl ? logp_fp.data() + t * V : nullptr;
      const int32_t next = ce ? ids[size_t(t + 1)] : -1;
      if (kl)  // Σ p (log p − log q)
        for (int64_t v = 0; v < V; ++v)
          total += std::exp(double(lp[v])) * (double(lp[v]) - (double(row[v]) - lse));
      if (ce) total += lse - double(row[next]);
      if (!grad) continue;
      // d/d logits: KL q − p, cross-entropy q − onehot(next).
      const double parts = double(kl) + double(ce);
      for (int64_t v = 0; v < V; ++v) {
        const double q = std::exp(double(row[v]) - lse);
        row[v] = float(scale * (parts * q - (kl ? std::exp(double(lp[v])) : 0.0)));
      }
      if (ce) row[next] -= float(scale);
    }
    if (!grad) return total;
    if (positions < T)  // the last token scores nothing
      std::fill(logits.begin() + (T - 1) * V, logits.end(), 0.0f);
    // dh = dlogits · W_lm; then the final norm; then the blocks top-down.
    kernels::F32Gemm(kernels::BLayout::kNN, T, H, V, 1.0f, logits.data(), V, lm_head.weight.data(),
                     H, dh.data(), H);
    train::RmsNormBackward(xl, final_norm.data(), dh.data(), dx.data(), T, H, float(c.rms_eps),
                           false);
    if (dfinal) train::RmsNormWeightBackward(xl, dh.data(), dfinal, T, H, float(c.rms_eps));
    for (int64_t l = L - 1; l >= 0; --l) {
      const float* in = l == 0 ? x0.data() : tapes[size_t(l - 1)].x.data();
      train::BackwardBlock(c, layers[size_t(l)], lin[size_t(l)], tapes[size_t(l)], in, dx.data(),
                           cos, sin, dw[size_t(l)], l > 0 ? dx_next.data() : nullptr, scratch,
                           dnorm[size_t(l)]);
      std::swap(dx, dx_next);
    }
    return total;
  };
  const int64_t Vh = HeldOutWindows(S), S_train = S - Vh;
  // Under mpirun each window runs on the rank that holds it in dist::Share(S) (every rank has
  // every window's tokens and the whole model).
  auto mine = [S](int64_t s) { return dist::HolderOf(S, s) == dist::Rank(); };
  auto evaluate = [&] {
    double total = 0;
    const int64_t e0 = Vh ? S_train : 0;
    for (int64_t s = e0; s < S; ++s)
      if (mine(s)) total += run(windows[size_t(s)], false, 0);
    return SumOverRanks(total) / double((S - e0) * positions);
  };
  QatE2eReport rep;
  rep.loss = opt.e2e_loss;
  rep.norms = opt.e2e_norms;
  rep.final_norm = opt.e2e_final_norm;
  rep.loss_start = evaluate();
  std::vector<std::vector<float>> start;
  for (const Tuned& t : tuned) start.push_back(t.q ? t.q->scales : std::vector<float>{});
  std::vector<QatLinear> start_ql;
  std::vector<GgmlQatLinear> start_gl;
  for (const Tuned& t : tuned) {
    if (t.ql) start_ql.push_back(*t.ql);
    if (t.gl) start_gl.push_back(*t.gl);
  }
  const int64_t total = (S_train + opt.batch - 1) / opt.batch * opt.epochs;
  std::mt19937_64 rng(opt.seed ^ 0x5851f42d4c957f2dull);
  std::vector<int64_t> order(static_cast<size_t>(S_train));
  int64_t step = 0;
  for (int epoch = 0; epoch < opt.epochs; ++epoch) {
    Shuffle(order, rng);
    for (int64_t b0 = 0; b0 < S_train; b0 += opt.batch) {
      const int64_t nb = std::min(opt.batch, S_train - b0);
      for (Tuned& t : tuned) std::fill(t.dw.begin(), t.dw.end(), 0.0f);
      for (TunedNorm& n : norms) n.ZeroGrad();
      const double scale = 1.0 / double(nb * positions);
      double loss = 0;
      for (int64_t j = 0; j < nb; ++j)
        if (mine(order[size_t(b0 + j)]))
          loss += run(windows[size_t(order[size_t(b0 + j)])], true, scale);
      const std::vector<int> holders =
          BatchHolders(std::span<const int64_t>(order).subspan(size_t(b0), size_t(nb)), S);
      for (Tuned& t : tuned) dist::SumOver(t.dw, holders);
      for (TunedNorm& n : norms) dist::SumOver(n.g, holders);
      loss = SumOverRanks(loss) * scale;
      if (!std::isfinite(loss)) return Err("qat e2e: the loss is not finite (lower --lr-q)");
      ++step;
      const double lr = CosineLr(opt.lr_q, step - 1, total);
      const double lr_w = CosineLr(opt.lr, step - 1, total);
      for (Tuned& t : tuned) {
        const RowShare& sh = t.share;
        if (t.ql) {  // as a block's training step (TrainBlock)
          t.stepper->Step(*t.ql, t.dw.data(), lr_w, lr, opt.weight_decay, step, sh.r0, sh.r1);
        } else if (t.gl) {
          t.gstepper->Step(*t.gl, t.dw.data(), lr_w, lr, opt.weight_decay, step, sh.r0, sh.r1);
        } else {
          const auto [p0, p1] = t.q->ParamsOfRows(sh.r0, sh.r1);
          ScaleGradients(*t.q, t.level, t.dw.data(), sh.r0, sh.r1, t.ds.data());
          t.adam.StepLog(t.q->scales, t.ds.data(), lr, step, p0, p1);
        }
        t.Install(sh.r0, sh.r1);
        sh.Gather(t.lin->weight);
      }
      for (TunedNorm& n : norms) n.Step(lr, step);
      rep.step_loss.push_back(float(loss));
      if (progress) progress(step, total, loss);
    }
  }
  rep.steps = step;
  for (Tuned& t : tuned) {  // every rank's rows of the trained parameters
    if (t.ql) {
      t.share.Gather(t.ql->w);
      t.share.Gather(t.ql->s);
      t.share.Gather(t.ql->z);
    } else if (t.gl) {
      t.share.Gather(t.gl->w);
      t.share.Gather(t.gl->s);
      t.share.Gather(t.gl->z);
    } else {
      t.share.Gather(t.q->scales);
    }
  }
  rep.loss_end = evaluate();
  if (!(rep.loss_end <= rep.loss_start)) {
    for (size_t i = 0, j = 0, k = 0; i < tuned.size(); ++i) {
      if (tuned[i].q) tuned[i].q->scales = start[i];
      if (tuned[i].ql) tuned[i].ql = std::move(start_ql[j++]);
      if (tuned[i].gl) tuned[i].gl = std::move(start_gl[k++]);
      tuned[i].Install();
    }
    for (TunedNorm& n : norms) n.Revert();
    rep.reverted = true;
    rep.loss_end = rep.loss_start;
  }
  for (Tuned& t : tuned) {  // the codes of the trained state (Dequantize gives what ran)
    if (t.ql) *t.q = t.ql->Freeze();
    if (t.gl) t.g->bytes = t.gl->Freeze();
  }
  rep.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return rep;
}

}  // namespace qf::methods
