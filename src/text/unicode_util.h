// UTF-8 and Unicode helpers for the tokenizers: code point iteration that tolerates invalid
// bytes, NFC normalization, and GPT-2's byte <-> printable-character map. Never throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qf::text {

// Length of the UTF-8 sequence at s[i] (s[i] must exist) and its code point in *cp; an invalid
// or truncated sequence, an overlong form or a surrogate counts as one byte with *cp = -1.
size_t Utf8Next(std::string_view s, size_t i, int32_t* cp);
void AppendUtf8(int32_t cp, std::string* out);
bool IsValidUtf8(std::string_view s);

// Unicode NFC (canonical decomposition, canonical ordering, canonical composition). Invalid
// UTF-8 bytes are kept as they are and block composition across them.
std::string NfcNormalize(std::string_view s);

// GPT-2 byte-level alphabet: every byte maps to one printable code point (printable Latin-1
// bytes to themselves, the rest to U+0100 onwards), so any byte string becomes a valid word.
int32_t ByteToUnicode(uint8_t b);
// The byte for a byte-level code point, or -1 when `cp` is not in the alphabet.
int ByteFromUnicode(int32_t cp);

}  // namespace qf::text
