// Asks the L2 for weights a later launch of the step reads, while the launches before it
// leave the memory idle (CudaBackend::attention: the output projection's and the
// router's rows during the attention's latency-bound launches). A hint: nothing is
// written, and the launch that reads the rows computes the same sums either way.
#include "cuda_util.h"
#include "kernels.h"

#include <algorithm>

namespace cetus::cuda {
namespace {

constexpr int k_prefetch_threads = 32;           // a warp a block: spread over the multiprocessors
constexpr int64_t k_prefetch_chunk = 8 * 1024;   // bytes a thread asks for at a time

// Thread i of the grid takes chunks i, i + grid threads, ... of each range in turn. On
// sm_90 a chunk is one bulk prefetch (cp.async.bulk.prefetch.L2: the copy engine
// fetches it, no register waits); before, one prefetch.global.L2 a 32-byte sector.
__global__ void __launch_bounds__(k_prefetch_threads) l2_prefetch_kernel(L2Ranges r) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    for (int i = 0; i < r.n; ++i) {
        const char* const p = static_cast<const char*>(r.p[i]);
        const int64_t bytes = r.bytes[i];
#ifdef CETUS_CUDA_EMU
        if (first == 0) ::cuda_emu::check_device_range(p, size_t(bytes), "l2_prefetch");
#endif
        const int64_t chunks = (bytes + k_prefetch_chunk - 1) / k_prefetch_chunk;
        for (int64_t c = first; c < chunks; c += stride) {
            const char* const q = p + c * k_prefetch_chunk;
            const int64_t size = bytes - c * k_prefetch_chunk < k_prefetch_chunk ? bytes - c * k_prefetch_chunk
                                                                              : k_prefetch_chunk;
            // (16-byte aligned start, a multiple of 16 bytes: the ranges are whole padded rows.)
            const uint32_t bulk = uint32_t(size) & ~15u;
            (void)q;  // (the emulator drops the inline PTX below)
            (void)bulk;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(q), "r"(bulk) : "memory");
#elif defined(__CUDA_ARCH__)
            for (uint32_t o = 0; o < bulk; o += 32) asm volatile("prefetch.global.L2 [%0];" ::"l"(q + o));
#endif
        }
    }
}

}  // namespace

int64_t device_matrix_bytes(const DeviceMatrix& w) {
    switch (w.dtype) {
    case DeviceDtype::F32: return w.rows * w.ld * 4;
    case DeviceDtype::BF16: return w.rows * w.ld * 2;
    case DeviceDtype::F8_E4M3: return w.rows * w.ld;
    case DeviceDtype::Ggml: return w.rows * w.ld;  // (ld: bytes of a row of blocks)
    }
    return 0;
}

void launch_l2_prefetch(const L2Ranges& r, int n_sm, cudaStream_t s) {
    int64_t chunks = 0;
    for (int i = 0; i < r.n; ++i) chunks += (r.bytes[i] + k_prefetch_chunk - 1) / k_prefetch_chunk;
    if (chunks == 0) return;
    const int64_t blocks = std::min<int64_t>((chunks + k_prefetch_threads - 1) / k_prefetch_threads,
                                             std::max(1, 2 * n_sm));
    l2_prefetch_kernel<<<unsigned(blocks), k_prefetch_threads, 0, s>>>(r);
    CETUS_CUDA_LAUNCHED("l2_prefetch_kernel");
}

}  // namespace cetus::cuda
