// Output files appear whole or not at all: data goes to "<path>.tmp-<pid>" and is renamed over
// <path> only after every byte was written and flushed. Contract: on any error the temporary
// is removed and <path> is left as it was.
#pragma once

#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <utility>

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

// A scratch folder that lives as long as this object: Create makes it afresh (a leftover of the
// same name is removed first) and the destructor removes it with its content, unless Release()
// was called (the folder was moved into place, e.g. by ReplaceFolder). Move-only; a
// default-constructed one owns nothing.
class ScratchFolder {
 public:
  static Result<ScratchFolder> Create(const std::filesystem::path& dir);
  ScratchFolder() = default;
  ScratchFolder(ScratchFolder&& o) noexcept : dir_(std::exchange(o.dir_, {})) {}
  ScratchFolder& operator=(ScratchFolder&& o) noexcept;
  ScratchFolder(const ScratchFolder&) = delete;
  ~ScratchFolder() { Remove(); }

  const std::filesystem::path& path() const { return dir_; }
  void Release() { dir_.clear(); }

 private:
  void Remove();
  std::filesystem::path dir_;
};

// Puts the finished folder `tmp` in place of `out` (a sibling path). When `out` exists the two
// are swapped in one step (renameat2 RENAME_EXCHANGE) and the old content is then removed, so
// `out` always holds either its previous complete content or the new one, even if the process
// is killed; where the filesystem cannot swap, `out` is moved aside first (it then briefly does
// not exist). Contract: on error `out` is left as it was and `tmp` is kept for the caller.
Status ReplaceFolder(const std::filesystem::path& tmp, const std::filesystem::path& out);

}  // namespace qf
