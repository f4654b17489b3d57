// Allocation of the latent cache; failure becomes a clear OutOfMemory error.
#include "kv_cache.h"

#include "cetus/error.h"

#include <new>
#include <string>

namespace cetus {

KvCache::KvCache(int64_t n_layers, int64_t capacity, int64_t kv_lora_rank, int64_t rope_dim)
    : m_n_layers(n_layers), m_capacity(capacity), m_width(kv_lora_rank + rope_dim), m_kv_lora_rank(kv_lora_rank) {
    const uint64_t n = uint64_t(n_layers) * uint64_t(capacity) * uint64_t(m_width);
    try {
        m_data.assign(n, 0.0f);
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, "latent cache of " + std::to_string(capacity) + " tokens needs " +
                                                std::to_string(n * sizeof(float) >> 20) + " MiB; lower the context");
    }
}

}  // namespace cetus
