// Multi-head latent attention (architecture doc section 5): queries (with or
// without q-LoRA), the latent c_kv and the rotated shared key k_pe written to
// the cache, then attention either in the weight-absorbed form (decode and
// short chunks) or the naive expanded form (long prefill chunks).
#pragma once

#include "config.h"
#include "kv_cache.h"
#include "mla_cost.h"
#include "model.h"
#include "rope.h"

namespace cetus {

// The eps of q_a_layernorm and kv_a_layernorm: transformers builds both with
// its default 1e-6 whatever rms_norm_eps says (doc section 1.1).
inline constexpr float k_latent_norm_eps = 1e-6f;

// a: [T, H] normalised input; tokens at positions start_pos + t.
// cache: this layer's rows [capacity, d_c + d_r]; rows start_pos .. start_pos+T-1 are
// written (rounded to bf16 in a bf16 cache) before attention reads them back.
// out: [T, H].
void mla_forward(const ModelConfig& c, const Rope& rope, const AttentionWeights& w, const float* a,
                 int64_t n_tokens, int64_t start_pos, const CacheRows& cache, float* out, bool absorbed);

// Whether an n-token chunk at start_pos takes the absorbed form under the policy:
// by_cost compares the two forms' multiply-adds (mla_cost.h) as this backend
// computes them (the naive form per block of queries, each up to the block's last
// position). A short chunk after a long prefix (a conversation's next message)
// stays absorbed; a prompt's first long chunk is naive.
bool mla_absorbed(const ModelConfig& c, const MlaFormPolicy& policy, int64_t n_tokens, int64_t start_pos);

}  // namespace cetus
