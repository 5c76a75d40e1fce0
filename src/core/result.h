// Errors as values: Result<T> holds a T or an Error naming what went wrong.
// Contract: user-input failures return Error (one line, names file/tensor, expected vs actual);
// broken invariants use QF_CHECK, which is always on and aborts with the location.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace qf {

class Error {
 public:
  explicit Error(std::string message) : message_(std::move(message)) {}
  const std::string& message() const { return message_; }
  // Prefixes context, e.g. Error("bad dtype").Context("model.safetensors").
  Error Context(const std::string& what) const { return Error(what + ": " + message_); }

 private:
  std::string message_;
};

template <class... Args>
Error Err(fmt::format_string<Args...> f, Args&&... args) {
  return Error(fmt::format(f, std::forward<Args>(args)...));
}

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Result without a value.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT
  static Status Ok() { return Status(); }
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{""};
  bool ok_ = true;
};

[[noreturn]] inline void CheckFailed(const char* cond, const char* file, int line,
                                     const std::string& msg) {
  std::fprintf(stderr, "qforge: internal check failed: %s at %s:%d %s\n", cond, file, line,
               msg.c_str());
  std::abort();
}

}  // namespace qf

#define QF_CONCAT_INNER(a, b) a##b
#define QF_CONCAT(a, b) QF_CONCAT_INNER(a, b)

// Returns the error of a Status/Result expression from the enclosing function.
#define QF_TRY(expr)                                         \
  do {                                                       \
    auto&& qf_try_status_ = (expr);                          \
    if (!qf_try_status_.ok()) return qf_try_status_.error(); \
  } while (0)

// QF_ASSIGN(auto x, ExprReturningResult()); declares/assigns x or returns the error.
#define QF_ASSIGN(lhs, expr) QF_ASSIGN_IMPL(QF_CONCAT(qf_result_, __COUNTER__), lhs, expr)
#define QF_ASSIGN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                   \
  if (!tmp.ok()) return tmp.error();   \
  lhs = std::move(tmp).value()

// Always-on invariant check (not for user input).
#define QF_CHECK(cond, ...)                                                                 \
  do {                                                                                      \
    if (!(cond)) ::qf::CheckFailed(#cond, __FILE__, __LINE__, fmt::format("" __VA_ARGS__)); \
  } while (0)
