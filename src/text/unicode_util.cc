// UTF-8 iteration, NFC normalization and the GPT-2 byte map (see unicode_util.h).
// NFC follows UAX #15 over the tables in unicode_nfc_data.cc, Hangul handled algorithmically.
#include "text/unicode_util.h"

#include <algorithm>
#include <array>
#include <unordered_map>
#include <vector>

#include "text/unicode_nfc_data.h"

namespace qf::text {
namespace {

// Hangul syllable arithmetic (Unicode ch. 3.12).
constexpr int32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr int32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

// Below this code point every string is already NFC: nothing there decomposes into something
// NFC keeps apart, and every composition's second code point is U+0300 or above.
constexpr int32_t kFirstNfcRelevant = 0x300;
constexpr int32_t kFirstDecomposable = 0xC0;

struct NfcTables {
  std::unordered_map<int32_t, const NfcDecomposition*> decomposition;
  std::unordered_map<uint64_t, int32_t> composition;  // (first << 32 | second) -> composite
};

const NfcTables& Tables() {
  static const NfcTables tables = [] {
    NfcTables t;
    t.decomposition.reserve(kNfcDecompositionCount);
    for (size_t i = 0; i < kNfcDecompositionCount; ++i) {
      const NfcDecomposition& d = kNfcDecompositions[i];
      t.decomposition.emplace(int32_t(d.code_point), &d);
      if (d.composes) t.composition.emplace(uint64_t(d.first) << 32 | d.second, d.code_point);
    }
    return t;
  }();
  return tables;
}

int CombiningClass(int32_t cp) {
  if (cp < kFirstNfcRelevant) return 0;
  const CombiningClassRange* end = kCombiningClassRanges + kCombiningClassRangeCount;
  const CombiningClassRange* it =
      std::upper_bound(kCombiningClassRanges, end, uint32_t(cp),
                       [](uint32_t v, const CombiningClassRange& r) { return v < r.lo; });
  if (it == kCombiningClassRanges) return 0;
  --it;
  return uint32_t(cp) <= it->hi ? int(it->ccc) : 0;
}

// Invalid bytes travel through NFC as negative values -1 - byte (class 0, never compose).
void Decompose(int32_t cp, const NfcTables& t, std::vector<int32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const int32_t s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= kFirstDecomposable) {
    auto it = t.decomposition.find(cp);
    if (it != t.decomposition.end()) {
      Decompose(int32_t(it->second->first), t, out);
      if (it->second->second != 0) Decompose(int32_t(it->second->second), t, out);
      return;
    }
  }
  out->push_back(cp);
}

int32_t Compose(int32_t a, int32_t b, const NfcTables& t) {
  if (a < 0 || b < 0) return -1;
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  auto it = t.composition.find(uint64_t(a) << 32 | uint64_t(b));
  return it == t.composition.end() ? -1 : it->second;
}

const std::array<int32_t, 256>& ByteMap() {
  static const std::array<int32_t, 256> map = [] {
    std::array<int32_t, 256> m{};
    int32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      m[b] = printable ? b : next++;
    }
    return m;
  }();
  return map;
}

}  // namespace

size_t Utf8Next(std::string_view s, size_t i, int32_t* cp) {
  const auto c0 = uint8_t(s[i]);
  if (c0 < 0x80) {
    *cp = c0;
    return 1;
  }
  size_t len;
  int32_t v, min;
  if ((c0 & 0xE0) == 0xC0) {
    len = 2, v = c0 & 0x1F, min = 0x80;
  } else if ((c0 & 0xF0) == 0xE0) {
    len = 3, v = c0 & 0x0F, min = 0x800;
  } else if ((c0 & 0xF8) == 0xF0) {
    len = 4, v = c0 & 0x07, min = 0x10000;
  } else {
    *cp = -1;
    return 1;
  }
  if (i + len > s.size()) {
    *cp = -1;
    return 1;
  }
  for (size_t k = 1; k < len; ++k) {
    const auto c = uint8_t(s[i + k]);
    if ((c & 0xC0) != 0x80) {
      *cp = -1;
      return 1;
    }
    v = (v << 6) | (c & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
    *cp = -1;
    return 1;
  }
  *cp = v;
  return len;
}

void AppendUtf8(int32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(char(cp));
  } else if (cp < 0x800) {
    out->push_back(char(0xC0 | (cp >> 6)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(char(0xE0 | (cp >> 12)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(char(0xF0 | (cp >> 18)));
    out->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  }
}

bool IsValidUtf8(std::string_view s) {
  int32_t cp;
  for (size_t i = 0; i < s.size();) {
    i += Utf8Next(s, i, &cp);
    if (cp < 0) return false;
  }
  return true;
}

std::string NfcNormalize(std::string_view s) {
  int32_t cp;
  bool relevant = false;
  for (size_t i = 0; i < s.size() && !relevant;) {
    i += Utf8Next(s, i, &cp);
    relevant = cp >= kFirstNfcRelevant;
  }
  if (!relevant) return std::string(s);

  const NfcTables& t = Tables();
  std::vector<int32_t> d;
  d.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8Next(s, i, &cp);
    if (cp < 0) {
      d.push_back(-1 - int32_t(uint8_t(s[i])));
    } else {
      Decompose(cp, t, &d);
    }
    i += n;
  }
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (d[i] < 0 || CombiningClass(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && d[j] >= 0 && CombiningClass(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j,
                     [](int32_t a, int32_t b) { return CombiningClass(a) < CombiningClass(b); });
    i = j;
  }
  // Canonical composition: a character joins the last starter unless blocked, i.e. unless a
  // character between them has class 0 or a class >= its own.
  std::vector<int32_t> c;
  c.reserve(d.size());
  int starter = -1;  // index in c of the last starter
  int last_ccc = 0;  // class of the last character after the starter, 0 if none
  bool any_between = false;
  for (int32_t x : d) {
    const int ccc = x < 0 ? 0 : CombiningClass(x);
    if (starter >= 0 && (!any_between || (last_ccc != 0 && last_ccc < ccc))) {
      const int32_t composite = Compose(c[starter], x, t);
      if (composite >= 0) {
        c[starter] = composite;
        continue;
      }
    }
    if (ccc == 0) {
      starter = int(c.size());
      any_between = false;
      last_ccc = 0;
    } else {
      any_between = true;
      last_ccc = ccc;
    }
    c.push_back(x);
  }
  std::string out;
  out.reserve(s.size());
  for (int32_t x : c) {
    if (x < 0) {
      out.push_back(char(-1 - x));
    } else {
      AppendUtf8(x, &out);
    }
  }
  return out;
}

int32_t ByteToUnicode(uint8_t b) { return ByteMap()[b]; }

int ByteFromUnicode(int32_t cp) {
  static const std::array<int16_t, 512> inverse = [] {
    std::array<int16_t, 512> inv;
    inv.fill(-1);
    for (int b = 0; b < 256; ++b) inv[ByteMap()[b]] = int16_t(b);
    return inv;
  }();
  return cp >= 0 && cp < 512 ? inverse[cp] : -1;
}

}  // namespace qf::text
