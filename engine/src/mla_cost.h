// The work of MLA's two attention forms (architecture doc section 5), counted in
// multiply-adds per head for a chunk of n tokens at positions start .. start+n-1:
//   absorbed: the query absorption (d_n x d_c) and W_UV (d_c x d_v) per query,
//     scores over the latent row (d_c + d_r) and sums over the latent (d_c) per
//     visible position;
//   expanded: every visible cached row expanded through kv_b_proj to keys and
//     values (d_c x (d_n + d_v)), scores (d_n + d_r) and sums (d_v) per visible
//     position, per block of queries up to the block's last position.
// Both backends choose the form per chunk from it (each with its own weights: a
// product on the GPU's TF32 cores, or with one operand in two bf16 parts, does
// twice a plain one's work), and the bench counts prefill FLOPs with it. Qt-free
// and dependency-free: the CUDA plug-in includes it too.
#pragma once

#include <algorithm>
#include <cstdint>

namespace cetus {

struct MlaDims {
    double d_c = 0, d_r = 0, d_n = 0, d_v = 0;  // kv_lora_rank, qk_rope/qk_nope/v head dims
};

// How a backend carries out the two forms.
struct MlaFormCosts {
    double absorbed_scores = 1.0;  // weight of the absorbed form's scores (d_c + d_r deep)
    double absorbed_sums = 1.0;    // weight of its sums over the latent (d_c wide)
    double expanded = 1.0;         // weight of every product of the expanded form
    // The absorbed scores per query up to its own position (true), or over the
    // whole rectangle of visible rows (one batched product per chunk).
    bool absorbed_causal = true;
    // The expanded form's queries per block; 1 counts the exact causal triangle.
    int64_t query_block = 256;
};

// Visible (query, position) pairs when each block of `block` queries is computed
// up to its last query's position.
inline double mla_block_pairs(int64_t n, int64_t start, int64_t block) {
    double pairs = 0.0;
    block = std::max<int64_t>(block, 1);
    if (block == 1) return double(n) * (double(start) + (double(n) + 1.0) / 2.0);
    for (int64_t t0 = 0; t0 < n; t0 += block) {
        const int64_t nb = std::min(block, n - t0);
        pairs += double(nb) * double(start + t0 + nb);
    }
    return pairs;
}

inline double mla_absorbed_macs(const MlaDims& d, int64_t n, int64_t start, const MlaFormCosts& w) {
    const double t = double(n);
    const double pairs = w.absorbed_causal ? mla_block_pairs(n, start, 1) : t * double(start + n);
    return t * d.d_c * (d.d_n + d.d_v) + pairs * (w.absorbed_scores * (d.d_c + d.d_r) + w.absorbed_sums * d.d_c);
}

inline double mla_expanded_macs(const MlaDims& d, int64_t n, int64_t start, const MlaFormCosts& w) {
    const double rows = double(start + n);
    return w.expanded *
           (rows * d.d_c * (d.d_n + d.d_v) + mla_block_pairs(n, start, w.query_block) * (d.d_n + d.d_r + d.d_v));
}

// How the CPU backend picks the form of a chunk: up to absorb_max_tokens tokens
// (decode steps, MTP drafts and verify batches) absorbed; longer chunks absorbed
// too where that takes fewer multiply-adds (with by_cost), else expanded.
struct MlaFormPolicy {
    int64_t absorb_max_tokens = 16;
    bool by_cost = true;
};

}  // namespace cetus
