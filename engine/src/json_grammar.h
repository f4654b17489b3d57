// JSON mode (GenerateRequest::response_format = JsonObject, OpenAI's
// response_format {"type": "json_object"}): the answer is kept a prefix of one JSON
// object (RFC 8259) at every token, and may end only once the object is closed.
//
// The answer starts with the object's '{' (no whitespace before it); after its '}' only
// the end may be chosen (whitespace then only within the token that closed it).
//
// JsonGrammar recognises that language byte by byte with a small fixed-size state:
// the nesting stack (at most k_max_depth deep), where in a value it is, UTF-8 inside
// strings (overlong forms and surrogates refused, as RFC 3629 does; a \u escape of a
// surrogate must be half of a pair, as strict parsers require), and a cap on
// runs of whitespace, so a model cannot spend its whole answer on blank space.
// JsonConstraint applies it to a tokenizer's vocabulary: the ids whose bytes keep
// the text such a prefix, and the end-of-sequence id once the object is complete.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace cetus {

class Tokenizer;

class JsonGrammar {
public:
    static constexpr int k_max_depth = 32;        // objects and arrays inside each other
    static constexpr int k_max_whitespace = 64;   // bytes of whitespace in a row

    enum class Mode : uint8_t {
        Start,       // before the object's '{'
        Value,       // a value (after ':' or ',' in an array)
        ArrayFirst,  // after '[': a value or ']'
        KeyFirst,    // after '{': a key or '}'
        Key,         // after ',' in an object: a key
        Colon,       // after a key
        After,       // after a value in a container: ',' or its closer
        String,      // inside a string (a key when `key`)
        Escape,      // after a backslash
        Hex,         // \u and `pending` hex digits to go (their value so far in `code`)
        LowSlash,    // after a high surrogate's \uD800-\uDBFF: its low half's backslash
        LowU,        // ... and its 'u'
        LowHex,      // ... and `pending` hex digits of \uDC00-\uDFFF to go
        Utf8,        // inside a multi-byte character: `pending` bytes to go, the next in [lo, hi]
        Minus,       // a number: after '-'
        Zero,        // after a leading 0
        Int,         // in the integer digits
        Dot,         // after '.'
        Frac,        // in the fraction digits
        Exp,         // after 'e' / 'E'
        ExpSign,     // after the exponent's sign
        ExpInt,      // in the exponent's digits
        Literal,     // in true / false / null: `literal`, `pending` bytes matched
        Done,        // the object is closed: whitespace at most
    };

    struct State {
        Mode mode = Mode::Start;
        bool key = false;       // the string being read is a key
        uint8_t depth = 0;
        uint8_t pending = 0;
        uint8_t lo = 0, hi = 0;  // the next UTF-8 continuation byte's range
        uint8_t literal = 0;     // 0 true, 1 false, 2 null
        uint8_t whitespace = 0;  // whitespace bytes in a row
        uint16_t code = 0;       // a \u escape's value so far
        std::array<char, k_max_depth> stack{};  // '{' or '['
    };

    // Feeds one byte; false when it cannot follow (the state is then spoilt: feed a
    // copy when that matters).
    static bool feed(State& s, uint8_t byte);
    static bool feed(State& s, std::string_view bytes);
    // The object is closed: the text is one whole JSON object.
    static bool complete(const State& s) { return s.mode == Mode::Done; }
};

class JsonConstraint {
public:
    // A vocabulary as the grammar sees it: each id's bytes, the ids by first byte, the
    // plain ones. Made once per tokenizer (about 10 ms for DeepSeek-V3's) and shared.
    struct Vocabulary {
        std::vector<std::string_view> bytes;  // per id; empty for special or unknown ids
        // The ids by their first byte: a byte the state refuses rules out all of them at once.
        std::array<std::vector<int32_t>, 256> by_first;
        // Ids whose bytes are whole UTF-8 characters that a string holds as they are (no
        // quote, backslash or control byte): inside a string, allowed without feeding them.
        std::vector<uint8_t> plain;
        int32_t eos = -1;
    };
    // eos: the id that ends the answer (allowed only once the object is complete).
    // Ids of special tokens and ids the tokenizer does not know are never allowed.
    // The tokenizer must outlive the vocabulary (its bytes are views into it).
    static std::shared_ptr<const Vocabulary> vocabulary(const Tokenizer& tokenizer, int64_t n_valid, int32_t eos);
    explicit JsonConstraint(std::shared_ptr<const Vocabulary> vocabulary) : m_vocab(std::move(vocabulary)) {}
    JsonConstraint(const Tokenizer& tokenizer, int64_t n_valid, int32_t eos)
        : JsonConstraint(vocabulary(tokenizer, n_valid, eos)) {}

    const JsonGrammar::State& state() const { return m_state; }
    // Moves past an id chosen under allowed(); false when the id was not allowed
    // (the state is then unchanged).
    bool advance(int32_t id);
    bool advance_bytes(std::string_view bytes) { return JsonGrammar::feed(m_state, bytes); }
    // The state after `id` from `s`; false when the id cannot follow `s`.
    bool step(JsonGrammar::State& s, int32_t id) const;
    // mask[id] = 1 for the ids that may follow `s` (size n_valid). Returns how many.
    int64_t allowed(const JsonGrammar::State& s, std::vector<uint8_t>& mask) const;

private:
    std::shared_ptr<const Vocabulary> m_vocab;
    JsonGrammar::State m_state;
};

}  // namespace cetus
