// libFuzzer target for the stored token-probabilities encoding
// (decode_token_probabilities), which reads blobs from conversation databases and
// import files. Each input is tried three ways:
//   1. as a blob, as it is (almost always refused by the CRC);
//   2. as a blob with its CRC field made right, so that mutations of the header and
//      payload reach the size, record and decompression checks;
//   3. as probabilities built from the bytes, encoded and decoded again, which must
//      give them back exactly (texts cut to 255 bytes at a character boundary).
// A StorageError is the expected answer to a bad blob; a decoded value must be
// self-consistent and encode to a blob that decodes to the same value. Anything else
// is a finding.
#include "cetus/storage/error.h"
#include "cetus/storage/token_probabilities.h"

#include <zlib.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using cetus::storage::StorageError;
using cetus::storage::TokenProbabilities;

void require(bool ok) {
    if (!ok) __builtin_trap();
}

uint32_t get32(const uint8_t* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

bool same(const TokenProbabilities& a, const TokenProbabilities& b) {
    if (a.top_n != b.top_n || a.logprobs.size() != b.logprobs.size() || a.alternatives.size() != b.alternatives.size())
        return false;
    for (size_t i = 0; i < a.logprobs.size(); ++i)
        if (std::memcmp(&a.logprobs[i], &b.logprobs[i], 4) != 0) return false;
    for (size_t i = 0; i < a.alternatives.size(); ++i)
        if (a.alternatives[i].text != b.alternatives[i].text ||
            std::memcmp(&a.alternatives[i].logprob, &b.alternatives[i].logprob, 4) != 0)
            return false;
    return true;
}

// What decoding promises: sizes that fit, values that encoding accepts, and the same
// value after another encode and decode.
void check_decoded(const TokenProbabilities& t) {
    require(t.top_n >= 0 && t.top_n <= 20);
    require(t.alternatives.size() == t.logprobs.size() * size_t(t.top_n));
    for (float v : t.logprobs) require(!std::isnan(v) && v <= 0.0f);
    for (const auto& a : t.alternatives) require(!std::isnan(a.logprob) && a.logprob <= 0.0f && a.text.size() <= 255);
    require(same(cetus::storage::decode_token_probabilities(cetus::storage::encode_token_probabilities(t)), t));
}

void try_blob(const uint8_t* data, size_t size) {
    try {
        check_decoded(cetus::storage::decode_token_probabilities({data, size}));
    } catch (const StorageError&) {
    }
}

// The blob with bytes 20..23 set to the CRC of the header's first 20 bytes and the
// raw records (the payload, inflated when byte 5 says it is deflated).
void try_blob_with_crc(const uint8_t* data, size_t size) {
    if (size < 24) return;
    std::vector<uint8_t> blob(data, data + size);
    const size_t stored = size - 24;
    std::vector<uint8_t> raw;
    if (blob[5] == 1) {
        const uint32_t claimed = get32(&blob[12]);
        if (claimed > (1u << 22)) {  // capped so the harness stays fast
            try_blob(blob.data(), blob.size());
            return;
        }
        raw.resize(claimed);
        uLongf got = raw.size();
        if (::uncompress(raw.data(), &got, blob.data() + 24, uLong(stored)) != Z_OK) {
            try_blob(blob.data(), blob.size());
            return;
        }
        raw.resize(got);
    } else {
        raw.assign(blob.begin() + 24, blob.end());
    }
    uLong crc = ::crc32(0L, Z_NULL, 0);
    crc = ::crc32(crc, blob.data(), 20);
    crc = ::crc32(crc, raw.data(), uInt(raw.size()));
    for (int i = 0; i < 4; ++i) blob[size_t(20 + i)] = uint8_t(crc >> (8 * i));
    try_blob(blob.data(), blob.size());
}

// Probabilities from the bytes: top_n from the first, then per token one byte of its
// log-probability and per alternative one byte of log-probability and a text whose
// length is the next byte (times three, so some pass 255).
void try_round_trip(const uint8_t* data, size_t size) {
    if (size < 1) return;
    TokenProbabilities t;
    t.top_n = data[0] % 21;
    size_t at = 1;
    auto logprob = [](uint8_t b) {
        return b == 255 ? -std::numeric_limits<float>::infinity() : -std::ldexp(float(b), int(b % 9) - 4);
    };
    while (at < size && t.logprobs.size() < 4096) {
        t.logprobs.push_back(logprob(data[at++]));
        for (int k = 0; k < t.top_n; ++k) {
            const uint8_t b = at < size ? data[at++] : 0;
            size_t len = at < size ? size_t(data[at++]) * 3 : 0;
            len = std::min(len, size - std::min(at, size));
            std::string text(reinterpret_cast<const char*>(data + std::min(at, size)), len);
            at += len;
            t.alternatives.push_back({std::move(text), logprob(b)});
        }
    }
    const TokenProbabilities u =
        cetus::storage::decode_token_probabilities(cetus::storage::encode_token_probabilities(t));  // valid: no throw
    require(u.top_n == t.top_n && u.logprobs.size() == t.logprobs.size() && u.alternatives.size() == t.alternatives.size());
    for (size_t i = 0; i < t.alternatives.size(); ++i) {
        const std::string& a = t.alternatives[i].text;
        const std::string& b = u.alternatives[i].text;
        require(a.compare(0, b.size(), b) == 0);  // a prefix of the original...
        if (a.size() <= 255) {
            require(b.size() == a.size());
        } else {
            // ...cut at byte 255, or up to three bytes before it, where the bytes
            // between are continuation bytes of a character that would be split.
            require(b.size() >= 252 && b.size() <= 255);
            for (size_t m = b.size() + 1; m <= 255; ++m) require((uint8_t(a[m]) & 0xC0) == 0x80);
        }
    }
    check_decoded(u);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try_blob(data, size);
    try_blob_with_crc(data, size);
    try_round_trip(data, size);
    return 0;
}
