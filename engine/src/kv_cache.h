// The MLA latent cache: per layer (main layers, then MTP layers) and position,
// one row of d_c + d_r values: the normalised latent c_kv, then the rotated
// shared key k_pe. Nothing else is cached. Truncation (rejected drafts) is
// just a smaller length; later writes overwrite the stale rows. The values are
// fp32 or bf16 (KvCacheType, engine.h): a bf16 row is the fp32 row rounded to
// nearest even, and everything that reads the cache reads those rounded values.
#pragma once

#include "cetus/engine.h"
#include "dtype.h"
#include "host_memory.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace cetus {

// Whether b is within one bf16 step of a, up to fp32 noise on the row's scale
// (values near zero): a step at |x| is at most |x| 2^-7.
inline bool within_bf16_step(float a, float b, float row_scale) {
    return std::fabs(a - b) <= std::ldexp(std::max(std::fabs(a), std::fabs(b)), -7) + 1e-5f * row_scale;
}

// Tests only (selftest's CUDA-against-CPU comparison with bf16 caches): the rows
// another backend stored, written instead of one's own, so that both sides read
// the same cached values. Where two computations' fp32 results for a value
// straddle a rounding boundary, their stored values are one bf16 step apart, and
// one such step can move a prompt's logits by more than fp32 noise (up to 2.4e-3
// of the largest logit on the tiny random model). Each value taken is held to the
// value this backend computed.
struct CacheFollow {
    // rows[layer]: the other backend's rows of that layer as bf16 bits, [positions,
    // width] from position 0. Rows past them (and other layers) are this backend's own.
    std::vector<std::vector<uint16_t>> rows;
    int64_t values = 0;          // values taken from rows
    int64_t other_rounding = 0;  // of them, not this backend's value rounded to nearest even
    int64_t further = 0;         // more than one bf16 step from this backend's value
};

// One layer's rows [capacity, width] of either type.
struct CacheRows {
    void* data = nullptr;
    KvCacheType type = KvCacheType::F32;
    int64_t width = 0;
    CacheFollow* follow = nullptr;  // tests: KvCache::follow, with this layer's index
    int64_t layer_index = 0;

    float* f32(int64_t pos) const { return static_cast<float*>(data) + pos * width; }
    uint16_t* bf16(int64_t pos) const { return static_cast<uint16_t*>(data) + pos * width; }
    // Row pos = row (width values), rounded to bf16 in a bf16 cache.
    void store(int64_t pos, const float* row) const {
        if (type == KvCacheType::F32) {
            std::copy_n(row, width, f32(pos));
        } else if (const uint16_t* other = followed(pos)) {
            store_followed(pos, row, other);
        } else {
            uint16_t* out = bf16(pos);
            for (int64_t i = 0; i < width; ++i) out[i] = f32_to_bf16(row[i]);
        }
    }
    // The other backend's row pos when this row follows it (bf16 caches only).
    const uint16_t* followed(int64_t pos) const {
        if (!follow || layer_index >= int64_t(follow->rows.size())) return nullptr;
        const auto& rows = follow->rows[size_t(layer_index)];
        return (pos + 1) * width <= int64_t(rows.size()) ? rows.data() + pos * width : nullptr;
    }
    void store_followed(int64_t pos, const float* row, const uint16_t* other) const {
        float scale = 0.0f;
        for (int64_t i = 0; i < width; ++i) scale = std::max(scale, std::fabs(row[i]));
        uint16_t* out = bf16(pos);
        for (int64_t i = 0; i < width; ++i) {
            if (other[i] != f32_to_bf16(row[i])) {
                ++follow->other_rounding;
                if (!within_bf16_step(row[i], bf16_to_f32(other[i]), scale)) ++follow->further;
            }
            out[i] = other[i];
        }
        follow->values += width;
    }
    // out[p - first][:] = rows first .. first + n - 1 as fp32 (exact for either type).
    void load(int64_t first, int64_t n, float* out) const {
        if (type == KvCacheType::F32) {
            std::copy_n(f32(first), n * width, out);
        } else {
            const uint16_t* in = bf16(first);
            for (int64_t i = 0; i < n * width; ++i) out[i] = bf16_to_f32(in[i]);
        }
    }
};

class KvCache {
public:
    KvCache() = default;
    KvCache(int64_t n_layers, int64_t capacity, int64_t kv_lora_rank, int64_t rope_dim,
            KvCacheType type = KvCacheType::F32);

    CacheRows layer(int64_t layer) {
        const size_t offset = size_t(layer * m_capacity * m_width) * size_t(element_bytes());
        return CacheRows{m_data.data() + offset, m_type, m_width, follow, layer};
    }
    // Row pos of a layer as fp32 values (width of them).
    std::vector<float> row_f32(int64_t layer_index, int64_t pos) {
        std::vector<float> out(static_cast<size_t>(m_width));
        layer(layer_index).load(pos, 1, out.data());
        return out;
    }

    int64_t capacity() const { return m_capacity; }
    int64_t width() const { return m_width; }
    int64_t n_layers() const { return m_n_layers; }
    int64_t kv_lora_rank() const { return m_kv_lora_rank; }
    KvCacheType type() const { return m_type; }

    // Tokens held by the main model layers (the generator tracks the MTP layers' rows).
    int64_t n_tokens = 0;
    // Tests: rows to store instead of one's own (Model::forward sets it from
    // ForwardOptions::follow_cache for the call).
    CacheFollow* follow = nullptr;

    uint64_t element_bytes() const { return m_type == KvCacheType::F32 ? sizeof(float) : sizeof(uint16_t); }
    uint64_t bytes_per_token() const { return uint64_t(m_n_layers * m_width) * element_bytes(); }
    uint64_t capacity_bytes() const { return uint64_t(m_capacity) * bytes_per_token(); }
    uint64_t used_bytes() const { return uint64_t(n_tokens) * bytes_per_token(); }
    void clear() { n_tokens = 0; }

private:
    int64_t m_n_layers = 0, m_capacity = 0, m_width = 0, m_kv_lora_rank = 0;
    KvCacheType m_type = KvCacheType::F32;
    LazyArray<unsigned char> m_data;  // pages taken as rows are written
};

// Tests: the cache follows f (may be null) for one call of Model::forward or
// Model::mtp_forward, and no longer once it returns or throws.
class CacheFollowScope {
public:
    CacheFollowScope(KvCache& cache, CacheFollow* f) : m_cache(cache) { m_cache.follow = f; }
    ~CacheFollowScope() { m_cache.follow = nullptr; }
    CacheFollowScope(const CacheFollowScope&) = delete;
    CacheFollowScope& operator=(const CacheFollowScope&) = delete;

private:
    KvCache& m_cache;
};

}  // namespace cetus
