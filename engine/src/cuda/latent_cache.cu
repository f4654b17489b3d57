// The latent-cache write of one layer: cache row *start_pos + t =
// [rmsnorm(kv[t, :d_c]) with kv_a_layernorm ; rope(kv[t, d_c:])], as
// mla_forward writes it (mla.cpp: cpu::rmsnorm, then Rope::apply of rope.cpp
// with the precomputed cos/sin table), and the same rotation of the token's
// queries q[t, h, d_n:] in place (one launch for both). One block of
// k_row_threads per token (latent_cache_token, latent_cache.cuh); decode batches
// do it in the query absorption's launch instead (launch_absorb_q_latent).
#include "cuda_util.h"
#include "latent_cache.cuh"
#include "pdl.cuh"

namespace cetus::cuda {
namespace {

__global__ void __launch_bounds__(k_row_threads) latent_cache_kernel(LatentCacheArgs a) {
    pdl_wait();  // first: see pdl.cuh
    __shared__ float scratch[32];
    latent_cache_token(a, blockIdx.x, scratch);
}

}  // namespace

void launch_latent_cache(const LatentCacheArgs& a, int64_t n, cudaStream_t s) {
    if (n <= 0) return;
    launch_pdl(latent_cache_kernel, unsigned(n), k_row_threads, 0, s, a);
    CETUS_CUDA_LAUNCHED("latent_cache_kernel");
}

}  // namespace cetus::cuda
