// What the grouped expert kernels (moe_experts.cu on CUDA cores, moe_experts_mma.cu
// on the tensor cores) are given: one projection of every active expert's pairs.
#pragma once

#include "kernels.h"

namespace cetus::cuda {

struct ExpertLaunch {
    const DeviceMatrix* first;   // gate (or down), per expert
    const DeviceMatrix* second;  // up (unused by down)
    ExpertPairs pairs;
    const float* x;  // rows of width cols: x[t] (gate/up) or h[p] (down)
    float* out;      // [n * K, rows]
    int32_t top_k;
    int64_t rows, cols;
    // The shared experts in the same launch (fp32 kernel only; s_slots > 0): the
    // first s_slots rows of blocks of the grid take rows of s_first (and s_second)
    // for every one of the n_tokens rows of s_x, into s_out [n_tokens, s_rows].
    DeviceMatrix s_first{}, s_second{};
    const float* s_x = nullptr;
    float* s_out = nullptr;
    int64_t s_rows = 0, s_cols = 0;
    int32_t s_slots = 0;
    int32_t n_tokens = 0;  // tokens of the launch
    // The MoE combine by the last block (down launches of the fp32 kernel; combine.done set).
    MoeCombine combine{};
};

// The tensor-core kernel of moe_experts_mma.cu over a's pairs (gate and up with
// SwiGLU, or down); BF16 or FP8 weights.
void launch_experts_mma(const ExpertLaunch& a, bool gate_up, DeviceDtype dtype, int64_t n, int32_t n_experts,
                        cudaStream_t s);

}  // namespace cetus::cuda
