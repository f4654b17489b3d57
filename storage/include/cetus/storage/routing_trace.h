// The per-answer routing trace (which routed experts each generated token used in
// every MoE layer, with gate weights) and its compact stored encoding. The UI fills
// a RoutingTrace from the engine's per-token routing; the store keeps the encoding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace cetus::storage {

// Layout is token-major: the entry for token t, recorded layer l, choice k sits at
//     index = (t * n_layers + l) * top_k + k
// in both vectors, so one token's routing is one contiguous run of n_layers*top_k.
// Only MoE layers are recorded; recorded layer l is model layer first_layer + l
// (first_layer is config.json's first_k_dense_replace for DeepSeek-V2/V3).
// Weights are the gate weights as applied (after normalisation and any routed
// scaling factor): finite and >= 0. Shared experts are not recorded.
struct RoutingTrace {
    int n_layers = 0;     // recorded MoE layers, 1..4096
    int top_k = 0;        // num_experts_per_tok, 1..256
    int first_layer = 0;  // 0..65535
    std::vector<uint16_t> expert_ids;
    std::vector<float> weights;

    size_t n_tokens() const {
        const size_t per_token = static_cast<size_t>(n_layers) * static_cast<size_t>(top_k);
        return per_token == 0 ? 0 : expert_ids.size() / per_token;
    }
    void append_token(std::span<const uint16_t> ids, std::span<const float> token_weights) {
        expert_ids.insert(expert_ids.end(), ids.begin(), ids.end());
        weights.insert(weights.end(), token_weights.begin(), token_weights.end());
    }
};

// Encoding "CRT1" (little-endian): a 32-byte header (sizes, id width, weight
// scale, CRC-32 of header and payload), then the expert-id plane (1 byte per id when all
// ids < 256, else 2) and the weight plane (1 byte per weight, linear in
// [0, max weight]; error at most max_weight / 510, or FLT_MIN / 2 when the
// largest weight is below 255 * FLT_MIN), deflated with zlib when
// that is smaller. DeepSeek-V3 (58 MoE layers, top-8) needs at most 928 bytes
// per token before compression, against 2,784 for u16 ids and f32 weights.
//
// Throws StorageError(InvalidArgument) when the sizes disagree, a count is out of
// range, or a weight is negative, NaN or infinite.
std::vector<uint8_t> encode_routing_trace(const RoutingTrace& trace);

// Throws StorageError(Corrupt) for anything that is not a well-formed encoding:
// bad magic, sizes that disagree or overflow, a failed decompression or CRC.
RoutingTrace decode_routing_trace(std::span<const uint8_t> blob);

// Largest per-weight error that encoding introduces for this trace.
float routing_weight_tolerance(const RoutingTrace& trace);

}  // namespace cetus::storage
