// The test helpers that decide what runs without ../shared: SharedDir() follows $QF_SHARED_DIR,
// QF_NEED_SHARED skips with one line naming the missing file (in a test body and in a fixture's
// SetUp) and lets the test go on when the file is there, LocalText() is long and the same each
// time.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "test_util.h"

namespace qf::testing {
namespace {

namespace fs = std::filesystem;

// Sets QF_SHARED_DIR for the lifetime of the object, then puts back what was there.
class ScopedSharedDir {
 public:
  explicit ScopedSharedDir(const std::string& dir) {
    if (const char* v = std::getenv("QF_SHARED_DIR")) old_ = v;
    ::setenv("QF_SHARED_DIR", dir.c_str(), 1);
  }
  ~ScopedSharedDir() {
    if (old_) {
      ::setenv("QF_SHARED_DIR", old_->c_str(), 1);
    } else {
      ::unsetenv("QF_SHARED_DIR");
    }
  }

 private:
  std::optional<std::string> old_;
};

TEST(TestUtil, SharedDirFollowsTheEnvironmentAndNamesWhatIsMissing) {
  {
    ScopedSharedDir env("/nonexistent/qf-shared");
    EXPECT_EQ(SharedDir(), fs::path("/nonexistent/qf-shared"));
    EXPECT_EQ(MissingShared("data/calib.txt"),
              "needs ../shared/data/calib.txt (calibration text, from the project's shared data "
              "folder; see README); not found at /nonexistent/qf-shared/data/calib.txt");
    // The longest matching prefix describes the path.
    const std::string vocab = MissingShared("data/tokenizers/ggml-vocab/ggml-vocab-gpt-2.gguf");
    EXPECT_NE(vocab.find("llama.cpp's tokenizer test vectors"), std::string::npos) << vocab;
    EXPECT_NE(MissingShared("data/tokenizers/gpt2.tokenizer.json").find("real "),
              std::string::npos);
    EXPECT_EQ(vocab.find('\n'), std::string::npos) << vocab;
  }
  ScopedSharedDir env(RepoDir().string());
  EXPECT_EQ(MissingShared("README.md"), "");
}

// QF_NEED_SHARED in a function body and in a fixture's SetUp; `reached` says whether the code
// after it ran. Called with gtest's reporter intercepted, so their skips land in an array.
void NeedInBody(const std::string& rel, bool* reached) {
  QF_NEED_SHARED(rel);
  *reached = true;
}

class NeedInSetUp : public ::testing::Test {
 public:
  explicit NeedInSetUp(std::string rel) : rel_(std::move(rel)) {}
  void SetUp() override {
    QF_NEED_SHARED(rel_);
    reached_ = true;
  }
  void TestBody() override {}
  bool reached_ = false;

 private:
  std::string rel_;
};

TEST(TestUtil, QfNeedSharedSkipsWithOneLineOrRuns) {
  ScopedSharedDir env(RepoDir().string());
  for (const bool present : {false, true}) {
    // No SCOPED_TRACE here: it would be appended to the intercepted messages.
    const std::string rel = present ? "README.md" : "data/no-such-file.txt";
    bool in_body = false;
    NeedInSetUp fixture(rel);
    ::testing::TestPartResultArray results;
    {
      ::testing::ScopedFakeTestPartResultReporter intercept(
          ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
      NeedInBody(rel, &in_body);
      fixture.SetUp();
    }
    EXPECT_EQ(in_body, present) << rel;
    EXPECT_EQ(fixture.reached_, present) << rel;
    ASSERT_EQ(results.size(), present ? 0 : 2) << rel;
    for (int i = 0; i < results.size(); ++i) {
      const ::testing::TestPartResult& r = results.GetTestPartResult(i);
      EXPECT_TRUE(r.skipped()) << r.message();
      EXPECT_EQ(r.message(), MissingShared(rel));
      EXPECT_EQ(std::string(r.message()).rfind("needs ../shared/data/no-such-file.txt (", 0), 0u)
          << r.message();
    }
  }
}

TEST(TestUtil, LocalTextIsLongAndTheSameEachTime) {
  std::ifstream in(LocalText(), std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  EXPECT_GE(text.size(), 100000u);
  EXPECT_EQ(text.rfind("# qforge", 0), 0u);
  EXPECT_EQ(LocalText(), LocalText());
}

}  // namespace
}  // namespace qf::testing
