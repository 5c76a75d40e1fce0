// PCRE2 wrapper for pre-tokenizer splits (see regex_split.h). Compiled with PCRE2_UTF|UCP so
// \p{L}, \p{N} and \s follow Unicode, and MATCH_INVALID_UTF so arbitrary bytes are safe.
#include "text/regex_split.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>

#include "text/unicode_util.h"

namespace qf::text {
namespace {

std::string PcreMessage(int code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(code, buf, sizeof(buf));
  return n < 0 ? "error " + std::to_string(code) : std::string(reinterpret_cast<char*>(buf));
}

}  // namespace

Result<std::unique_ptr<SplitPattern>> SplitPattern::Compile(std::string_view pattern,
                                                            bool literal) {
  // PCRE2_LITERAL refuses PCRE2_UCP (it has no classes to apply it to).
  const uint32_t options =
      PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error, &offset, nullptr);
  if (code == nullptr) {
    return Err("bad split pattern at offset {}: {}", offset, PcreMessage(error));
  }
  // JIT is an optimization only: without it (or where it fails) the interpreter runs.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  std::unique_ptr<SplitPattern> p(new SplitPattern());
  p->code_ = code;
  return p;
}

SplitPattern::~SplitPattern() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> SplitPattern::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  QF_CHECK(md != nullptr, "out of memory");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    int rc = pcre2_match(code, subject, text.size(), pos, 0, md, nullptr);
    // Past a JIT limit, the interpreter (heap-based) gets a second try.
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
      rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_JIT, md, nullptr);
    }
    if (rc < 0) break;  // no further match (or a resource limit): the rest stays one piece
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t begin = ov[0], end = ov[1];
    if (end > begin) {
      out.emplace_back(begin, end);
      pos = end;
    } else {
      // An empty match yields nothing; step over one character to make progress.
      if (begin >= text.size()) break;
      int32_t cp;
      pos = begin + Utf8Next(text, begin, &cp);
    }
  }
  pcre2_match_data_free(md);
  return out;
}

}  // namespace qf::text
