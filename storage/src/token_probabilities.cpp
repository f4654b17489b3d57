// Encoding of token probabilities ("CTP1", described in token_probabilities.h).
// Decoding treats the blob as untrusted: every size is checked before it is used.
#include "cetus/storage/token_probabilities.h"

#include "cetus/storage/error.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace cetus::storage {
// A named namespace: the unity build puts this file beside routing_trace.cpp.
namespace ctp {

constexpr size_t k_header_bytes = 24;
constexpr uint32_t k_max_tokens = 1u << 24;
constexpr int k_max_top_n = 20;
constexpr size_t k_max_text = 255;
// 16 MiB: 131,072 tokens with 5 alternatives of 8-byte texts take 8.5 MiB (the app keeps
// 5), with 20 alternatives 46,000 tokens fit. A blob that inflates past it is refused
// before anything is allocated for its tokens; one within it decodes to at most 3.4 M
// alternatives (each takes 5 bytes or more).
constexpr uint32_t k_max_raw = 16u << 20;
constexpr uint8_t k_stored = 0, k_deflated = 1;

[[noreturn]] void invalid(const std::string& what) {
    throw StorageError(StorageErrorCode::InvalidArgument, "token probabilities: " + what);
}
[[noreturn]] void corrupt(const std::string& what) {
    throw StorageError(StorageErrorCode::Corrupt, "token probabilities: damaged: " + what);
}

void put32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint32_t get32(const uint8_t* p) {
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
void put_float(std::vector<uint8_t>& out, float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    out.resize(out.size() + 4);
    put32(&out[out.size() - 4], bits);
}
float get_float(const uint8_t* p) {
    const uint32_t bits = get32(p);
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
}
bool valid_logprob(float v) { return !std::isnan(v) && v <= 0.0f; }

// Up to k_max_text bytes, cut before a UTF-8 continuation byte so no character is
// split (at most three bytes back: a character has at most four).
size_t kept_length(const std::string& s) {
    if (s.size() <= k_max_text) return s.size();
    size_t n = k_max_text;
    while (n > k_max_text - 3 && (uint8_t(s[n]) & 0xC0) == 0x80) --n;
    return n;
}

uint32_t crc_of(const uint8_t* header, const std::vector<uint8_t>& raw) {
    uLong crc = ::crc32(0L, Z_NULL, 0);
    crc = ::crc32(crc, header, 20);
    // (zlib's crc32 answers 0 for a null buffer: an empty payload must not reset it.)
    if (!raw.empty()) crc = ::crc32(crc, raw.data(), static_cast<uInt>(raw.size()));
    return static_cast<uint32_t>(crc);
}

}  // namespace ctp

std::vector<uint8_t> encode_token_probabilities(const TokenProbabilities& tp) {
    if (tp.top_n < 0 || tp.top_n > ctp::k_max_top_n) ctp::invalid("top_n " + std::to_string(tp.top_n) + " is not in 0..20");
    const size_t n = tp.logprobs.size();
    if (n > ctp::k_max_tokens) ctp::invalid("too many tokens");
    if (tp.alternatives.size() != n * size_t(tp.top_n))
        ctp::invalid(std::to_string(tp.alternatives.size()) + " alternatives for " + std::to_string(n) + " tokens of " +
                std::to_string(tp.top_n));
    // Every token takes 4 bytes and each alternative at least 5: refuse what cannot fit
    // before reserving anything.
    if (uint64_t(n) * (4 + 5 * uint64_t(tp.top_n)) > ctp::k_max_raw)
        ctp::invalid("too large (" + std::to_string(n) + " tokens of " + std::to_string(tp.top_n) +
                     " alternatives; at most 16 MiB)");
    std::vector<uint8_t> raw;
    raw.reserve(std::min<size_t>(size_t(n) * (4 + size_t(tp.top_n) * 12), ctp::k_max_raw));
    for (size_t t = 0; t < n; ++t) {
        if (!ctp::valid_logprob(tp.logprobs[t])) ctp::invalid("log-probability of token " + std::to_string(t) + " is NaN or above 0");
        ctp::put_float(raw, tp.logprobs[t]);
        for (size_t k = 0; k < size_t(tp.top_n); ++k) {
            const TokenAlternative& a = tp.alternatives[t * size_t(tp.top_n) + k];
            if (!ctp::valid_logprob(a.logprob)) ctp::invalid("log-probability of an alternative of token " + std::to_string(t) + " is NaN or above 0");
            ctp::put_float(raw, a.logprob);
            const size_t len = ctp::kept_length(a.text);
            raw.push_back(uint8_t(len));
            raw.insert(raw.end(), a.text.begin(), a.text.begin() + std::ptrdiff_t(len));
        }
    }
    if (raw.size() > ctp::k_max_raw) ctp::invalid("too large (" + std::to_string(raw.size()) + " bytes; at most 16 MiB)");

    std::vector<uint8_t> payload(::compressBound(static_cast<uLong>(raw.size())));
    uLongf packed = payload.size();
    const bool deflated = !raw.empty() && ::compress2(payload.data(), &packed, raw.data(), raw.size(), 6) == Z_OK &&
                          packed < raw.size();
    if (deflated) payload.resize(packed);
    else payload = raw;

    std::vector<uint8_t> blob(ctp::k_header_bytes + payload.size());
    std::memcpy(blob.data(), "CTP1", 4);
    blob[4] = uint8_t(tp.top_n);
    blob[5] = deflated ? ctp::k_deflated : ctp::k_stored;
    ctp::put32(&blob[8], static_cast<uint32_t>(n));
    ctp::put32(&blob[12], static_cast<uint32_t>(raw.size()));
    ctp::put32(&blob[16], static_cast<uint32_t>(payload.size()));
    ctp::put32(&blob[20], ctp::crc_of(blob.data(), raw));
    std::copy(payload.begin(), payload.end(), blob.begin() + ctp::k_header_bytes);
    return blob;
}

TokenProbabilities decode_token_probabilities(std::span<const uint8_t> blob) {
    if (blob.size() < ctp::k_header_bytes) ctp::corrupt(std::to_string(blob.size()) + " bytes, shorter than its header");
    const uint8_t* h = blob.data();
    if (std::memcmp(h, "CTP1", 4) != 0) ctp::corrupt("bad magic");
    const int top_n = h[4];
    if (top_n > ctp::k_max_top_n) ctp::corrupt("top_n " + std::to_string(top_n));
    if (h[5] != ctp::k_stored && h[5] != ctp::k_deflated) ctp::corrupt("unknown compression " + std::to_string(h[5]));
    if (h[6] != 0 || h[7] != 0) ctp::corrupt("reserved header bytes are set");
    const uint32_t n = ctp::get32(h + 8), raw_size = ctp::get32(h + 12), stored = ctp::get32(h + 16);
    if (n > ctp::k_max_tokens || raw_size > ctp::k_max_raw) ctp::corrupt("sizes out of range");
    // Every token takes 4 bytes and each alternative at least 5.
    if (uint64_t(raw_size) < uint64_t(n) * (4 + 5 * uint64_t(top_n))) ctp::corrupt("payload too small for its tokens");
    if (stored != blob.size() - ctp::k_header_bytes) ctp::corrupt("payload size disagrees with the blob size");

    std::vector<uint8_t> raw;
    if (h[5] == ctp::k_stored) {
        if (stored != raw_size) ctp::corrupt("payload size disagrees with the header");
        raw.assign(blob.begin() + ctp::k_header_bytes, blob.end());
    } else {
        // Deflate packs at most 1032 bytes into one: a header claiming more would only
        // make us allocate for a payload that cannot inflate to it.
        if (raw_size / 1032 > stored) ctp::corrupt("payload too small to inflate to the size the header gives");
        raw.resize(raw_size);
        uLongf got = raw_size;
        if (::uncompress(raw.data(), &got, h + ctp::k_header_bytes, stored) != Z_OK || got != raw_size)
            ctp::corrupt("payload does not inflate to the size the header gives");
    }
    if (ctp::crc_of(h, raw) != ctp::get32(h + 20)) ctp::corrupt("CRC mismatch");

    TokenProbabilities tp;
    tp.top_n = top_n;
    tp.logprobs.reserve(n);  // at most raw_size / 4
    tp.alternatives.reserve(size_t(n) * size_t(top_n));  // at most raw_size / 5
    size_t at = 0;
    auto need = [&](size_t bytes) {
        if (raw.size() - at < bytes) ctp::corrupt("payload ends inside token " + std::to_string(tp.logprobs.size()));
    };
    for (uint32_t t = 0; t < n; ++t) {
        need(4);
        const float lp = ctp::get_float(&raw[at]);
        at += 4;
        if (!ctp::valid_logprob(lp)) ctp::corrupt("log-probability of token " + std::to_string(t) + " is NaN or above 0");
        tp.logprobs.push_back(lp);
        for (int k = 0; k < top_n; ++k) {
            need(5);
            TokenAlternative a;
            a.logprob = ctp::get_float(&raw[at]);
            const size_t len = raw[at + 4];
            at += 5;
            if (!ctp::valid_logprob(a.logprob)) ctp::corrupt("log-probability of an alternative of token " + std::to_string(t) + " is NaN or above 0");
            need(len);
            a.text.assign(reinterpret_cast<const char*>(&raw[at]), len);
            at += len;
            tp.alternatives.push_back(std::move(a));
        }
    }
    if (at != raw.size()) ctp::corrupt("bytes after the last token");
    return tp;
}

}  // namespace cetus::storage
