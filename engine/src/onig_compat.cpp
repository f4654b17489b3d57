// The pattern rewrite of onig_compat.h. The range table lists, per general category,
// the code points that Oniguruma inside `tokenizers` 0.23 (Unicode 16) puts in \p{X} and
// PCRE2 10.42 (Unicode 14) does not; it was measured by matching every code point with
// both engines. A newer PCRE2 already has them, and a union with itself changes nothing.
#include "onig_compat.h"

#include <cstdint>
#include <cstdio>

namespace cetus::detail {

namespace {

struct ExtraRange {
    char category;
    uint32_t first;
    uint32_t last;
};

constexpr ExtraRange k_extra[] = {
    {'L', 0x1C89, 0x1C8A},   {'L', 0xA7CB, 0xA7CD},   {'L', 0xA7DA, 0xA7DC},
    {'L', 0x105C0, 0x105F3}, {'L', 0x10D4A, 0x10D65}, {'L', 0x10D6F, 0x10D85},
    {'L', 0x10EC2, 0x10EC4}, {'L', 0x1123F, 0x11240}, {'L', 0x11380, 0x11389},
    {'L', 0x1138B, 0x1138B}, {'L', 0x1138E, 0x1138E}, {'L', 0x11390, 0x113B5},
    {'L', 0x113B7, 0x113B7}, {'L', 0x113D1, 0x113D1}, {'L', 0x113D3, 0x113D3},
    {'L', 0x11BC0, 0x11BE0}, {'L', 0x11F02, 0x11F02}, {'L', 0x11F04, 0x11F10},
    {'L', 0x11F12, 0x11F33}, {'L', 0x1342F, 0x1342F}, {'L', 0x13441, 0x13446},
    {'L', 0x13460, 0x143FA}, {'L', 0x16100, 0x1611D}, {'L', 0x16D40, 0x16D6C},
    {'L', 0x18CFF, 0x18CFF}, {'L', 0x1B132, 0x1B132}, {'L', 0x1B155, 0x1B155},
    {'L', 0x1DF25, 0x1DF2A}, {'L', 0x1E030, 0x1E06D}, {'L', 0x1E4D0, 0x1E4EB},
    {'L', 0x1E5D0, 0x1E5ED}, {'L', 0x1E5F0, 0x1E5F0}, {'L', 0x2B739, 0x2B739},
    {'L', 0x2EBF0, 0x2EE5D}, {'L', 0x31350, 0x323AF}, {'N', 0x10D40, 0x10D49},
    {'N', 0x116D0, 0x116E3}, {'N', 0x11BF0, 0x11BF9}, {'N', 0x11F50, 0x11F59},
    {'N', 0x16130, 0x16139}, {'N', 0x16D70, 0x16D79}, {'N', 0x1CCF0, 0x1CCF9},
    {'N', 0x1D2C0, 0x1D2D3}, {'N', 0x1E4F0, 0x1E4F9}, {'N', 0x1E5F1, 0x1E5FA},
    {'M', 0x897, 0x897},     {'M', 0xCF3, 0xCF3},     {'M', 0xECE, 0xECE},
    {'M', 0x10D69, 0x10D6D}, {'M', 0x10EFC, 0x10EFF}, {'M', 0x11241, 0x11241},
    {'M', 0x113B8, 0x113C0}, {'M', 0x113C2, 0x113C2}, {'M', 0x113C5, 0x113C5},
    {'M', 0x113C7, 0x113CA}, {'M', 0x113CC, 0x113D0}, {'M', 0x113D2, 0x113D2},
    {'M', 0x113E1, 0x113E2}, {'M', 0x11F00, 0x11F01}, {'M', 0x11F03, 0x11F03},
    {'M', 0x11F34, 0x11F3A}, {'M', 0x11F3E, 0x11F42}, {'M', 0x11F5A, 0x11F5A},
    {'M', 0x13440, 0x13440}, {'M', 0x13447, 0x13455}, {'M', 0x1611E, 0x1612F},
    {'M', 0x1E08F, 0x1E08F}, {'M', 0x1E4EC, 0x1E4EF}, {'M', 0x1E5EE, 0x1E5EF},
    {'P', 0x1B4E, 0x1B4F},   {'P', 0x1B7F, 0x1B7F},   {'P', 0x10D6E, 0x10D6E},
    {'P', 0x113D4, 0x113D5}, {'P', 0x113D7, 0x113D8}, {'P', 0x11B00, 0x11B09},
    {'P', 0x11BE1, 0x11BE1}, {'P', 0x11F43, 0x11F4F}, {'P', 0x16D6D, 0x16D6F},
    {'P', 0x1E5FF, 0x1E5FF}, {'S', 0x2427, 0x2429},   {'S', 0x2FFC, 0x2FFF},
    {'S', 0x31E4, 0x31E5},   {'S', 0x31EF, 0x31EF},   {'S', 0x10D8E, 0x10D8F},
    {'S', 0x1CC00, 0x1CCEF}, {'S', 0x1CD00, 0x1CEB3}, {'S', 0x1F6DC, 0x1F6DC},
    {'S', 0x1F774, 0x1F776}, {'S', 0x1F77B, 0x1F77F}, {'S', 0x1F7D9, 0x1F7D9},
    {'S', 0x1F8B2, 0x1F8BB}, {'S', 0x1F8C0, 0x1F8C1}, {'S', 0x1FA75, 0x1FA77},
    {'S', 0x1FA87, 0x1FA89}, {'S', 0x1FA8F, 0x1FA8F}, {'S', 0x1FAAD, 0x1FAAF},
    {'S', 0x1FABB, 0x1FABF}, {'S', 0x1FAC6, 0x1FAC6}, {'S', 0x1FACE, 0x1FACF},
    {'S', 0x1FADA, 0x1FADC}, {'S', 0x1FADF, 0x1FADF}, {'S', 0x1FAE8, 0x1FAE9},
    {'S', 0x1FAF7, 0x1FAF8}, {'S', 0x1FBCB, 0x1FBEF},
};

// The extra ranges of one category, as character-class items ("\x{31350}-\x{323AF}...").
std::string extra_items(char category) {
    std::string out;
    char buf[40];
    for (const auto& r : k_extra) {
        if (r.category != category) continue;
        if (r.first == r.last) {
            std::snprintf(buf, sizeof(buf), "\\x{%X}", r.first);
        } else {
            std::snprintf(buf, sizeof(buf), "\\x{%X}-\\x{%X}", r.first, r.last);
        }
        out += buf;
    }
    return out;
}

// Parses "{X}" / "{^X}" after \p or \P at pattern[i]; returns the one-letter category
// (L, N, M, P, S, or their long names) or 0, with the length consumed and negation.
char property_at(std::string_view pattern, size_t i, size_t* length, bool* negated) {
    if (i >= pattern.size() || pattern[i] != '{') return 0;
    const size_t close = pattern.find('}', i);
    if (close == std::string_view::npos) return 0;
    std::string_view name = pattern.substr(i + 1, close - i - 1);
    *negated = !name.empty() && name.front() == '^';
    if (*negated) name.remove_prefix(1);
    *length = close - i + 1;
    if (name == "L" || name == "Letter") return 'L';
    if (name == "N" || name == "Number") return 'N';
    if (name == "M" || name == "Mark") return 'M';
    if (name == "P" || name == "Punctuation") return 'P';
    if (name == "S" || name == "Symbol") return 'S';
    return 0;
}

} // namespace

std::string onig_to_pcre2(std::string_view pattern) {
    std::string out;
    out.reserve(pattern.size() + 64);
    bool in_class = false;
    size_t class_start = 0; // index just after "[" or "[^": a "]" there is literal
    for (size_t i = 0; i < pattern.size(); ++i) {
        const char c = pattern[i];
        if (c == '[' && !in_class) {
            in_class = true;
            out += c;
            if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
            class_start = i + 1;
            continue;
        }
        if (c == '[' && in_class && i + 1 < pattern.size() && pattern[i + 1] == ':') {
            const size_t close = pattern.find(":]", i + 2); // POSIX class such as [:alpha:]
            if (close != std::string_view::npos) {
                out.append(pattern.substr(i, close + 2 - i));
                i = close + 1;
                continue;
            }
        }
        if (c == ']' && in_class && i != class_start) {
            in_class = false;
            out += c;
            continue;
        }
        if (c != '\\' || i + 1 >= pattern.size()) {
            out += c;
            continue;
        }
        const char e = pattern[++i];
        switch (e) {
        case 's':
            out += "\\p{White_Space}";
            break;
        case 'S':
            out += "\\P{White_Space}";
            break;
        case 'h':
            out += in_class ? "0-9a-fA-F" : "[0-9a-fA-F]";
            break;
        case 'H':
            out += in_class ? "\\x{0}-/:-@G-`g-\\x{10FFFF}" : "[^0-9a-fA-F]";
            break;
        case 'p':
        case 'P': {
            size_t length = 0;
            bool negated = false;
            const char cat = property_at(pattern, i + 1, &length, &negated);
            negated = negated != (e == 'P');
            if (cat == 0 || (negated && in_class)) { // no extra ranges needed or possible
                out += '\\';
                out += e;
                break;
            }
            const std::string prop = std::string("\\p{") + cat + "}";
            if (in_class) {
                out += prop + extra_items(cat);
            } else {
                out += (negated ? "[^" : "[") + prop + extra_items(cat) + "]";
            }
            i += length;
            break;
        }
        default:
            out += '\\';
            out += e;
        }
    }
    return out;
}

} // namespace cetus::detail
