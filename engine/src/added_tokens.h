// Matching of tokenizer.json's added tokens in raw text, before pre-tokenization, as
// `tokenizers`' AddedVocabulary does: leftmost-longest, non-overlapping, honouring
// single_word, lstrip and rstrip. Which tokens go into which matcher (normalized or not)
// and the two-phase order are decided by the tokenizer (tokenizer.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cetus::detail {

class Regex;

struct AddedToken {
    std::string content;
    int32_t id = -1;
    bool single_word = false;
    bool lstrip = false;
    bool rstrip = false;
    bool normalized = false;
    bool special = false;
};

// A run of input: an added token's id, or text (id < 0) still to be pre-tokenized.
struct Segment {
    size_t begin;
    size_t end;
    int32_t id;
};

class AddedTokenMatcher {
  public:
    AddedTokenMatcher();
    ~AddedTokenMatcher();
    AddedTokenMatcher(AddedTokenMatcher&&) noexcept;
    AddedTokenMatcher& operator=(AddedTokenMatcher&&) noexcept;

    void add(const AddedToken& token); // empty contents are ignored, as `tokenizers` does
    bool empty() const { return m_tokens.empty(); }

    // Splits text[seg.begin, seg.end) into tokens and text runs, appended to out in order.
    void split(std::string_view text, const Segment& seg, std::vector<Segment>& out) const;

  private:
    struct Match {
        size_t begin;
        size_t end;
        int32_t token; // index into m_tokens
    };
    Match longest_at(std::string_view s, size_t pos) const;

    std::vector<AddedToken> m_tokens;
    // Byte trie: edge key (node << 8 | byte) -> child node; m_terminal[node] = token index.
    std::unordered_map<uint64_t, int32_t> m_edges;
    std::vector<int32_t> m_terminal;
    bool m_first_byte[256] = {};
    bool m_needs_classes = false;
    std::unique_ptr<Regex> m_word_char;  // Rust regex's Unicode \w, for single_word
    std::unique_ptr<Regex> m_space_char; // Rust regex's Unicode \s, for lstrip/rstrip
};

} // namespace cetus::detail
