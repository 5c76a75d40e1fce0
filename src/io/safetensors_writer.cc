// Writes safetensors files (see safetensors_writer.h for the byte-level contract).
#include "io/safetensors_writer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"

namespace qf::io {
namespace fs = std::filesystem;

namespace {

bool ByName(const TensorToWrite& a, const TensorToWrite& b) { return a.name < b.name; }

// Checks names, shapes and sizes of name-sorted tensors.
Status CheckTensors(const fs::path& path, const std::vector<TensorToWrite>& tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorToWrite& t = tensors[i];
    if (i > 0 && tensors[i - 1].name == t.name)
      return Err("{}: duplicate tensor name '{}'", path.string(), t.name);
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return Err("{}: tensor '{}' has a negative dimension", path.string(), t.name);
      numel *= d;
    }
    if (uint64_t(numel) * Info(t.dtype).bytes != t.data.size())
      return Err("{}: tensor '{}' has {} bytes, expected {} for its shape", path.string(), t.name,
                 t.data.size(), uint64_t(numel) * Info(t.dtype).bytes);
  }
  return Status::Ok();
}

// One file of name-sorted, checked tensors.
Status WriteSorted(const fs::path& path, std::span<const TensorToWrite> tensors,
                   const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();  // std::map-backed: keys sorted
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    header[t.name] = {{"dtype", std::string(Name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  const uint64_t n = text.size();
  std::byte len[8];
  for (int i = 0; i < 8; ++i) len[i] = std::byte((n >> (8 * i)) & 0xff);

  QF_ASSIGN(AtomicFile out, AtomicFile::Create(path));
  QF_TRY(out.Write(std::span<const std::byte>(len, 8)));
  QF_TRY(out.Write(text));
  for (const TensorToWrite& t : tensors) QF_TRY(out.Write(t.data));
  return out.Commit();
}

}  // namespace

Status WriteSafetensors(const fs::path& path, std::vector<TensorToWrite> tensors,
                        const std::map<std::string, std::string>& metadata) {
  std::sort(tensors.begin(), tensors.end(), ByName);
  QF_TRY(CheckTensors(path, tensors));
  return WriteSorted(path, tensors, metadata);
}

Result<std::vector<std::string>> WriteSafetensorsShards(
    const fs::path& dir, std::vector<TensorToWrite> tensors,
    const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes) {
  if (max_shard_bytes == 0) return Err("{}: the shard size must be positive", dir.string());
  std::sort(tensors.begin(), tensors.end(), ByName);
  QF_TRY(CheckTensors(dir / "model.safetensors", tensors));
  // Shard boundaries: [starts[i], starts[i + 1]).
  std::vector<size_t> starts = {0};
  uint64_t in_shard = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t b = tensors[i].data.size();
    if (i > starts.back() && in_shard + b > max_shard_bytes) {
      starts.push_back(i);
      in_shard = 0;
    }
    in_shard += b;
    total += b;
  }
  starts.push_back(tensors.size());
  const size_t shards = starts.size() - 1;
  if (shards == 1) {
    QF_TRY(WriteSorted(dir / "model.safetensors", tensors, metadata));
    return std::vector<std::string>{"model.safetensors"};
  }
  std::vector<std::string> names;
  nlohmann::json weight_map = nlohmann::json::object();
  const std::span<const TensorToWrite> all(tensors);
  for (size_t s = 0; s < shards; ++s) {
    names.push_back(fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards));
    const auto part = all.subspan(starts[s], starts[s + 1] - starts[s]);
    for (const TensorToWrite& t : part) weight_map[t.name] = names.back();
    QF_TRY(WriteSorted(dir / names.back(), part, metadata));
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  QF_ASSIGN(AtomicFile out, AtomicFile::Create(dir / "model.safetensors.index.json"));
  QF_TRY(out.Write(index.dump(2) + "\n"));
  QF_TRY(out.Commit());
  names.push_back("model.safetensors.index.json");
  return names;
}

Result<uint64_t> ParseShardSize(const std::string& text) {
  static constexpr std::pair<std::string_view, uint64_t> kUnits[] = {{"GiB", uint64_t{1} << 30},
                                                                     {"MiB", uint64_t{1} << 20},
                                                                     {"KiB", uint64_t{1} << 10},
                                                                     {"GB", 1'000'000'000},
                                                                     {"MB", 1'000'000},
                                                                     {"KB", 1'000},
                                                                     {"B", 1},
                                                                     {"", 1}};
  for (const auto& [unit, mult] : kUnits) {
    if (!text.ends_with(unit)) continue;
    const std::string_view num(text.data(), text.size() - unit.size());
    uint64_t v = 0;
    const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
    if (num.empty() || ec != std::errc() || end != num.data() + num.size() || v == 0 ||
        v > UINT64_MAX / mult)
      break;
    return v * mult;
  }
  return Err("--max-shard-size {}: expected a positive size such as 5GB, 500MB or 2GiB", text);
}

// ---- TensorSpill
// ---------------------------------------------------------------------------------

struct TensorSpill::State {
  int fd = -1;
  fs::path where;
  uint64_t size = 0;
  void* map = nullptr;
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t offset, bytes;
  };
  std::vector<Entry> entries;
  ~State() {
    if (map) ::munmap(map, size);
    if (fd >= 0) ::close(fd);
  }
};

TensorSpill::TensorSpill(std::unique_ptr<State> s) : s_(std::move(s)) {}
TensorSpill::TensorSpill(TensorSpill&&) noexcept = default;
TensorSpill& TensorSpill::operator=(TensorSpill&&) noexcept = default;
TensorSpill::~TensorSpill() = default;

Result<TensorSpill> TensorSpill::Create(const fs::path& dir) {
  auto s = std::make_unique<State>();
  s->where = dir / ".spill-XXXXXX";
  std::string name = s->where.string();
  s->fd = ::mkstemp(name.data());
  if (s->fd < 0)
    return Err("{}: cannot create a scratch file: {}", dir.string(), std::strerror(errno));
  ::unlink(name.c_str());  // gone with the descriptor, whatever happens to the process
  s->where = dir;
  return TensorSpill(std::move(s));
}

Status TensorSpill::Add(std::string name, DType dtype, std::vector<int64_t> shape,
                        std::span<const std::byte> bytes) {
  State& s = *s_;
  if (s.map) return Err("{}: scratch file already read back", s.where.string());
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(s.fd, bytes.data() + done, bytes.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      return Err("{}: cannot write the scratch file: {}", s.where.string(), std::strerror(errno));
    done += size_t(w);
  }
  s.entries.push_back({std::move(name), dtype, std::move(shape), s.size, bytes.size()});
  s.size += bytes.size();
  return Status::Ok();
}

Result<std::vector<TensorToWrite>> TensorSpill::Tensors() {
  State& s = *s_;
  if (!s.map && s.size > 0) {
    void* m = ::mmap(nullptr, s.size, PROT_READ, MAP_SHARED, s.fd, 0);
    if (m == MAP_FAILED)
      return Err("{}: cannot map the scratch file: {}", s.where.string(), std::strerror(errno));
    s.map = m;
  }
  std::vector<TensorToWrite> out;
  const auto* base = static_cast<const std::byte*>(s.map);
  for (const State::Entry& e : s.entries)
    out.push_back({e.name, e.dtype, e.shape, {base + e.offset, size_t(e.bytes)}});
  return out;
}

uint64_t TensorSpill::bytes() const { return s_->size; }

}  // namespace qf::io
