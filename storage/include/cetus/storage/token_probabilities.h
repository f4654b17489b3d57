// An answer's token probabilities (each generated token's log-probability under the
// model and the most likely tokens of its step, with their text) and their stored
// encoding. The UI fills them from the engine's per-token log-probabilities; the store
// keeps the encoding beside the answer's routing trace.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace cetus::storage {

struct TokenAlternative {
    std::string text;      // the token's text (UTF-8; at most 255 bytes are kept)
    float logprob = 0.0f;  // natural log, <= 0; -infinity for no mass
};

// Token t's alternatives are alternatives[t * top_n .. (t + 1) * top_n), most likely first.
struct TokenProbabilities {
    int top_n = 0;                               // 0..20
    std::vector<float> logprobs;                 // per token: the chosen token's
    std::vector<TokenAlternative> alternatives;  // [n_tokens x top_n]

    size_t n_tokens() const { return logprobs.size(); }
};

// Encoding "CTP1" (little-endian): a 24-byte header (magic, top_n, compression, token
// count, payload sizes, CRC-32 of header and payload), then per token its log-probability
// (float32) and top_n alternatives (float32 log-probability, one length byte, the text),
// deflated with zlib when that is smaller.
//
// Throws StorageError(InvalidArgument) when the sizes disagree, a count is out of range,
// or a log-probability is NaN or above 0.
std::vector<uint8_t> encode_token_probabilities(const TokenProbabilities& probabilities);

// Throws StorageError(Corrupt) for anything that is not a well-formed encoding.
TokenProbabilities decode_token_probabilities(std::span<const uint8_t> blob);

}  // namespace cetus::storage
