// UTF-8 validation and repair shared by the tokenizer and the streaming detokenizer.
// Invalid input is repaired exactly as Python's bytes.decode("utf-8", "replace") and
// Rust's String::from_utf8_lossy do (Unicode's "maximal subpart" practice: one U+FFFD
// per maximal prefix of a well-formed sequence, or per stray byte), so that our ids
// for invalid bytes equal what `tokenizers` gives for the Python-decoded string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace cetus::detail {

inline constexpr std::string_view k_replacement_char = "\xEF\xBF\xBD"; // U+FFFD

// Length in bytes of the well-formed sequence starting at s[i], 0 if none starts
// there; *n_valid receives how many bytes of a would-be sequence were acceptable
// (the maximal subpart), at least 1. Follows Table 3-7 of the Unicode standard.
inline size_t utf8_sequence_at(std::string_view s, size_t i, size_t* n_valid) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    *n_valid = 1;
    if (b0 < 0x80) return 1;
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF; // allowed range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 3;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F; // no surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 4;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F; // nothing above U+10FFFF
    } else {
        return 0; // 0x80..0xC1, 0xF5..0xFF never start a sequence
    }
    for (size_t k = 1; k < need; ++k) {
        if (i + k >= s.size()) return 0;
        const auto b = static_cast<unsigned char>(s[i + k]);
        const unsigned char min = k == 1 ? lo : 0x80;
        const unsigned char max = k == 1 ? hi : 0xBF;
        if (b < min || b > max) return 0;
        *n_valid = k + 1;
    }
    return need;
}

inline bool utf8_is_valid(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        // ASCII fast path, eight bytes at a time.
        while (i + 8 <= s.size()) {
            uint64_t w = 0;
            for (size_t k = 0; k < 8; ++k)
                w |= static_cast<uint64_t>(static_cast<unsigned char>(s[i + k])) << (8 * k);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= s.size()) break;
        size_t n_valid = 0;
        const size_t n = utf8_sequence_at(s, i, &n_valid);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

// Appends s to out with every invalid sequence replaced by U+FFFD.
inline void utf8_append_repaired(std::string_view s, std::string& out) {
    size_t i = 0;
    while (i < s.size()) {
        size_t n_valid = 0;
        const size_t n = utf8_sequence_at(s, i, &n_valid);
        if (n == 0) {
            out.append(k_replacement_char);
            i += n_valid;
        } else {
            out.append(s.substr(i, n));
            i += n;
        }
    }
}

inline std::string utf8_repaired(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 8);
    utf8_append_repaired(s, out);
    return out;
}

// Length of the prefix of s that can be emitted now: everything except a trailing
// sequence that is still well-formed so far but incomplete (at most 3 bytes). Bytes that
// can never become valid are not held back; the caller repairs them.
inline size_t utf8_emittable_prefix(std::string_view s) {
    const size_t n = s.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
        const size_t start = n - back;
        const auto b = static_cast<unsigned char>(s[start]);
        if ((b & 0xC0) == 0x80) continue; // continuation byte: keep looking for the lead
        size_t n_valid = 0;
        const size_t len = utf8_sequence_at(s, start, &n_valid);
        // An incomplete but so-far valid tail: all its bytes were acceptable.
        if (len == 0 && b >= 0xC2 && b <= 0xF4 && n_valid == back) return start;
        return n;
    }
    return n;
}

} // namespace cetus::detail
