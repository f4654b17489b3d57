// Encoding of routing traces ("CRT1", described in routing_trace.h). Decoding
// treats the blob as untrusted: every size is checked before it is used.
#include "cetus/storage/routing_trace.h"

#include "cetus/storage/error.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstring>
#include <string>

namespace cetus::storage {
namespace {

constexpr size_t k_header_bytes = 32;
constexpr uint32_t k_max_tokens = 1u << 24;
constexpr int k_max_layers = 4096;
constexpr int k_max_top_k = 256;
constexpr uint64_t k_max_entries = uint64_t(1) << 28;
constexpr uint8_t k_weights_u8 = 1;
constexpr uint8_t k_stored = 0, k_deflated = 1;
// The smallest scale: the least normal float. Below it a scale loses relative
// precision (a subnormal has fewer significant bits), and codes computed against
// a rounded scale would miss the weights by more than the tolerance promises.
constexpr float k_min_scale = std::numeric_limits<float>::min();

[[noreturn]] void invalid(const std::string& what) {
    throw StorageError(StorageErrorCode::InvalidArgument, "routing trace: " + what);
}
[[noreturn]] void corrupt(const std::string& what) {
    throw StorageError(StorageErrorCode::Corrupt, "routing trace: damaged: " + what);
}

void put16(uint8_t* p, uint32_t v) { p[0] = uint8_t(v); p[1] = uint8_t(v >> 8); }
void put32(uint8_t* p, uint32_t v) { put16(p, v & 0xFFFF); put16(p + 2, v >> 16); }
uint32_t get16(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8); }
uint32_t get32(const uint8_t* p) { return get16(p) | (get16(p + 2) << 16); }

// Covers the header up to the CRC field and the inflated payload, so no flipped
// bit anywhere goes unnoticed. zlib's crc32 answers 0 for a null buffer whatever
// came before, so an empty payload (whose data() is null) is not passed to it.
uint32_t crc_of(const uint8_t* header, const std::vector<uint8_t>& raw) {
    uLong crc = ::crc32(0L, Z_NULL, 0);
    crc = ::crc32(crc, header, 28);
    if (!raw.empty()) crc = ::crc32(crc, raw.data(), static_cast<uInt>(raw.size()));
    return static_cast<uint32_t>(crc);
}

}  // namespace

float routing_weight_tolerance(const RoutingTrace& trace) {
    float max_weight = 0;
    for (float w : trace.weights) max_weight = std::max(max_weight, w);
    return std::max(max_weight / 255.0f, k_min_scale) / 2.0f * 1.0001f;
}

std::vector<uint8_t> encode_routing_trace(const RoutingTrace& trace) {
    if (trace.n_layers < 1 || trace.n_layers > k_max_layers) invalid("n_layers " + std::to_string(trace.n_layers) + " is not in 1..4096");
    if (trace.top_k < 1 || trace.top_k > k_max_top_k) invalid("top_k " + std::to_string(trace.top_k) + " is not in 1..256");
    if (trace.first_layer < 0 || trace.first_layer > 0xFFFF) invalid("first_layer is not in 0..65535");
    const size_t per_token = size_t(trace.n_layers) * size_t(trace.top_k);
    const size_t n = trace.expert_ids.size();
    if (trace.weights.size() != n) invalid("expert_ids and weights differ in length");
    if (n % per_token != 0) invalid("length " + std::to_string(n) + " is not a multiple of n_layers * top_k");
    if (n / per_token > k_max_tokens || n > k_max_entries) invalid("too many tokens");

    float max_weight = 0;
    uint16_t max_id = 0;
    for (size_t i = 0; i < n; ++i) {
        const float w = trace.weights[i];
        if (!std::isfinite(w) || w < 0) invalid("weight " + std::to_string(i) + " is negative or not finite");
        max_weight = std::max(max_weight, w);
        max_id = std::max(max_id, trace.expert_ids[i]);
    }
    const uint8_t id_bytes = max_id < 256 ? 1 : 2;
    const float scale = max_weight > 0 ? std::max(max_weight / 255.0f, k_min_scale) : 1.0f;
    if (!std::isfinite(scale * 255.0f)) invalid("weights too large to encode");  // what decoding requires

    std::vector<uint8_t> raw(n * (id_bytes + 1u));
    for (size_t i = 0; i < n; ++i) {
        if (id_bytes == 1) raw[i] = uint8_t(trace.expert_ids[i]);
        else put16(&raw[2 * i], trace.expert_ids[i]);
        const long q = std::lround(trace.weights[i] / scale);
        raw[n * id_bytes + i] = uint8_t(std::clamp(q, 0L, 255L));
    }

    std::vector<uint8_t> payload(::compressBound(static_cast<uLong>(raw.size())));
    uLongf packed = payload.size();
    const bool deflated = !raw.empty() &&
                          ::compress2(payload.data(), &packed, raw.data(), raw.size(), 6) == Z_OK &&
                          packed < raw.size();
    if (deflated) payload.resize(packed);
    else payload = raw;

    std::vector<uint8_t> blob(k_header_bytes + payload.size());
    std::memcpy(blob.data(), "CRT1", 4);
    blob[4] = id_bytes;
    blob[5] = k_weights_u8;
    blob[6] = deflated ? k_deflated : k_stored;
    put32(&blob[8], static_cast<uint32_t>(n / per_token));
    put16(&blob[12], static_cast<uint32_t>(trace.n_layers - 1));  // 4096 fits as n-1
    put16(&blob[14], static_cast<uint32_t>(trace.top_k));
    put16(&blob[16], static_cast<uint32_t>(trace.first_layer));
    uint32_t scale_bits;
    std::memcpy(&scale_bits, &scale, 4);
    put32(&blob[20], scale_bits);
    put32(&blob[24], static_cast<uint32_t>(payload.size()));
    put32(&blob[28], crc_of(blob.data(), raw));
    std::copy(payload.begin(), payload.end(), blob.begin() + k_header_bytes);
    return blob;
}

RoutingTrace decode_routing_trace(std::span<const uint8_t> blob) {
    if (blob.size() < k_header_bytes) corrupt(std::to_string(blob.size()) + " bytes, shorter than its header");
    const uint8_t* h = blob.data();
    if (std::memcmp(h, "CRT1", 4) != 0) corrupt("bad magic");
    const uint8_t id_bytes = h[4];
    if (id_bytes != 1 && id_bytes != 2) corrupt("expert id width " + std::to_string(id_bytes));
    if (h[5] != k_weights_u8) corrupt("unknown weight format " + std::to_string(h[5]));
    if (h[6] != k_stored && h[6] != k_deflated) corrupt("unknown compression " + std::to_string(h[6]));
    if (h[7] != 0 || get16(h + 18) != 0) corrupt("reserved header bytes are set");
    const uint32_t n_tokens = get32(h + 8);
    const uint32_t n_layers = get16(h + 12) + 1;
    const uint32_t top_k = get16(h + 14);
    const uint32_t first_layer = get16(h + 16);
    float scale;
    const uint32_t scale_bits = get32(h + 20);
    std::memcpy(&scale, &scale_bits, 4);
    const uint32_t stored = get32(h + 24);
    if (n_tokens > k_max_tokens || n_layers > uint32_t(k_max_layers) || top_k < 1 || top_k > uint32_t(k_max_top_k)) {
        corrupt("sizes out of range");
    }
    const uint64_t n = uint64_t(n_tokens) * n_layers * top_k;
    if (n > k_max_entries) corrupt("too many entries");
    // 255 * scale is the largest weight a code gives: finite, as encoding ensures;
    // and encoding never writes a scale below the least normal float.
    if (!std::isfinite(scale * 255.0f) || !(scale >= k_min_scale)) corrupt("bad weight scale");
    if (stored != blob.size() - k_header_bytes) corrupt("payload size disagrees with the blob size");

    const size_t raw_size = static_cast<size_t>(n) * (id_bytes + 1u);
    std::vector<uint8_t> raw;
    if (h[6] == k_stored) {
        if (stored != raw_size) corrupt("payload size disagrees with the header");
        raw.assign(blob.begin() + k_header_bytes, blob.end());
    } else {
        // Deflate packs at most 1032 bytes into one (258-byte matches at 2 bits
        // each): a header claiming more would only make us allocate up to 768 MiB
        // for a payload of a few bytes before the inflation fails.
        if (raw_size / 1032 > stored) corrupt("payload too small to inflate to the size the header gives");
        raw.resize(raw_size);
        uLongf got = raw_size;
        if (::uncompress(raw.data(), &got, h + k_header_bytes, stored) != Z_OK || got != raw_size) {
            corrupt("payload does not inflate to the size the header gives");
        }
    }
    // Before the empty payload was kept out of the CRC, an empty trace was written
    // with the CRC 0; such blobs are still read.
    const uint32_t crc = get32(h + 28);
    if (crc_of(h, raw) != crc && !(raw.empty() && crc == 0)) corrupt("CRC mismatch");

    RoutingTrace trace;
    trace.n_layers = static_cast<int>(n_layers);
    trace.top_k = static_cast<int>(top_k);
    trace.first_layer = static_cast<int>(first_layer);
    trace.expert_ids.resize(n);
    trace.weights.resize(n);
    for (size_t i = 0; i < n; ++i) {
        trace.expert_ids[i] = id_bytes == 1 ? raw[i] : static_cast<uint16_t>(get16(&raw[2 * i]));
        trace.weights[i] = float(raw[n * id_bytes + i]) * scale;
    }
    return trace;
}

}  // namespace cetus::storage
