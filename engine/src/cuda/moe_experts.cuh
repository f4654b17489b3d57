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
};

}  // namespace cetus::cuda
