// libFuzzer target for the stored routing-trace encoding (decode_routing_trace),
// which reads blobs from conversation databases and import files. Each input is
// tried three ways:
//   1. as a blob, as it is (almost always refused by the CRC);
//   2. as a blob with its CRC field made right, so that mutations of the header
//      and payload reach the size, scale and decompression checks;
//   3. as a trace (sizes, ids and weights taken from the bytes) that is encoded
//      and decoded again, which must give the ids back and the weights within
//      routing_weight_tolerance.
// A StorageError is the expected answer to a bad blob; a decoded trace must be
// self-consistent (sizes in range, weights finite and >= 0) and encode to a blob
// that decodes to the same trace. Anything else is a finding.
#include "cetus/storage/error.h"
#include "cetus/storage/routing_trace.h"

#include <zlib.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

namespace {

using cetus::storage::RoutingTrace;
using cetus::storage::StorageError;

void require(bool ok) {
    if (!ok) __builtin_trap();
}

uint32_t get32(const uint8_t* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// u is t after an encode and decode: the same sizes and ids, the weights within
// the encoding's tolerance.
void require_same(const RoutingTrace& t, const RoutingTrace& u) {
    require(u.n_layers == t.n_layers && u.top_k == t.top_k && u.first_layer == t.first_layer);
    require(u.expert_ids == t.expert_ids);
    const float tol = cetus::storage::routing_weight_tolerance(t);
    for (size_t i = 0; i < t.weights.size(); ++i) require(std::fabs(u.weights[i] - t.weights[i]) <= tol);
}

// A decoded trace: consistent, and the same after another encode and decode.
void check_decoded(const RoutingTrace& t) {
    require(t.n_layers >= 1 && t.n_layers <= 4096 && t.top_k >= 1 && t.top_k <= 256);
    require(t.first_layer >= 0 && t.first_layer <= 0xFFFF);
    require(t.expert_ids.size() == t.weights.size());
    require(t.expert_ids.size() == t.n_tokens() * size_t(t.n_layers) * size_t(t.top_k));
    for (float w : t.weights) require(std::isfinite(w) && w >= 0);
    const std::vector<uint8_t> again = cetus::storage::encode_routing_trace(t);  // must not throw
    require_same(t, cetus::storage::decode_routing_trace(again));
}

void try_blob(const uint8_t* data, size_t size) {
    auto copy = std::make_unique<uint8_t[]>(size ? size : 1);  // exactly sized, for ASan
    if (size) std::memcpy(copy.get(), data, size);
    try {
        check_decoded(cetus::storage::decode_routing_trace({copy.get(), size}));
    } catch (const StorageError&) {
    }
}

// The blob with bytes 28..31 set to the CRC of the header's first 28 bytes and
// the raw planes (the payload, inflated when byte 6 says it is deflated).
void try_blob_with_crc(const uint8_t* data, size_t size) {
    if (size < 32) return;
    std::vector<uint8_t> blob(data, data + size);
    const uint8_t* payload = blob.data() + 32;
    const size_t stored = size - 32;
    std::vector<uint8_t> raw;
    if (blob[6] == 1) {
        // The size the header claims, capped so the harness stays fast.
        const uint64_t claimed = uint64_t(get32(&blob[8])) * (uint64_t(blob[12] | blob[13] << 8) + 1) *
                                 uint64_t(blob[14] | blob[15] << 8) * (uint64_t(blob[4]) + 1);
        if (claimed > (uint64_t(1) << 22)) {
            try_blob(blob.data(), blob.size());
            return;
        }
        raw.resize(size_t(claimed));
        uLongf got = raw.size();
        if (::uncompress(raw.data(), &got, payload, uLong(stored)) != Z_OK) {
            try_blob(blob.data(), blob.size());
            return;
        }
        raw.resize(got);
    } else {
        raw.assign(payload, payload + stored);
    }
    uLong crc = ::crc32(0L, Z_NULL, 0);
    crc = ::crc32(crc, blob.data(), 28);
    if (!raw.empty()) crc = ::crc32(crc, raw.data(), uInt(raw.size()));
    for (int i = 0; i < 4; ++i) blob[size_t(28 + i)] = uint8_t(crc >> (8 * i));
    try_blob(blob.data(), blob.size());
}

// A trace built from the bytes: n_layers, top_k, first_layer and a weight
// exponent from the first five, then per entry two bytes of id and two of weight.
void try_round_trip(const uint8_t* data, size_t size) {
    if (size < 5) return;
    RoutingTrace t;
    t.n_layers = 1 + data[0] % 8;
    t.top_k = 1 + data[1] % 16;
    t.first_layer = data[2] | data[3] << 8;
    const int exponent = int(data[4] % 64) - 32;  // weights from about 2^-32 to 2^31
    const size_t per_token = size_t(t.n_layers) * size_t(t.top_k);
    const size_t n_tokens = (size - 5) / 4 / per_token;
    for (size_t i = 0; i < n_tokens * per_token; ++i) {
        const uint8_t* e = data + 5 + 4 * i;
        t.expert_ids.push_back(uint16_t(e[0] | e[1] << 8));
        t.weights.push_back(std::ldexp(float(e[2] | e[3] << 8) / 65535.0f, exponent));
    }
    if (t.expert_ids.empty()) return;
    const std::vector<uint8_t> blob = cetus::storage::encode_routing_trace(t);  // a valid trace: must not throw
    const RoutingTrace u = cetus::storage::decode_routing_trace(blob);
    require_same(t, u);
    check_decoded(u);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try_blob(data, size);
    try_blob_with_crc(data, size);
    try_round_trip(data, size);
    return 0;
}
