// Allocation of the latent cache; failure becomes a clear OutOfMemory error.
#include "kv_cache.h"

#include "cetus/error.h"

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
      m_type(type),
      m_data(size_t(uint64_t(n_layers) * uint64_t(capacity) * uint64_t(m_width) * element_bytes()),
             "latent cache (" + std::string(kv_cache_type_name(type)) + ") of " + std::to_string(capacity) + " tokens",
             std::string("; lower the context") + (type == KvCacheType::F32 ? " or keep the cache in bf16" : "")) {}

}  // namespace cetus
