// The CUDA backend is a plug-in (libcetus-cuda.so) loaded with dlopen, so the
// engine, the app and their packages run on machines without the CUDA
// libraries. This header is the whole contract between the two: both sides are
// built from the same tree by the same compiler, and the version number plus
// the struct sizes below are checked at load.
#pragma once

#include "backend.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace cetus {

inline constexpr int k_cuda_plugin_abi = 12;

struct CudaBackendArgs {
    int abi = k_cuda_plugin_abi;
    size_t sizeof_model = sizeof(Model);
    size_t sizeof_layer = sizeof(LayerWeights);
    size_t sizeof_config = sizeof(ModelConfig);
    size_t sizeof_forward_options = sizeof(ForwardOptions);  // every call's options
    size_t sizeof_mtp_options = sizeof(MtpOptions);

    const Model* model = nullptr;  // host weights (mmap'd or owned); outlives the backend
    int device = 0;                // CUDA device index
    int64_t capacity = 0;          // latent-cache rows per layer
    bool cache_bf16 = false;       // latent cache in bf16 (KvCacheType::BF16), else fp32
    // cos/sin pairs for every position, exactly Rope::angles(pos): [capacity, qk_rope_head_dim].
    const float* rope_table = nullptr;
    bool rope_interleave = true;
    float softmax_scale = 1.0f;    // ModelConfig::softmax_scale()
    int64_t n_moe_layers = 0;

    std::function<void(float fraction, const std::string& stage)> progress;  // may be empty
    const std::atomic<bool>* cancel = nullptr;  // loading throws Error(Cancelled) when set
    // 0 info, 1 warn; may be empty. Kept and called for the backend's whole life.
    std::function<void(int level, const std::string& message)> log;
};

}  // namespace cetus

extern "C" {
// Symbols the plug-in exports (C names, C++ types: same compiler, same tree).
//   int cetus_cuda_abi(void);
//     returns k_cuda_plugin_abi.
//   int cetus_cuda_probe(char* text, size_t text_len);
//     number of usable CUDA devices (0 or more); writes a one-line description
//     of device 0 (name, compute capability, memory, driver and runtime
//     versions) or, with 0, the reason there is none. Never throws.
//   cetus::Backend* cetus_cuda_create(const cetus::CudaBackendArgs* args);
//     uploads the weights and allocates the cache; throws cetus::Error
//     (OutOfMemory with needed/free bytes, Device, Cancelled, Unsupported).
using cetus_cuda_abi_fn = int (*)();
using cetus_cuda_probe_fn = int (*)(char*, size_t);
using cetus_cuda_create_fn = cetus::Backend* (*)(const cetus::CudaBackendArgs*);
}
