// Output files appear whole or not at all: data goes to "<path>.tmp-<pid>" and is renamed over
// <path> only after every byte was written and flushed. Contract: on any error the temporary
// is removed and <path> is left as it was.
#pragma once

#include <cstdio>
#include <filesystem>
#include <span>
#include <string>

#include "core/result.h"

namespace qf {

class AtomicFile {
 public:
  static Result<AtomicFile> Create(const std::filesystem::path& path);
  AtomicFile(AtomicFile&& o) noexcept;
  AtomicFile& operator=(AtomicFile&&) = delete;
  AtomicFile(const AtomicFile&) = delete;
  ~AtomicFile();  // removes the temporary unless Commit() succeeded

  Status Write(std::span<const std::byte> bytes);
  Status Write(const std::string& s) { return Write(std::as_bytes(std::span(s.data(), s.size()))); }
  Status Commit();  // flush, fsync, rename over the final path

 private:
  AtomicFile(std::filesystem::path path, std::filesystem::path tmp, std::FILE* f)
      : path_(std::move(path)), tmp_(std::move(tmp)), file_(f) {}
  std::filesystem::path path_, tmp_;
  std::FILE* file_ = nullptr;
  bool committed_ = false;
};

// Puts the finished folder `tmp` in place of `out` (a sibling path). When `out` exists the two
// are swapped in one step (renameat2 RENAME_EXCHANGE) and the old content is then removed, so
// `out` always holds either its previous complete content or the new one, even if the process
// is killed; where the filesystem cannot swap, `out` is moved aside first (it then briefly does
// not exist). Contract: on error `out` is left as it was and `tmp` is kept for the caller.
Status ReplaceFolder(const std::filesystem::path& tmp, const std::filesystem::path& out);

}  // namespace qf
