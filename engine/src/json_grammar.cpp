// The JSON-object recogniser and its use on a vocabulary (json_grammar.h).
#include "json_grammar.h"

#include "cetus/tokenizer.h"

#include <algorithm>

namespace cetus {

namespace {

using Mode = JsonGrammar::Mode;

bool is_space(uint8_t b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }
bool is_digit(uint8_t b) { return b >= '0' && b <= '9'; }
bool is_hex(uint8_t b) { return is_digit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F'); }
int hex_value(uint8_t b) { return is_digit(b) ? b - '0' : (b | 0x20) - 'a' + 10; }

bool takes_space(Mode m) {
    switch (m) {  // (not Start: the answer opens with its '{')
    case Mode::Value:
    case Mode::ArrayFirst:
    case Mode::KeyFirst:
    case Mode::Key:
    case Mode::Colon:
    case Mode::After:
    case Mode::Done: return true;
    default: return false;
    }
}

// A value has ended: the enclosing container goes on, or the object is complete.
void value_done(JsonGrammar::State& s) { s.mode = s.depth == 0 ? Mode::Done : Mode::After; }

bool open(JsonGrammar::State& s, char bracket) {
    if (s.depth >= JsonGrammar::k_max_depth) return false;
    s.stack[s.depth++] = bracket;
    s.mode = bracket == '{' ? Mode::KeyFirst : Mode::ArrayFirst;
    return true;
}

bool close(JsonGrammar::State& s, char bracket) {
    if (s.depth == 0 || s.stack[s.depth - 1] != bracket) return false;
    --s.depth;
    value_done(s);
    return true;
}

// The first byte of a value (not ']' or whitespace).
bool begin_value(JsonGrammar::State& s, uint8_t b) {
    switch (b) {
    case '{': return open(s, '{');
    case '[': return open(s, '[');
    case '"':
        s.mode = Mode::String;
        s.key = false;
        return true;
    case '-': s.mode = Mode::Minus; return true;
    case '0': s.mode = Mode::Zero; return true;
    case 't':
    case 'f':
    case 'n':
        s.mode = Mode::Literal;
        s.literal = b == 't' ? 0 : b == 'f' ? 1 : 2;
        s.pending = 1;
        return true;
    default:
        if (b >= '1' && b <= '9') {
            s.mode = Mode::Int;
            return true;
        }
        return false;
    }
}

// A UTF-8 lead byte inside a string (RFC 3629's table: no overlong forms, no
// surrogates, nothing above U+10FFFF).
bool begin_utf8(JsonGrammar::State& s, uint8_t b) {
    uint8_t n = 0, lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) n = 1;
    else if (b == 0xE0) n = 2, lo = 0xA0;
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) n = 2;
    else if (b == 0xED) n = 2, hi = 0x9F;
    else if (b == 0xF0) n = 3, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3) n = 3;
    else if (b == 0xF4) n = 3, hi = 0x8F;
    else return false;
    s.mode = Mode::Utf8;
    s.pending = n;
    s.lo = lo;
    s.hi = hi;
    return true;
}

constexpr std::string_view k_literals[] = {"true", "false", "null"};
// Below this many ids a mask takes a few microseconds: not worth waking threads for.
constexpr size_t k_parallel_vocabulary = 32768;

}  // namespace

bool JsonGrammar::feed(State& s, uint8_t b) {
    if (takes_space(s.mode) && is_space(b)) return ++s.whitespace <= k_max_whitespace;
    s.whitespace = 0;
    switch (s.mode) {
    case Mode::Start: return b == '{' && open(s, '{');
    case Mode::Value: return begin_value(s, b);
    case Mode::ArrayFirst: return b == ']' ? close(s, '[') : begin_value(s, b);
    case Mode::KeyFirst:
        if (b == '}') return close(s, '{');
        [[fallthrough]];
    case Mode::Key:
        if (b != '"') return false;
        s.mode = Mode::String;
        s.key = true;
        return true;
    case Mode::Colon:
        if (b != ':') return false;
        s.mode = Mode::Value;
        return true;
    case Mode::After:
        if (b == ',') {
            s.mode = s.stack[s.depth - 1] == '{' ? Mode::Key : Mode::Value;
            return true;
        }
        if (b == '}') return close(s, '{');
        if (b == ']') return close(s, '[');
        return false;
    case Mode::String:
        if (b == '"') {
            if (s.key) s.mode = Mode::Colon;
            else value_done(s);
            return true;
        }
        if (b == '\\') {
            s.mode = Mode::Escape;
            return true;
        }
        if (b < 0x20) return false;  // control characters must be escaped
        if (b < 0x80) return true;
        return begin_utf8(s, b);
    case Mode::Utf8:
        if (b < s.lo || b > s.hi) return false;
        s.lo = 0x80;
        s.hi = 0xBF;
        if (--s.pending == 0) s.mode = Mode::String;
        return true;
    case Mode::Escape:
        if (b == 'u') {
            s.mode = Mode::Hex;
            s.pending = 4;
            s.code = 0;
            return true;
        }
        if (std::string_view("\"\\/bfnrt").find(char(b)) == std::string_view::npos) return false;
        s.mode = Mode::String;
        return true;
    case Mode::Hex:
    case Mode::LowHex: {
        if (!is_hex(b)) return false;
        s.code = uint16_t(s.code * 16 + hex_value(b));
        --s.pending;
        // Refused as soon as no ending of the digits can be right: a first escape that can only
        // be a low surrogate (alone), a second that can no longer be one.
        const uint32_t lo = uint32_t(s.code) << (4 * s.pending), hi = lo | ((1u << (4 * s.pending)) - 1);
        if (s.mode == Mode::LowHex ? (hi < 0xDC00 || lo > 0xDFFF) : (lo >= 0xDC00 && hi <= 0xDFFF)) return false;
        if (s.pending > 0) return true;
        const bool high = s.code >= 0xD800 && s.code <= 0xDBFF, low = s.code >= 0xDC00 && s.code <= 0xDFFF;
        if (s.mode == Mode::LowHex) {
            if (!low) return false;  // a high surrogate's partner must be a low one
            s.mode = Mode::String;
            return true;
        }
        if (low) return false;  // a low surrogate alone
        s.mode = high ? Mode::LowSlash : Mode::String;
        return true;
    }
    case Mode::LowSlash:
        if (b != '\\') return false;
        s.mode = Mode::LowU;
        return true;
    case Mode::LowU:
        if (b != 'u') return false;
        s.mode = Mode::LowHex;
        s.pending = 4;
        s.code = 0;
        return true;
    case Mode::Minus:
        if (b == '0') s.mode = Mode::Zero;
        else if (b >= '1' && b <= '9') s.mode = Mode::Int;
        else return false;
        return true;
    case Mode::Dot:
        if (!is_digit(b)) return false;
        s.mode = Mode::Frac;
        return true;
    case Mode::Exp:
        if (b == '+' || b == '-') s.mode = Mode::ExpSign;
        else if (is_digit(b)) s.mode = Mode::ExpInt;
        else return false;
        return true;
    case Mode::ExpSign:
        if (!is_digit(b)) return false;
        s.mode = Mode::ExpInt;
        return true;
    case Mode::Zero:
    case Mode::Int:
    case Mode::Frac:
    case Mode::ExpInt:
        if (is_digit(b) && s.mode != Mode::Zero) return true;
        if (b == '.' && (s.mode == Mode::Zero || s.mode == Mode::Int)) {
            s.mode = Mode::Dot;
            return true;
        }
        if ((b == 'e' || b == 'E') && s.mode != Mode::ExpInt) {
            s.mode = Mode::Exp;
            return true;
        }
        value_done(s);  // the number has ended: the byte belongs to what follows it
        return feed(s, b);
    case Mode::Literal: {
        const std::string_view word = k_literals[s.literal];
        if (char(b) != word[s.pending]) return false;
        if (++s.pending == word.size()) value_done(s);
        return true;
    }
    case Mode::Done: return false;
    }
    return false;
}

bool JsonGrammar::feed(State& s, std::string_view bytes) {
    for (char c : bytes)
        if (!feed(s, uint8_t(c))) return false;
    return true;
}

std::shared_ptr<const JsonConstraint::Vocabulary> JsonConstraint::vocabulary(const Tokenizer& tokenizer,
                                                                             int64_t n_valid, int32_t eos) {
    auto v = std::make_shared<Vocabulary>();
    v->bytes.resize(size_t(std::max<int64_t>(n_valid, 0)));
    v->plain.assign(v->bytes.size(), 0);
    v->eos = eos;
    const int64_t known = std::min<int64_t>(n_valid, tokenizer.vocab_size());
    for (int64_t id = 0; id < known; ++id) {
        // The end is allowed by its own rule (a tokenizer may not mark it special).
        if (id == eos || tokenizer.is_special(int32_t(id))) continue;
        const std::string_view b = tokenizer.token_bytes(int32_t(id));
        if (b.empty()) continue;
        v->bytes[size_t(id)] = b;
        v->by_first[uint8_t(b[0])].push_back(int32_t(id));
        // Plain: a string takes the bytes as they are and is still a string after them.
        JsonGrammar::State in_string;
        in_string.mode = Mode::String;
        v->plain[size_t(id)] = JsonGrammar::feed(in_string, b) && in_string.mode == Mode::String;
    }
    return v;
}

bool JsonConstraint::step(JsonGrammar::State& s, int32_t id) const {
    const Vocabulary& v = *m_vocab;
    if (id == v.eos) return JsonGrammar::complete(s);
    if (id < 0 || size_t(id) >= v.bytes.size() || v.bytes[size_t(id)].empty()) return false;
    JsonGrammar::State t = s;
    if (!JsonGrammar::feed(t, v.bytes[size_t(id)])) return false;
    s = t;
    return true;
}

bool JsonConstraint::advance(int32_t id) { return step(m_state, id); }

int64_t JsonConstraint::allowed(const JsonGrammar::State& s, std::vector<uint8_t>& mask) const {
    const Vocabulary& v = *m_vocab;
    mask.assign(v.bytes.size(), 0);
    int64_t n = 0;
    if (JsonGrammar::complete(s)) {  // only the end
        if (v.eos >= 0 && size_t(v.eos) < mask.size()) mask[size_t(v.eos)] = 1, n = 1;
        return n;
    }
    const bool in_string = s.mode == Mode::String;
    // The first-byte groups write disjoint ids: threads share them on large vocabularies.
#pragma omp parallel for schedule(dynamic, 8) reduction(+ : n) if (v.bytes.size() >= k_parallel_vocabulary)
    for (int first = 0; first < 256; ++first) {
        const std::vector<int32_t>& ids = v.by_first[size_t(first)];
        JsonGrammar::State after_first = s;
        if (ids.empty() || !JsonGrammar::feed(after_first, uint8_t(first))) continue;
        for (int32_t id : ids) {
            bool ok;
            if (in_string && v.plain[size_t(id)]) {
                ok = true;
            } else {
                JsonGrammar::State t = after_first;
                ok = JsonGrammar::feed(t, v.bytes[size_t(id)].substr(1));
            }
            if (ok) mask[size_t(id)] = 1, ++n;
        }
    }
    return n;
}

}  // namespace cetus
