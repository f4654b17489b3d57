// PCRE2-backed regex splitting with `tokenizers`' semantics: Pattern::find_matches
// (matches plus the gaps between them), NormalizedString::split's five behaviours, and
// the onig crate's find_iter rule for empty matches. Patterns are first rewritten to mean
// what they mean to Oniguruma (onig_compat.h), then compiled with UTF, UCP and MULTILINE
// (Oniguruma's Ruby syntax makes ^ and $ line anchors).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "pretokenizer.h"

#include "cetus/error.h"
#include "onig_compat.h"

#include <pcre2.h>

#include <algorithm>
#include <cassert>

namespace cetus::detail {

namespace {

std::string pcre2_message(int code) {
    PCRE2_UCHAR buffer[256];
    if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0)
        return "PCRE2 error " + std::to_string(code);
    return reinterpret_cast<const char*>(buffer);
}

// One match-data block per thread: every pattern is matched for its whole-match
// offsets only, so a single ovector pair serves them all.
struct ThreadMatchData {
    pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
    ~ThreadMatchData() { pcre2_match_data_free(data); }
};

pcre2_match_data* thread_match_data() {
    thread_local ThreadMatchData tl;
    if (tl.data == nullptr) throw Error(ErrorCode::OutOfMemory, "cannot allocate PCRE2 match data");
    return tl.data;
}

size_t utf8_char_len(unsigned char lead) {
    if (lead < 0x80) return 1;
    if (lead < 0xE0) return 2;
    if (lead < 0xF0) return 3;
    return 4;
}

} // namespace

struct Regex::Code {
    pcre2_code* code = nullptr;
    bool jit = false;
    ~Code() { pcre2_code_free(code); }
};

Regex::Regex(std::string_view pattern, bool literal, const std::string& context)
    : m_code(std::make_unique<Code>()) {
    const uint32_t options =
        literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
    const std::string source = literal ? std::string(pattern) : onig_to_pcre2(pattern);
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    m_code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(),
                                 options, &error_code, &error_offset, nullptr);
    if (m_code->code == nullptr) {
        const std::string shown =
            pattern.size() > 80 ? std::string(pattern.substr(0, 80)) + "..." : std::string(pattern);
        throw Error(ErrorCode::BadFormat, context + ": regex \"" + shown +
                                              "\" does not compile: " + pcre2_message(error_code));
    }
    m_code->jit = pcre2_jit_compile(m_code->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() = default;

void Regex::find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& out) const {
    pcre2_match_data* md = thread_match_data();
    const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
    const size_t n = subject.size();
    size_t last_end = 0;
    bool have_last = false;
    size_t last_match_end = 0;
    while (last_end <= n) {
        int rc = m_code->jit
                     ? pcre2_jit_match(m_code->code, s, n, last_end, 0, md, nullptr)
                     : pcre2_match(m_code->code, s, n, last_end, PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
            // The interpreter keeps its backtracking state on the heap instead.
            rc = pcre2_match(m_code->code, s, n, last_end, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                             nullptr);
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            throw Error(ErrorCode::Unsupported,
                        "tokenizer pre-tokenizer regex failed on this input: " + pcre2_message(rc));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const size_t start = ov[0];
        const size_t end = ov[1];
        if (start == end && have_last && last_match_end == end) {
            // No empty match right after the previous match: step one character on.
            if (last_end >= n) break;
            last_end += utf8_char_len(static_cast<unsigned char>(subject[last_end]));
            continue;
        }
        last_end = end;
        last_match_end = end;
        have_last = true;
        out.emplace_back(start, end);
    }
}

bool PreTokenizer::has_byte_level() const {
    for (const auto& step : m_steps) {
        if (step.kind == PreTokenizerStep::Kind::ByteLevel) return true;
    }
    return false;
}

void PreTokenizer::run(std::string& text, std::vector<Piece>& pieces,
                       PreTokenizerScratch& scratch) const {
    for (const auto& step : m_steps) {
        if (step.kind == PreTokenizerStep::Kind::ByteLevel && step.add_prefix_space) {
            for (Piece& p : pieces) {
                if (text[p.begin] == ' ') continue;
                std::string copy(1, ' ');
                copy.append(text, p.begin, p.end - p.begin);
                const auto begin = static_cast<uint32_t>(text.size());
                text += copy;
                p = Piece{begin, static_cast<uint32_t>(text.size())};
            }
        }
        if (step.regex) split(step, text, pieces, scratch);
    }
}

void PreTokenizer::split(const PreTokenizerStep& step, const std::string& text,
                         std::vector<Piece>& pieces, PreTokenizerScratch& scratch) const {
    auto& next = scratch.next;
    auto& spans = scratch.spans;
    next.clear();
    for (const Piece& piece : pieces) {
        const std::string_view sub(text.data() + piece.begin, piece.end - piece.begin);
        scratch.matches.clear();
        step.regex->find_all(sub, scratch.matches);

        // Pattern::find_matches: matches and the gaps between them, in order.
        spans.clear();
        size_t prev = 0;
        for (const auto& [s, e] : scratch.matches) {
            if (prev != s) spans.push_back({prev, s, false});
            spans.push_back({s, e, true});
            prev = e;
        }
        if (prev != sub.size()) spans.push_back({prev, sub.size(), false});
        if (step.invert) {
            for (auto& sp : spans) sp.is_match = !sp.is_match;
        }

        // NormalizedString::split: fold the spans per behaviour; empty pieces vanish.
        const size_t first_out = next.size();
        auto emit = [&](size_t b, size_t e) {
            next.push_back(Piece{piece.begin + static_cast<uint32_t>(b),
                                 piece.begin + static_cast<uint32_t>(e)});
        };
        switch (step.behavior) {
        case SplitBehavior::Removed:
            for (const auto& sp : spans) {
                if (!sp.is_match) emit(sp.begin, sp.end);
            }
            break;
        case SplitBehavior::Isolated:
            for (const auto& sp : spans) emit(sp.begin, sp.end);
            break;
        case SplitBehavior::MergedWithPrevious: {
            bool previous_match = false;
            for (const auto& sp : spans) {
                if (sp.is_match && !previous_match && next.size() > first_out) {
                    next.back().end = piece.begin + static_cast<uint32_t>(sp.end);
                } else {
                    emit(sp.begin, sp.end);
                }
                previous_match = sp.is_match;
            }
            break;
        }
        case SplitBehavior::MergedWithNext: {
            // Folded from the right, as `tokenizers` does, then restored to text order.
            bool previous_match = false;
            const size_t base = next.size();
            for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
                if (it->is_match && !previous_match && next.size() > base) {
                    next.back().begin = piece.begin + static_cast<uint32_t>(it->begin);
                } else {
                    emit(it->begin, it->end);
                }
                previous_match = it->is_match;
            }
            std::reverse(next.begin() + static_cast<std::ptrdiff_t>(base), next.end());
            break;
        }
        case SplitBehavior::Contiguous: {
            bool previous_match = false;
            for (const auto& sp : spans) {
                if (sp.is_match == previous_match && next.size() > first_out) {
                    next.back().end = piece.begin + static_cast<uint32_t>(sp.end);
                } else {
                    emit(sp.begin, sp.end);
                }
                previous_match = sp.is_match;
            }
            break;
        }
        }
        // Drop empty pieces produced by empty matches.
        size_t w = first_out;
        for (size_t r = first_out; r < next.size(); ++r) {
            if (next[r].end > next[r].begin) next[w++] = next[r];
        }
        next.resize(w);
    }
    pieces.swap(next);
}

} // namespace cetus::detail
