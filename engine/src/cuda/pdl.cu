// The switch of programmatic dependent launch (pdl.cuh), set by the backend.
#include "kernels.h"

#include <cuda_runtime.h>

#include <atomic>

namespace cetus::cuda {
namespace {
std::atomic<bool> g_programmatic{false};
}  // namespace

// Compiled like every kernel: its machine code is sm_90's (with the griddepcontrol
// instructions) only when the build included that architecture. (Machine code the
// driver compiled on an sm_90 GPU from an older architecture's PTX reports binary
// version 90, but its kernels were compiled without the instructions: pdl_wait()
// there is empty, so the PTX version must be 90 too.)
__global__ void pdl_probe_kernel() {}

void set_programmatic_launch(bool on) { g_programmatic.store(on, std::memory_order_relaxed); }
bool programmatic_launch() { return g_programmatic.load(std::memory_order_relaxed); }

bool programmatic_launch_compiled() {
    cudaFuncAttributes fa{};
    if (cudaFuncGetAttributes(&fa, pdl_probe_kernel) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    return fa.binaryVersion >= 90 && fa.ptxVersion >= 90;
}

}  // namespace cetus::cuda
