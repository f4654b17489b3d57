// The MLA latent cache: per layer (main layers, then MTP layers) and position,
// one row of d_c + d_r floats: the normalised latent c_kv, then the rotated
// shared key k_pe. Nothing else is cached. Truncation (rejected drafts) is
// just a smaller length; later writes overwrite the stale rows.
#pragma once

#include <cstdint>
#include <vector>

namespace cetus {

class KvCache {
public:
    KvCache() = default;
    KvCache(int64_t n_layers, int64_t capacity, int64_t kv_lora_rank, int64_t rope_dim);

    float* row(int64_t layer, int64_t pos) { return m_data.data() + (layer * m_capacity + pos) * m_width; }
    const float* layer_base(int64_t layer) const { return m_data.data() + layer * m_capacity * m_width; }
    float* layer_base(int64_t layer) { return m_data.data() + layer * m_capacity * m_width; }

    int64_t capacity() const { return m_capacity; }
    int64_t width() const { return m_width; }
    int64_t n_layers() const { return m_n_layers; }
    int64_t kv_lora_rank() const { return m_kv_lora_rank; }

    // Tokens held by the main model layers (the generator tracks the MTP layers' rows).
    int64_t n_tokens = 0;

    uint64_t bytes_per_token() const { return uint64_t(m_n_layers * m_width) * sizeof(float); }
    uint64_t capacity_bytes() const { return m_data.size() * sizeof(float); }
    uint64_t used_bytes() const { return uint64_t(n_tokens) * bytes_per_token(); }
    void clear() { n_tokens = 0; }

private:
    int64_t m_n_layers = 0, m_capacity = 0, m_width = 0, m_kv_lora_rank = 0;
    std::vector<float> m_data;
};

}  // namespace cetus
