// Token choice, sampling: Sampler::distribution of each work row on the device.
// A first kernel takes the softmax numerators exp((x - max) / T) over the
// valid ids (and, without truncation, writes the distribution); with top-k,
// top-p or min-p the numerators are sorted by CUB's stable segmented radix
// sort, descending, with the ids as values in ascending order, which is the
// host's order (probability descending, ties by id); a second kernel cuts the
// sorted list and writes the renormalised kept entries. Sums run in double
// like the host's; only their order differs.
#include "choice_util.cuh"
#include "cuda_util.h"
#include "kernels.h"

#include <cub/device/device_segmented_radix_sort.cuh>

namespace cetus::cuda {
namespace {

bool truncates(const ChoiceParams& p) {
    const int64_t n_valid = std::clamp<int64_t>(p.n_valid, 1, p.vocab);
    return (p.top_k > 0 && p.top_k < n_valid) || p.top_p < 1.0f || p.min_p > 0.0f;
}

__global__ void __launch_bounds__(k_choice_threads)
    choice_softmax_kernel(const float* src, ChoiceParams p, float* work, float* probs, bool truncate,
                          int32_t* seg_begin, int32_t* seg_end) {
    __shared__ ChoiceShared sh;
    const int64_t r = blockIdx.x, V = p.vocab, n_valid = p.n_valid;
    const float* x = src + r * V;
    float* w = work + r * V;
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < n_valid; i += blockDim.x) mx = fmaxf(mx, x[i]);
    mx = block_all_max(mx, sh);
    const float inv_t = 1.0f / p.temperature;
    double part = 0.0;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {  // each thread reads x[i] before writing w[i]
        const float e = i < n_valid ? expf((x[i] - mx) * inv_t) : 0.0f;
        w[i] = e;
        part += e;
    }
    const double sum = block_all_sum(part, sh);
    if (!truncate) {
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x) probs[r * V + i] = float(double(w[i]) / sum);
    } else if (threadIdx.x == 0) {
        seg_begin[r] = int32_t(r * V);
        seg_end[r] = int32_t(r * V + n_valid);
    }
}

// keys/ids: the row's numerators sorted descending (ties by id) over [0, n_valid).
__global__ void __launch_bounds__(k_choice_threads)
    choice_cut_kernel(ChoiceParams p, const float* sorted_keys, const int32_t* sorted_ids, float* probs) {
    __shared__ ChoiceShared sh;
    const int64_t r = blockIdx.x, V = p.vocab, n_valid = p.n_valid;
    const float* key = sorted_keys + r * V;
    const int32_t* id = sorted_ids + r * V;
    int64_t keep = p.top_k > 0 && p.top_k < n_valid ? p.top_k : n_valid;
    if (p.top_p < 1.0f) {
        // The shortest prefix whose share of the kept mass reaches top_p (at least one).
        double part = 0.0;
        Chunk c = thread_chunk(keep);
        for (int64_t i = c.b0; i < c.b1; ++i) part += key[i];
        const double kept_sum = block_all_sum(part, sh);
        part = 0.0;
        for (int64_t i = c.b0; i < c.b1; ++i) part += key[i] / kept_sum;
        double acc = block_exclusive_sum(part, sh);
        int64_t hit = k_no_index;
        for (int64_t i = c.b0; i < c.b1; ++i) {
            acc += key[i] / kept_sum;
            if (acc >= double(p.top_p)) {
                hit = i;
                break;
            }
        }
        hit = block_all_index(hit, MinIndex{}, sh);
        if (hit != k_no_index) keep = hit + 1;
    }
    if (p.min_p > 0.0f && keep > 0) {
        // Up to the first candidate below min_p times the best.
        const float floor_p = p.min_p * key[0];
        int64_t below = k_no_index;
        for (int64_t i = 1 + threadIdx.x; i < keep; i += blockDim.x)
            if (key[i] < floor_p) {
                below = i;
                break;
            }
        below = block_all_index(below, MinIndex{}, sh);
        if (below != k_no_index) keep = below;
    }
    double part = 0.0;
    for (int64_t i = threadIdx.x; i < keep; i += blockDim.x) part += key[i];
    const double z = block_all_sum(part, sh);
    float* out = probs + r * V;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) out[i] = 0.0f;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < keep; i += blockDim.x) out[id[i]] = float(double(key[i]) / z);
}

cudaError_t sort_rows(void* temp, size_t& temp_bytes, const float* keys, float* keys_out, const int32_t* ids,
                      int32_t* ids_out, int64_t rows, int64_t vocab, const int32_t* begin, const int32_t* end,
                      cudaStream_t s) {
    return cub::DeviceSegmentedRadixSort::SortPairsDescending(temp, temp_bytes, keys, keys_out, ids, ids_out,
                                                              int(rows * vocab), int(rows), begin, end, 0,
                                                              int(sizeof(float) * 8), s);
}

}  // namespace

size_t choice_sort_temp_bytes(int64_t rows, int64_t vocab) {
    size_t bytes = 0;
    CETUS_CUDA(sort_rows(nullptr, bytes, nullptr, nullptr, nullptr, nullptr, rows, vocab, nullptr, nullptr, nullptr));
    return bytes;
}

void launch_choice_distribution(const float* src, int64_t n, const ChoiceParams& p, const ChoiceBuffers& b,
                                float* probs, cudaStream_t s) {
    if (n <= 0) return;
    ChoiceParams q = p;
    q.n_valid = std::clamp<int64_t>(p.n_valid, 1, p.vocab);
    const bool truncate = truncates(q);
    choice_softmax_kernel<<<unsigned(n), k_choice_threads, 0, s>>>(src, q, b.work, probs, truncate, b.seg_begin,
                                                                   b.seg_end);
    CETUS_CUDA_LAUNCHED("choice_softmax_kernel");
    if (!truncate) return;
    size_t bytes = 0;
    CETUS_CUDA(sort_rows(nullptr, bytes, b.work, b.sort_keys, b.iota, b.sort_ids, n, q.vocab, b.seg_begin, b.seg_end, s));
    if (bytes > b.sort_temp_bytes)
        throw Error(ErrorCode::Device, "token choice: the sort needs " + std::to_string(bytes) + " bytes of work space, " +
                                           std::to_string(b.sort_temp_bytes) + " were set aside (internal error)");
    bytes = b.sort_temp_bytes;
    CETUS_CUDA(sort_rows(b.sort_temp, bytes, b.work, b.sort_keys, b.iota, b.sort_ids, n, q.vocab, b.seg_begin,
                         b.seg_end, s));
    choice_cut_kernel<<<unsigned(n), k_choice_threads, 0, s>>>(q, b.sort_keys, b.sort_ids, probs);
    CETUS_CUDA_LAUNCHED("choice_cut_kernel");
}

}  // namespace cetus::cuda
