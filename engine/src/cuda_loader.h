// Finding and loading the CUDA plug-in (libcetus-cuda.so) at run time.
#pragma once

#include "backend.h"
#include "cetus/engine.h"

#include <memory>
#include <string>

namespace cetus {

struct CudaProbe {
    bool usable = false;  // plug-in loaded and at least one device
    std::string text;     // device description, or why there is no usable GPU
    std::string plugin;   // path of the plug-in that answered (empty when none was found)
};

// Loads the plug-in once per process (it stays loaded) and asks for devices. Never throws.
CudaProbe probe_cuda();

// Creates the CUDA backend for a loaded model (probe_cuda().usable must be true).
// Throws Error (Device, OutOfMemory, Cancelled, Unsupported).
std::unique_ptr<Backend> create_cuda_backend(const Model& model, int64_t capacity, KvCacheType cache_type,
                                             const LoadProgress& progress);

}  // namespace cetus
