// DeepSeekMoE (architecture doc section 6): the router (softmax greedy,
// softmax group-limited greedy, sigmoid noaux_tc with the selection-only
// correction bias), routed experts weighted by the gate, plus shared experts.
#pragma once

#include "config.h"
#include "model.h"

#include <cstdint>

namespace cetus {

// Chooses top_k experts from router logits z[E] of one token. Writes ids (ascending)
// and their gate weights (normalised iff norm_topk_prob && K > 1, times
// routed_scaling_factor). bias may be null. Excluded groups are masked with
// -inf (DeepSeek's reference and vLLM), not 0.0 as transformers does; the two
// differ only when fewer than K kept experts have a positive biased score.
void route_token(const ModelConfig& c, const float* z, const float* bias, int32_t* ids, float* weights);

// SwiGLU MLP over T rows: out[T, H] = down(silu(gate x) * up x).
void mlp_forward(const MlpWeights& w, const float* x, int64_t n_tokens, float* out);

// x: [T, H]; out: [T, H] = sum_k w_k * expert_k(x) + shared(x).
// route_ids / route_w: [T, route_stride] with the top_k choices at offset 0 (may be null).
// follow (may be null; same layout and stride): every token goes to these experts
// instead, weighted by their own scores as route_token weights a choice, while
// route_ids / route_w still report this layer's own choices (a reference that
// follows another backend's routing: the selftest's bf16 comparison).
void moe_forward(const ModelConfig& c, const MoeWeights& w, const float* x, int64_t n_tokens, float* out,
                 int32_t* route_ids, float* route_w, int64_t route_stride, const int32_t* follow = nullptr);

}  // namespace cetus
