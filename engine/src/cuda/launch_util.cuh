// File-local launch helpers shared by several kernel files: the grid of the
// grid-stride elementwise kernels (silu_mul, to_bf16) and the rounded-up
// division of the MLA launches (absorb_q, mla_attention). Internal linkage, as
// when they lived in one file: each .cu gets its own copy.
#pragma once

#include <algorithm>
#include <cstdint>

namespace cetus::cuda {
namespace {

unsigned elementwise_blocks(int64_t count) {
    return unsigned(std::clamp<int64_t>((count + 255) / 256, 1, 65536));
}

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace
}  // namespace cetus::cuda
