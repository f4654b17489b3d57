// What the grouped expert kernels (moe_experts.cu on CUDA cores, moe_experts_mma.cu
// on the tensor cores) are given: one projection of every active expert's pairs.
#pragma once

#include "kernels.h"

namespace cetus::cuda {

struct ExpertLaunch {
    const DeviceMatrix* first;   // gate (or down), per expert
    const DeviceMatrix* second;  // up (unused by down)
    ExpertPairs pairs;
    const float* x;  // rows of width cols: x[t] (gate/up) or h[p] (down); the fp32 kernel's
    float* out;      // [n * K, rows]; the tensor-core kernel's down output
    int32_t top_k;
    int64_t rows, cols;
    // The shared experts in the same launch (fp32 kernel only; s_rows > 0, the launch
    // sets s_slots): the first s_slots rows of blocks of the grid take rows of s_first (and s_second)
    // for every one of the n_tokens rows of s_x, into s_out [n_tokens, s_rows].
    DeviceMatrix s_first{}, s_second{};
    const float* s_x = nullptr;
    float* s_out = nullptr;
    int64_t s_rows = 0, s_cols = 0;
    int32_t s_slots = 0;
    int32_t n_tokens = 0;  // tokens of the launch
    bool ggml_fast = false;  // GGUF blocks: the fast mode's sums (DeviceExperts::ggml_fast)
    uint8_t ggml_stage = 0;  // GGUF blocks: rows staged, as asked (DeviceExperts::ggml_stage)
    // GGUF blocks: the int8 form's block of activations (DeviceExperts::ggml_int8_gate_up or
    // ggml_int8_down), 0: not the int8 form; s_int8_block the shared experts' riding along
    // (their blocks stage their own activations, so their block size may differ: V2-Lite's
    // routed down rows of 1,408 values are 32-value blocks, the shared experts' of 2,816
    // K-quants).
    int32_t ggml_int8_block = 0, s_int8_block = 0;
    // The launch's weight slots (device_math.cuh: GgmlSlots; ggml_buffers set by the launcher
    // where it stages): ggml_slot_bytes the launcher's input, the routed experts' largest
    // slot (0: the largest of any type), then the launch's.
    int32_t ggml_slot_bytes = 0, ggml_buffers = 0;
    // The MoE combine in the launch (down launches of the fp32 kernel; combine.done set):
    // by each column's last block, the norm by the launch's last block.
    MoeCombine combine{};
    // The tensor-core kernel's input rows in bf16, ldxb elements apart (a multiple
    // of 8, 16-byte aligned), and its gate/up output [n * K, ldob] in bf16.
    const uint16_t* xb = nullptr;
    int64_t ldxb = 0;
    uint16_t* outb = nullptr;
    int64_t ldob = 0;
};

// The tensor-core kernel of moe_experts_mma.cu over a's pairs (gate and up with
// SwiGLU into a.outb, or down into a.out) from a.xb, in tiles of 64 pairs by
// tile_rows (64 or 128) weight rows; BF16 or FP8 weights.
void launch_experts_mma(const ExpertLaunch& a, bool gate_up, DeviceDtype dtype, int tile_rows, int64_t n,
                        int32_t n_experts, cudaStream_t s);

}  // namespace cetus::cuda
