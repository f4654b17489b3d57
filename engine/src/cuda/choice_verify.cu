// Token choice, speculative verification (verify_rows): drafts are accepted in
// order while u[a] < min(1, p_a(d) / q_a(d)); the first rejected one is replaced
// by a draw with u[a + 1] from normalise(max(0, p_a - q_a)) (from p_a when that
// is all zero); with every draft accepted the bonus token is drawn from p_D
// with u[D]. One block walks the drafts; the draws use all its threads.
#include "choice_util.cuh"
#include "cuda_util.h"
#include "kernels.h"

namespace cetus::cuda {
namespace {

struct RowWeight {
    const float* p;
    __device__ float operator()(int64_t i) const { return p[i]; }
};
struct Residual {
    const float *p, *q;
    __device__ float operator()(int64_t i) const { return fmaxf(0.0f, p[i] - q[i]); }
};

__global__ void __launch_bounds__(k_choice_threads)
    choice_verify_kernel(const float* p, const float* q, const int32_t* drafts, int64_t D, int64_t V,
                         const double* u, int32_t* out) {
    __shared__ ChoiceShared sh;
    for (int64_t a = 0; a < D; ++a) {
        const int32_t d = drafts[a];
        const float* pa = p + a * V;
        const float* qa = q + a * V;
        const double pd = pa[d], qd = qa[d];
        if (qd > 0.0 && u[a] < fmin(1.0, pd / qd)) continue;  // the same decision in every thread
        const Residual residual{pa, qa};
        const Chunk c = thread_chunk(V);
        double part = 0.0;
        for (int64_t i = c.b0; i < c.b1; ++i) part += residual(i);
        const double z = block_all_sum(part, sh);
        const int32_t next = z <= 0.0 ? block_draw(RowWeight{pa}, V, u[a + 1], sh)
                                      : block_draw(residual, V, u[a + 1], sh);
        if (threadIdx.x == 0) {
            out[0] = int32_t(a);
            out[1] = next;
        }
        return;
    }
    const int32_t next = block_draw(RowWeight{p + D * V}, V, u[D], sh);
    if (threadIdx.x == 0) {
        out[0] = int32_t(D);
        out[1] = next;
    }
}

}  // namespace

void launch_choice_verify(const float* p, const float* q, const int32_t* drafts, int64_t D, int64_t vocab,
                          const double* u, int32_t* out, cudaStream_t s) {
    choice_verify_kernel<<<1, k_choice_threads, 0, s>>>(p, q, drafts, D, vocab, u, out);
    CETUS_CUDA_LAUNCHED("choice_verify_kernel");
}

}  // namespace cetus::cuda
