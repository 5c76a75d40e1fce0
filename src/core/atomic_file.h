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

}  // namespace qf
