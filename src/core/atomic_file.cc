// Temporary-then-rename file writing (POSIX).
#include "core/atomic_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace qf {

Result<AtomicFile> AtomicFile::Create(const std::filesystem::path& path) {
  std::filesystem::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return Err("{}: cannot create: {}", path.string(), std::strerror(errno));
  return AtomicFile(path, tmp, f);
}

AtomicFile::AtomicFile(AtomicFile&& o) noexcept
    : path_(std::move(o.path_)),
      tmp_(std::move(o.tmp_)),
      file_(std::exchange(o.file_, nullptr)),
      committed_(o.committed_) {}

AtomicFile::~AtomicFile() {
  if (file_) std::fclose(file_);
  if (!committed_ && !tmp_.empty()) {
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
  }
}

Status AtomicFile::Write(std::span<const std::byte> bytes) {
  if (!file_) return Err("{}: write after close", path_.string());
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size())
    return Err("{}: write failed: {}", path_.string(), std::strerror(errno));
  return Status::Ok();
}

Status AtomicFile::Commit() {
  if (!file_) return Err("{}: already closed", path_.string());
  const bool flushed = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  const int close_rc = std::fclose(file_);
  file_ = nullptr;
  if (!flushed || close_rc != 0)
    return Err("{}: write failed: {}", path_.string(), std::strerror(errno));
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) return Err("{}: cannot rename from {}: {}", path_.string(), tmp_.string(), ec.message());
  committed_ = true;
  return Status::Ok();
}

Result<ScratchFolder> ScratchFolder::Create(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) return Err("{}: cannot create: {}", dir.string(), ec.message());
  ScratchFolder f;
  f.dir_ = dir;
  return f;
}

ScratchFolder& ScratchFolder::operator=(ScratchFolder&& o) noexcept {
  if (this != &o) {
    Remove();
    dir_ = std::exchange(o.dir_, {});
  }
  return *this;
}

void ScratchFolder::Remove() {
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  dir_.clear();
}

Status ReplaceFolder(const std::filesystem::path& tmp, const std::filesystem::path& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(out, ec)) {
    fs::rename(tmp, out, ec);
    if (ec) return Err("{}: cannot rename from {}: {}", out.string(), tmp.string(), ec.message());
    return Status::Ok();
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, out.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp, ec);  // now the previous content
    return Status::Ok();
  }
  if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
    return Err("{}: cannot replace: {}", out.string(), std::strerror(errno));
  fs::path old = out;
  old += ".old-" + std::to_string(::getpid());
  fs::rename(out, old, ec);
  if (ec) return Err("{}: cannot replace: {}", out.string(), ec.message());
  fs::rename(tmp, out, ec);
  if (ec) {
    std::error_code back;
    fs::rename(old, out, back);
    return Err("{}: cannot rename from {}: {}", out.string(), tmp.string(), ec.message());
  }
  fs::remove_all(old, ec);
  return Status::Ok();
}

}  // namespace qf
