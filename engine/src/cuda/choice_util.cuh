// Block-wide helpers of the token-choice kernels (choice_*.cu): reductions
// whose result every thread gets, and the draw of sampler.cpp's Sampler::draw
// done by a whole block. One block of k_choice_threads threads takes one row of
// the vocabulary; each thread owns a contiguous chunk, so running sums follow
// id order as the host's loop does.
#pragma once

#include "launch_util.cuh"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cstdint>

namespace cetus::cuda {
namespace {

constexpr int k_choice_threads = 1024;
constexpr int64_t k_no_index = INT64_MAX;

struct MinIndex {
    __device__ int64_t operator()(int64_t a, int64_t b) const { return a < b ? a : b; }
};
struct MaxIndex {
    __device__ int64_t operator()(int64_t a, int64_t b) const { return a > b ? a : b; }
};
struct MaxFloat {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumDouble {
    __device__ double operator()(double a, double b) const { return a + b; }
};

// Shared memory of the helpers below; one instance per block.
struct ChoiceShared {
    union {
        cub::BlockReduce<double, k_choice_threads>::TempStorage sum;
        cub::BlockReduce<float, k_choice_threads>::TempStorage max;
        cub::BlockReduce<int64_t, k_choice_threads>::TempStorage index;
        cub::BlockScan<double, k_choice_threads>::TempStorage scan;
    } temp;
    double d;
    float f;
    int64_t i;
};

// Reductions over the block; every thread gets the result (thread 0's, passed
// through `slot`). Each ends with a barrier, so the temporary storage is free
// for the next call.
template <class T, class Op>
__device__ T block_all(T v, Op op, typename cub::BlockReduce<T, k_choice_threads>::TempStorage& temp, T& slot) {
    const T r = cub::BlockReduce<T, k_choice_threads>(temp).Reduce(v, op);
    if (threadIdx.x == 0) slot = r;
    __syncthreads();
    const T out = slot;
    __syncthreads();
    return out;
}
__device__ double block_all_sum(double v, ChoiceShared& sh) { return block_all(v, SumDouble{}, sh.temp.sum, sh.d); }
__device__ float block_all_max(float v, ChoiceShared& sh) { return block_all(v, MaxFloat{}, sh.temp.max, sh.f); }
template <class Op>
__device__ int64_t block_all_index(int64_t v, Op op, ChoiceShared& sh) {
    return block_all(v, op, sh.temp.index, sh.i);
}

__device__ double block_exclusive_sum(double v, ChoiceShared& sh) {
    double prefix = 0.0;
    cub::BlockScan<double, k_choice_threads>(sh.temp.scan).ExclusiveSum(v, prefix);
    __syncthreads();
    return prefix;
}

// This thread's chunk [b0, b1) of n entries.
struct Chunk {
    int64_t b0, b1;
};
__device__ Chunk thread_chunk(int64_t n) {
    const int64_t size = ceil_div(n, int64_t(blockDim.x));
    const int64_t b0 = min(int64_t(threadIdx.x) * size, n);
    return {b0, min(b0 + size, n)};
}

// Sampler::draw over weights weight(0 .. n - 1): the first id whose running sum
// (id order, positive weights only) exceeds u * total; the last positive id
// when rounding leaves none; 0 when all are zero. Called by the whole block.
template <class Weight>
__device__ int32_t block_draw(const Weight& weight, int64_t n, double u, ChoiceShared& sh) {
    const Chunk c = thread_chunk(n);
    double part = 0.0;
    for (int64_t i = c.b0; i < c.b1; ++i) part += double(weight(i));
    const double total = block_all_sum(part, sh);
    double acc = block_exclusive_sum(part, sh);
    const double r = u * total;
    int64_t hit = k_no_index, last = -1;
    for (int64_t i = c.b0; i < c.b1; ++i) {
        const float w = weight(i);
        if (w <= 0.0f) continue;
        acc += w;
        last = i;
        if (r < acc) {
            hit = i;
            break;
        }
    }
    hit = block_all_index(hit, MinIndex{}, sh);
    // Without a hit every thread scanned its whole chunk, so `last` is complete.
    last = block_all_index(last, MaxIndex{}, sh);
    return int32_t(hit != k_no_index ? hit : last >= 0 ? last : 0);
}

}  // namespace
}  // namespace cetus::cuda
