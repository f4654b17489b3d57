// AddedVocabulary::find_matches, re-done over a byte trie: at each position where an
// added token may start, take the longest one; continue after it. single_word rejects
// a match touching a word character (Rust regex's Unicode \w); lstrip/rstrip widen it
// over neighbouring whitespace (Unicode White_Space), never back past the last match.
#include "added_tokens.h"

#include "pretokenizer.h"

#include <algorithm>
#include <utility>

namespace cetus::detail {

namespace {

size_t char_len(unsigned char lead) {
    if (lead < 0x80) return 1;
    if (lead < 0xE0) return 2;
    if (lead < 0xF0) return 3;
    return 4;
}

// Start of the last UTF-8 character of s (s non-empty, valid UTF-8).
size_t last_char_start(std::string_view s) {
    size_t i = s.size() - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    return i;
}

bool char_matches(const Regex& cls, std::string_view ch) {
    std::vector<std::pair<size_t, size_t>> m;
    cls.find_all(ch, m);
    return !m.empty() && m.front().first == 0 && m.front().second == ch.size();
}

} // namespace

AddedTokenMatcher::AddedTokenMatcher() : m_terminal(1, -1) {}
AddedTokenMatcher::~AddedTokenMatcher() = default;
AddedTokenMatcher::AddedTokenMatcher(AddedTokenMatcher&&) noexcept = default;
AddedTokenMatcher& AddedTokenMatcher::operator=(AddedTokenMatcher&&) noexcept = default;

void AddedTokenMatcher::add(const AddedToken& token) {
    if (token.content.empty()) return;
    const auto index = static_cast<int32_t>(m_tokens.size());
    m_tokens.push_back(token);
    int32_t node = 0;
    for (const char c : token.content) {
        const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(c);
        auto it = m_edges.find(key);
        if (it == m_edges.end()) {
            const auto child = static_cast<int32_t>(m_terminal.size());
            m_terminal.push_back(-1);
            it = m_edges.emplace(key, child).first;
        }
        node = it->second;
    }
    // The same content twice: the later entry wins, as a rebuilt trie in `tokenizers` does.
    m_terminal[node] = index;
    m_first_byte[static_cast<unsigned char>(token.content[0])] = true;
    if ((token.single_word || token.lstrip || token.rstrip) && !m_needs_classes) {
        m_needs_classes = true;
        m_word_char = std::make_unique<Regex>(
            R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}])", false, "word-character class");
        m_space_char = std::make_unique<Regex>(R"(\p{White_Space})", false, "whitespace class");
    }
}

AddedTokenMatcher::Match AddedTokenMatcher::longest_at(std::string_view s, size_t pos) const {
    Match best{pos, pos, -1};
    int32_t node = 0;
    for (size_t i = pos; i < s.size(); ++i) {
        const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[i]);
        const auto it = m_edges.find(key);
        if (it == m_edges.end()) break;
        node = it->second;
        if (m_terminal[node] >= 0) best = Match{pos, i + 1, m_terminal[node]};
    }
    return best;
}

void AddedTokenMatcher::split(std::string_view text, const Segment& seg,
                              std::vector<Segment>& out) const {
    const std::string_view s = text.substr(seg.begin, seg.end - seg.begin);
    size_t start_offset = 0; // end of what has been emitted so far
    size_t pos = 0;
    while (pos < s.size()) {
        if (!m_first_byte[static_cast<unsigned char>(s[pos])]) {
            ++pos;
            continue;
        }
        const Match m = longest_at(s, pos);
        if (m.token < 0) {
            ++pos;
            continue;
        }
        pos = m.end; // the scan resumes after the raw match, whatever the flags do
        const AddedToken& tok = m_tokens[static_cast<size_t>(m.token)];
        size_t start = m.begin;
        size_t stop = m.end;
        if (tok.single_word) {
            const size_t before = start > 0 ? last_char_start(s.substr(0, start)) : 0;
            const bool word_before =
                start > 0 && char_matches(*m_word_char, s.substr(before, start - before));
            const bool word_after =
                stop < s.size() &&
                char_matches(*m_word_char,
                             s.substr(stop, char_len(static_cast<unsigned char>(s[stop]))));
            if (word_before || word_after) continue;
        }
        if (tok.lstrip) {
            size_t new_start = start;
            while (new_start > 0) {
                const size_t c = last_char_start(s.substr(0, new_start));
                if (!char_matches(*m_space_char, s.substr(c, new_start - c))) break;
                new_start = c;
            }
            start = std::max(new_start, start_offset);
        }
        if (tok.rstrip) {
            while (stop < s.size()) {
                const size_t len = char_len(static_cast<unsigned char>(s[stop]));
                if (!char_matches(*m_space_char, s.substr(stop, len))) break;
                stop += len;
            }
        }
        start = std::max(start, start_offset); // never re-emit text another token took
        if (start_offset < start) out.push_back({seg.begin + start_offset, seg.begin + start, -1});
        out.push_back({seg.begin + start, seg.begin + stop, tok.id});
        start_offset = stop;
        pos = std::max(pos, stop);
    }
    if (start_offset < s.size()) out.push_back({seg.begin + start_offset, seg.end, -1});
}

} // namespace cetus::detail
