// Token choice, step 1: each row's logits copied to the work rows with the
// repetition penalty applied (Sampler::penalise). An id listed several times
// is penalised once: every listed id first marks its entry, then the one
// thread that takes the mark back penalises it, leaving the marks clear.
#include "cuda_util.h"
#include "kernels.h"

#include <algorithm>
#include <cfloat>

namespace cetus::cuda {
namespace {

__global__ void __launch_bounds__(1024) choice_penalise_kernel(const float* logits, ChoiceParams p, const int32_t* history,
                                       int64_t n_history, const int32_t* tail, int64_t n_tail, int64_t tail_first,
                                       float* work, uint32_t* marks) {
    const int64_t r = blockIdx.x, V = p.vocab;
    const float* src = logits + r * V;
    float* w = work + r * V;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) w[i] = src[i];
    if (p.penalty == 1.0f) return;
    const int64_t n_t = max(int64_t(0), min(n_tail, tail_first + r));
    const int64_t len = n_history + n_t;
    uint32_t* mark = marks + r * V;
    __syncthreads();  // the copy is complete before penalised entries are rewritten
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
        const int32_t id = j < n_history ? history[j] : tail[j - n_history];
        if (id >= 0 && id < V) atomicExch(&mark[id], 1u);
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
        const int32_t id = j < n_history ? history[j] : tail[j - n_history];
        if (id >= 0 && id < V && atomicExch(&mark[id], 0u) == 1u) {
            const float v = w[id];
            w[id] = fminf(fmaxf(v > 0 ? v / p.penalty : v * p.penalty, -FLT_MAX), FLT_MAX);  // as Sampler::penalise
        }
    }
}

__global__ void choice_init_kernel(int32_t* iota, uint32_t* marks, int64_t count, int64_t V) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
        iota[i] = int32_t(i % V);
        marks[i] = 0u;
    }
}

}  // namespace

void launch_choice_init(const ChoiceBuffers& b, int64_t vocab, cudaStream_t s) {
    const int64_t count = b.rows * vocab;
    if (count <= 0) return;
    const unsigned blocks = unsigned(std::min<int64_t>((count + 255) / 256, 65536));
    choice_init_kernel<<<blocks, 256, 0, s>>>(b.iota, b.marks, count, vocab);
    CETUS_CUDA_LAUNCHED("choice_init_kernel");
}

void launch_choice_penalise(const float* logits, int64_t n, const ChoiceParams& p, const int32_t* history,
                            int64_t n_history, const int32_t* tail, int64_t n_tail, int64_t tail_first,
                            const ChoiceBuffers& b, cudaStream_t s) {
    if (n <= 0) return;
    choice_penalise_kernel<<<unsigned(n), 1024, 0, s>>>(logits, p, history, n_history, tail, n_tail, tail_first,
                                                        b.work, b.marks);
    CETUS_CUDA_LAUNCHED("choice_penalise_kernel");
}

}  // namespace cetus::cuda
