// Allocation of the latent cache; failure becomes a clear OutOfMemory error.
#include "kv_cache.h"

#include "cetus/error.h"

#include <new>
#include <string>

namespace cetus {

const char* kv_cache_type_name(KvCacheType t) noexcept { return t == KvCacheType::BF16 ? "bf16" : "f32"; }

KvCacheType kv_cache_type_from_name(const std::string& name) {
    if (name == "f32" || name == "fp32" || name == "float32") return KvCacheType::F32;
    if (name == "bf16" || name == "bfloat16") return KvCacheType::BF16;
    throw Error(ErrorCode::BadRequest, "unknown latent-cache type \"" + name + "\" (f32 or bf16)");
}

KvCache::KvCache(int64_t n_layers, int64_t capacity, int64_t kv_lora_rank, int64_t rope_dim, KvCacheType type)
    : m_n_layers(n_layers), m_capacity(capacity), m_width(kv_lora_rank + rope_dim), m_kv_lora_rank(kv_lora_rank),
      m_type(type) {
    const uint64_t n = uint64_t(n_layers) * uint64_t(capacity) * uint64_t(m_width);
    try {
        if (type == KvCacheType::F32) m_f32.assign(n, 0.0f);
        else m_bf16.assign(n, uint16_t(0));
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, "latent cache (" + std::string(kv_cache_type_name(type)) + ") of " +
                                                std::to_string(capacity) + " tokens needs " +
                                                std::to_string(n * element_bytes() >> 20) + " MiB; lower the context" +
                                                (type == KvCacheType::F32 ? " or keep the cache in bf16" : ""));
    }
}

}  // namespace cetus
