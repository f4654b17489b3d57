// Programmatic dependent launch (Hopper, sm_90) for the own kernels of the
// forward pass (all a decode step is made of; cuBLAS, CUB and the prefill-only
// kernels launch plainly), an experiment switched on with CETUS_CUDA_PDL=1: such a kernel is
// launched with programmatic stream serialization, so its launch and block
// scheduling overlap the end of the kernel before it instead of following it.
// Every kernel launched through launch_pdl calls pdl_wait() as its very first
// statement (before any memory access or early return): it returns once the
// previous kernel has completed and its writes are visible, and at once when the
// kernel was launched without the attribute. Waiting first keeps every dependency
// of the stream order: a kernel completes only after its predecessor has.
// The next kernel may be scheduled once every block of this one has called
// pdl_trigger() or exited. Only the kernels whose last block finishes the launch
// alone (last_block.cuh: the fused tails) trigger, with all of a block's threads,
// when their own part is done, so that the next kernel's launch and block
// scheduling overlap that tail while the rest of the GPU is idle. With a trigger
// at the start of every kernel (until 2026-12-05) V2-Lite's BF16 decode on an H200
// went from 260.9 to 230.6 tok/s; a likely cause, not measured: the next kernel's
// waiting blocks took room on multiprocessors while the current one still had
// blocks to place.
#pragma once

#include "cuda_util.h"

#include "kernels.h"

#include <utility>

namespace cetus::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, s>>>(args...), with the programmatic attribute when switched on.
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args&&... args) {
    if (!programmatic_launch()) {
        kernel<<<grid, block, smem, s>>>(std::forward<Args>(args)...);
        return;
    }
    cudaLaunchAttribute attr[1]{};
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    if (cudaLaunchKernelEx(&cfg, kernel, args...) == cudaSuccess) return;
    // Refused (a device or driver without it): clear the error, switch it off for
    // good and launch plainly; the caller's CETUS_CUDA_LAUNCHED checks that launch.
    (void)cudaGetLastError();
    set_programmatic_launch(false);
    kernel<<<grid, block, smem, s>>>(std::forward<Args>(args)...);
}

}  // namespace cetus::cuda
