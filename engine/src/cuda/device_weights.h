// The model's weights in device memory: one allocation holds every matrix in
// its checkpoint dtype (F16 widened to F32, FP8 with its fp32 block scales, a
// GGUF file's block-quantised matrices as their blocks, Q6_K's rows rearranged
// (kernels.h: ggml_device_row), but the router, which is decoded to fp32 on the
// device), the norm vectors and biases as fp32, the per-layer expert descriptor
// tables and the rope table. Matrices shared by several owners (the MTP module's
// embedding and head, tied embeddings) are uploaded once.
#pragma once

#include "cuda_util.h"
#include "kernels.h"
#include "model.h"

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace cetus::cuda {

struct DeviceMlp {
    DeviceMatrix gate, up, down;
};

struct DeviceLayer {
    const float* input_norm = nullptr;
    const float* post_norm = nullptr;
    bool q_lora = false;
    DeviceMatrix q_proj;     // without q-LoRA
    DeviceMatrix q_a, q_b;   // with q-LoRA
    const float* q_a_norm = nullptr;
    DeviceMatrix kv_a, kv_b, o;
    const float* kv_a_norm = nullptr;
    bool is_moe = false;
    DeviceMlp mlp;  // dense layers
    DeviceMatrix router;
    const float* bias = nullptr;  // e_score_correction_bias or null
    DeviceExperts experts;
    // Every GGUF matrix of the experts can be staged (ggml_stage_fits_type): what
    // experts.ggml_stage may be set to at run time (the backend's step switch).
    bool experts_stage_fits = false;
    bool has_shared = false;
    DeviceMlp shared;
};

struct DeviceMtp {
    DeviceMatrix embed, eh_proj, head;
    const float* enorm = nullptr;
    const float* hnorm = nullptr;
    const float* head_norm = nullptr;
    DeviceLayer block;
};

struct DeviceWeights {
    DeviceBuffer memory;  // everything below points into it
    // Bytes one full pass reads of each host matrix's device form (its values and
    // FP8 block scales; a GGUF matrix decoded to fp32 counts 4 a value), keyed by
    // the host matrix's key() (its data, or a drawn matrix's recipe).
    std::map<const void*, uint64_t> read_bytes;
    DeviceMatrix embed, lm_head;
    const float* final_norm = nullptr;
    const float* rope_table = nullptr;  // [capacity, qk_rope_head_dim]
    std::vector<DeviceLayer> layers;
    std::vector<DeviceMtp> mtp;
};

struct UploadOptions {
    cudaStream_t stream = nullptr;
    std::function<void(float fraction, const std::string& stage)> progress;  // may be empty
    const std::atomic<bool>* cancel = nullptr;
    std::string stage;  // progress text
    bool ggml_fast = false;  // GGUF blocks take the fast mode's sums (DeviceMatrix::ggml_fast)
    bool l2_prefetch = false;  // DeviceMatrix::l2_prefetch for every weight
    uint8_t ggml_stage = 0;    // DeviceMatrix::ggml_stage for the GGUF matrices whose blocks take it
};

// Device bytes upload_weights takes. Throws Error(Unsupported) for weights it cannot hold.
size_t device_weight_bytes(const Model& model, int64_t capacity);

// Allocates and fills the weights; the rope table [capacity, qk_rope_head_dim] is
// copied in. Throws Error (Device, OutOfMemory, Cancelled, Unsupported).
DeviceWeights upload_weights(const Model& model, const float* rope_table, int64_t capacity, const UploadOptions& o);

}  // namespace cetus::cuda
