// Makes a tokenizer.json regex (written for Oniguruma, which `tokenizers` uses) mean the
// same under PCRE2: \s and \S follow Unicode White_Space as Oniguruma's do (PCRE2 adds
// U+180E), Ruby's \h/\H are hex digits, and \p{L|N|M|P|S} gain the characters Unicode
// 15-16 assigned, which the Unicode 14 tables of PCRE2 10.42 lack. Other escapes pass through.
#pragma once

#include <string>
#include <string_view>

namespace cetus::detail {

std::string onig_to_pcre2(std::string_view pattern);

} // namespace cetus::detail
