// The ranks of an mpirun job (see dist.h).
#include "core/dist.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(QF_HAVE_MPI)
#include <mpi.h>
#endif

namespace qf::dist {
namespace {

int g_rank = 0, g_size = 1;
[[maybe_unused]] bool g_mpi = false;  // Init started MPI

// Started by a process manager (Open MPI's mpirun, or another PMI/PMIx launcher)?
bool UnderMpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

#if defined(QF_HAVE_MPI)
// Messages of at most this many bytes (MPI counts are int).
constexpr size_t kChunkBytes = size_t(1) << 30;

void Check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  Abort(std::string("qforge: error: MPI ") + what + " failed: " + std::string(text, size_t(len)),
        1);
}

void SendBytes(const std::byte* p, size_t n, int to) {
  for (size_t o = 0; o < n; o += kChunkBytes)
    Check(MPI_Send(p + o, int(std::min(kChunkBytes, n - o)), MPI_BYTE, to, 0, MPI_COMM_WORLD),
          "send");
}

void RecvBytes(std::byte* p, size_t n, int from) {
  for (size_t o = 0; o < n; o += kChunkBytes)
    Check(MPI_Recv(p + o, int(std::min(kChunkBytes, n - o)), MPI_BYTE, from, 0, MPI_COMM_WORLD,
                   MPI_STATUS_IGNORE),
          "receive");
}
#endif

// Tests make one rank die at its first collective step (QF_TEST_KILL_RANK=r) to check that the
// job fails as a whole.
void MaybeDieForTest() {
  if (const char* r = std::getenv("QF_TEST_KILL_RANK"); r && std::atoi(r) == g_rank && g_size > 1)
    std::raise(SIGKILL);
}

// Rank r's share of n rows dealt in units of `unit` rows.
std::pair<int64_t, int64_t> RowsOf(int r, int64_t n, int64_t unit) {
  const auto [u0, u1] = ShareOf(r, (n + unit - 1) / unit);
  return {std::min(n, u0 * unit), std::min(n, u1 * unit)};
}

}  // namespace

bool Built() {
#if defined(QF_HAVE_MPI)
  return true;
#else
  return false;
#endif
}

void Init(int* argc, char*** argv) {
#if defined(QF_HAVE_MPI)
  if (!UnderMpirun()) return;
  int provided = 0;
  // FUNNELED: only the main thread talks to MPI (OpenMP threads never do).
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    std::fprintf(stderr, "qforge: error: MPI_Init failed\n");
    std::exit(1);
  }
  g_mpi = true;
  // Errors come back as codes (Check turns them into one line and an abort of the job).
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
#else
  (void)argc, (void)argv;
  if (UnderMpirun() && std::getenv("OMPI_COMM_WORLD_SIZE") &&
      std::atoi(std::getenv("OMPI_COMM_WORLD_SIZE")) > 1) {
    std::fprintf(stderr,
                 "qforge: error: started by mpirun, but this build has no MPI (install "
                 "libopenmpi-dev and rebuild)\n");
    std::exit(1);
  }
#endif
}

void Finalize() {
#if defined(QF_HAVE_MPI)
  if (g_mpi) MPI_Finalize();
  g_mpi = false;
#endif
}

int Rank() { return g_rank; }
int Size() { return g_size; }

std::pair<int64_t, int64_t> ShareOf(int r, int64_t n) {
  return {n * r / g_size, n * (r + 1) / g_size};
}

std::pair<int64_t, int64_t> Share(int64_t n) { return ShareOf(g_rank, n); }

std::pair<int64_t, int64_t> ShareRows(int64_t n, int64_t unit) { return RowsOf(g_rank, n, unit); }

bool SplitsRows(int64_t n, int64_t unit) { return g_size > 1 && (n + unit - 1) / unit >= g_size; }

int HolderOf(int64_t n, int64_t i) {
  for (int r = 0; r + 1 < g_size; ++r)
    if (i < ShareOf(r, n).second) return r;
  return g_size - 1;
}

void AllGatherRows(std::span<std::byte> data, int64_t n, int64_t unit) {
  if (g_size == 1 || n == 0) return;
  const size_t row_bytes = data.size() / size_t(n);
  for (int r = 0; r < g_size; ++r) {
    const auto [r0, r1] = RowsOf(r, n, unit);
    if (r1 > r0) Broadcast(data.subspan(size_t(r0) * row_bytes, size_t(r1 - r0) * row_bytes), r);
  }
}

void FoldInRankOrder(std::vector<double>& part, const Fold& fold) {
  if (g_size == 1) return;
  MaybeDieForTest();
#if defined(QF_HAVE_MPI)
  const size_t bytes = part.size() * sizeof(double);
  if (g_rank == 0) {
    std::vector<double> other(part.size());
    for (int r = 1; r < g_size; ++r) {
      RecvBytes(reinterpret_cast<std::byte*>(other.data()), bytes, r);
      fold(part, other);
    }
  } else {
    SendBytes(reinterpret_cast<const std::byte*>(part.data()), bytes, 0);
  }
  Broadcast(std::as_writable_bytes(std::span<double>(part)), 0);
#else
  (void)fold;
#endif
}

void SumInRankOrder(std::vector<double>& v) {
  FoldInRankOrder(v, [](std::span<double> acc, std::span<const double> part) {
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += part[i];
  });
}

void SumOver(std::span<float> part, std::span<const int> from) {
  if (g_size == 1 || from.empty()) return;
  if (from.size() == 1) {
    Broadcast(std::as_writable_bytes(part), from[0]);
    return;
  }
  std::vector<float> acc(part.size()), got(part.size());
  for (size_t j = 0; j < from.size(); ++j) {
    const std::span<float> buf = from[j] == g_rank ? part : std::span<float>(got);
    Broadcast(std::as_writable_bytes(buf), from[j]);
    if (j == 0)
      std::copy(buf.begin(), buf.end(), acc.begin());
    else
      for (size_t i = 0; i < acc.size(); ++i) acc[i] += buf[i];
  }
  std::copy(acc.begin(), acc.end(), part.begin());
}

void Send(std::span<const std::byte> data, int to) {
#if defined(QF_HAVE_MPI)
  if (g_size > 1) SendBytes(data.data(), data.size(), to);
#else
  (void)data, (void)to;
#endif
}

void Recv(std::span<std::byte> data, int from) {
#if defined(QF_HAVE_MPI)
  if (g_size > 1) RecvBytes(data.data(), data.size(), from);
#else
  (void)data, (void)from;
#endif
}

void Broadcast(std::span<std::byte> data, int root) {
  if (g_size == 1) return;
#if defined(QF_HAVE_MPI)
  for (size_t o = 0; o < data.size(); o += kChunkBytes)
    Check(MPI_Bcast(data.data() + o, int(std::min(kChunkBytes, data.size() - o)), MPI_BYTE, root,
                    MPI_COMM_WORLD),
          "broadcast");
#else
  (void)data, (void)root;
#endif
}

void Abort(const std::string& msg, int code) {
  if (!msg.empty()) std::fprintf(stderr, "%s\n", msg.c_str());
  std::fflush(stderr);
#if defined(QF_HAVE_MPI)
  if (g_mpi && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace qf::dist
