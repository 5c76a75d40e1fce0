// Data-parallel runs under mpirun (Open MPI; optional at build time, QF_HAVE_MPI): which rank
// this process is, the share of the calibration windows it holds, and the few collective steps
// calibration needs. Every step combines the ranks' parts in one fixed order (rank 0 folds rank
// 1's part into its own, then rank 2's, ...), so a run's output depends on the number of ranks
// and threads, never on timing or on an MPI library's reduction algorithm.
// A process not started by mpirun (or a build without MPI) is the only rank: Size() == 1 and
// every step returns at once, with no MPI call at all.
// Failure: a rank that returns an error or dies ends the whole job (Abort / mpirun's own
// watch); rank 0 alone writes outputs, through a temporary name, so no partial output is left
// under the final name.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace qf::dist {

// Whether this binary was built with MPI.
bool Built();
// MPI_Init when the binary has MPI and the process was started by mpirun (Open MPI / PMIx
// environment); else nothing. Call once, first thing in main.
void Init(int* argc, char*** argv);
// MPI_Finalize when Init started MPI.
void Finalize();
int Rank();
int Size();
inline bool IsRoot() { return Rank() == 0; }

// This rank's share [begin, end) of n items: contiguous, in rank order, sizes differing by at
// most one (rank r holds [n·r/N, n·(r+1)/N)).
std::pair<int64_t, int64_t> Share(int64_t n);
// Rank r's share of n items (Share() of that rank).
std::pair<int64_t, int64_t> ShareOf(int r, int64_t n);

// The rank whose Share(n) holds item i (0 <= i < n).
int HolderOf(int64_t n, int64_t i);

// Rows dealt in units of `unit` rows (the last unit may be short): this rank's [begin, end), as
// Share() deals the units. Empty on some ranks when there are fewer units than ranks.
std::pair<int64_t, int64_t> ShareRows(int64_t n, int64_t unit);
// Whether there is more than one rank and every rank gets at least one unit of n rows: the
// condition for splitting a row-wise solve over the ranks (else each rank solves all rows).
bool SplitsRows(int64_t n, int64_t unit);
// data holds n rows of equal size; each rank has filled its ShareRows(n, unit) rows. Afterwards
// every rank holds every row (each rank's rows broadcast from it, in rank order).
void AllGatherRows(std::span<std::byte> data, int64_t n, int64_t unit);
template <class T>
void AllGatherRows(std::vector<T>& v, int64_t n, int64_t unit) {
  AllGatherRows(std::as_writable_bytes(std::span<T>(v)), n, unit);
}

// Rank 0 folds every other rank's `part` into its own in rank order (fold(acc, part) for ranks
// 1, 2, ..., N-1), then every rank receives the result in `part`. All ranks pass the same size.
using Fold = std::function<void(std::span<double> acc, std::span<const double> part)>;
void FoldInRankOrder(std::vector<double>& part, const Fold& fold);
// Sums of each element over the ranks (FoldInRankOrder with +).
void SumInRankOrder(std::vector<double>& v);
// The sum of `part` over the ranks in `from` (ascending, the same list on every rank; empty:
// nothing happens): each listed rank's part is broadcast in turn and added in that order, the
// first one copied, so that one listed rank's part arrives bit for bit. Afterwards every rank
// holds the sum in `part` (the parts of ranks not listed are ignored).
void SumOver(std::span<float> part, std::span<const int> from);

// Point to point, for data only two ranks need (sizes equal on both sides).
void Send(std::span<const std::byte> data, int to);
void Recv(std::span<std::byte> data, int from);

// Rank `root`'s bytes to every rank (sizes equal on all ranks).
void Broadcast(std::span<std::byte> data, int root);
template <class T>
void Broadcast(std::vector<T>& v, int root) {
  Broadcast(std::as_writable_bytes(std::span<T>(v)), root);
}

// Ends every rank of the job with exit code `code` after printing `msg` (one line, from this
// rank) on stderr; a single process just exits.
[[noreturn]] void Abort(const std::string& msg, int code);

}  // namespace qf::dist
