// Pre-tokenization of tokenizer.json's `pre_tokenizer`: Split (regex or literal, all five
// behaviours, invert), Digits and ByteLevel, applied in order, each regex seeing one piece
// at a time as `tokenizers` does. Regexes run on PCRE2 in UTF+UCP mode (JIT when
// available) in place of `tokenizers`' Oniguruma. Parsing the JSON is tokenizer_load.cpp's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cetus::detail {

// A compiled PCRE2 pattern. Immutable after construction, so shareable across threads.
class Regex {
  public:
    // Throws cetus::Error(BadFormat) naming `context` when the pattern does not compile.
    Regex(std::string_view pattern, bool literal, const std::string& context);
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    // Appends the [start, end) byte ranges of successive matches in subject, with
    // Oniguruma's find_iter rule for empty matches. Subject must be valid UTF-8.
    void find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& out) const;

  private:
    struct Code;
    std::unique_ptr<Code> m_code;
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizerStep {
    enum class Kind { Split, ByteLevel };
    Kind kind = Kind::Split;
    std::shared_ptr<const Regex> regex; // Split, and ByteLevel with use_regex
    SplitBehavior behavior = SplitBehavior::Isolated;
    bool invert = false;
    bool add_prefix_space = false; // ByteLevel only
};

// A piece of text, as a byte range into the encoder's text buffer.
struct Piece {
    uint32_t begin;
    uint32_t end;
};

// Scratch buffers reused across calls by one encoder call.
struct PreTokenizerScratch {
    std::vector<Piece> next;
    std::vector<std::pair<size_t, size_t>> matches;
    struct Span {
        size_t begin;
        size_t end;
        bool is_match;
    };
    std::vector<Span> spans;
};

class PreTokenizer {
  public:
    void add_step(PreTokenizerStep step) { m_steps.push_back(std::move(step)); }
    bool has_byte_level() const;

    // Cuts pieces (ranges into text) in place. ByteLevel's add_prefix_space may append to
    // text, so ranges stay offsets rather than pointers.
    void run(std::string& text, std::vector<Piece>& pieces, PreTokenizerScratch& scratch) const;

  private:
    void split(const PreTokenizerStep& step, const std::string& text, std::vector<Piece>& pieces,
               PreTokenizerScratch& scratch) const;
    std::vector<PreTokenizerStep> m_steps;
};

// GPT-2's pattern, used by ByteLevel when use_regex is true.
inline constexpr std::string_view k_gpt2_pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

} // namespace cetus::detail
