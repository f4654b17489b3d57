// Error checks and RAII owners for the CUDA plug-in. Every runtime call goes
// through CETUS_CUDA and every kernel launch is followed by CETUS_CUDA_LAUNCHED,
// so a failure surfaces as cetus::Error(Device) naming the call and its place
// (OutOfMemory for a failed allocation); owners free on every path, so a throw
// never leaves device memory behind.
#pragma once

#include "cetus/error.h"

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

namespace cetus::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
    const char* base = std::strrchr(file, '/');
    // An allocation failure keeps its own code so the engine can offer the CPU instead.
    throw Error(e == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Device,
                std::string(what) + " failed (" + (base ? base + 1 : file) + ":" + std::to_string(line) +
                    "): " + cudaGetErrorString(e));
}

inline void check_cuda(cudaError_t e, const char* what, const char* file, int line) {
    if (e != cudaSuccess) throw_cuda(e, what, file, line);
}

// Whether the environment variable `name` is set to exactly `value` (the
// backend's CETUS_CUDA_* switches).
inline bool env_is(const char* name, const char* value) {
    const char* e = std::getenv(name);
    return e && std::strcmp(e, value) == 0;
}

// CETUS_CUDA_SYNC=1 (read once): wait for every kernel right after its launch,
// so a fault inside a kernel is reported against that kernel. For debugging only.
inline bool sync_each_launch() {
    static const bool on = env_is("CETUS_CUDA_SYNC", "1");
    return on;
}

inline void check_launch(const char* what, const char* file, int line) {
    check_cuda(cudaGetLastError(), what, file, line);
    if (sync_each_launch()) check_cuda(cudaDeviceSynchronize(), what, file, line);
}

}  // namespace cetus::cuda

#define CETUS_CUDA(call) ::cetus::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define CETUS_CUDA_LAUNCHED(kernel) ::cetus::cuda::check_launch("launch of " kernel, __FILE__, __LINE__)

namespace cetus::cuda {

// Owner of a block of CUDA memory: device memory (cudaMalloc) or page-locked
// host memory for asynchronous copies (cudaHostAlloc); move-only.
struct DeviceMemory {
    static cudaError_t allocate(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
    static void release(void* p) { cudaFree(p); }
};
struct PinnedMemory {
    static cudaError_t allocate(void** p, size_t bytes) { return cudaHostAlloc(p, bytes, cudaHostAllocDefault); }
    static void release(void* p) { cudaFreeHost(p); }
};

template <class Kind>
class Memory {
public:
    Memory() = default;
    explicit Memory(size_t bytes) : m_bytes(bytes) {
        if (bytes) CETUS_CUDA(Kind::allocate(&m_ptr, bytes));
    }
    ~Memory() {
        if (m_ptr) Kind::release(m_ptr);
    }
    Memory(Memory&& o) noexcept : m_ptr(std::exchange(o.m_ptr, nullptr)), m_bytes(std::exchange(o.m_bytes, 0)) {}
    Memory& operator=(Memory&& o) noexcept {
        std::swap(m_ptr, o.m_ptr);
        std::swap(m_bytes, o.m_bytes);
        return *this;
    }
    Memory(const Memory&) = delete;
    Memory& operator=(const Memory&) = delete;

    char* get() const { return static_cast<char*>(m_ptr); }
    size_t bytes() const { return m_bytes; }

private:
    void* m_ptr = nullptr;
    size_t m_bytes = 0;
};
using DeviceBuffer = Memory<DeviceMemory>;
using PinnedBuffer = Memory<PinnedMemory>;

// Owner of one CUDA handle, destroyed with `Destroy` when the owner goes; move-only.
template <class H, cudaError_t (*Destroy)(H)>
class Handle {
public:
    Handle() = default;
    explicit Handle(H h) : m_handle(h) {}
    ~Handle() {
        if (m_handle) Destroy(m_handle);
    }
    Handle(Handle&& o) noexcept : m_handle(std::exchange(o.m_handle, nullptr)) {}
    Handle& operator=(Handle&& o) noexcept {
        std::swap(m_handle, o.m_handle);
        return *this;
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;

    H get() const { return m_handle; }

private:
    H m_handle = nullptr;
};

using Stream = Handle<cudaStream_t, cudaStreamDestroy>;
using Event = Handle<cudaEvent_t, cudaEventDestroy>;
// A captured graph (cudaStreamEndCapture) and its executable instance.
using Graph = Handle<cudaGraph_t, cudaGraphDestroy>;
using GraphExec = Handle<cudaGraphExec_t, cudaGraphExecDestroy>;

inline Stream make_stream() {
    cudaStream_t s = nullptr;
    CETUS_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return Stream(s);
}

inline Event make_event() {  // for ordering only: no timing
    cudaEvent_t e = nullptr;
    CETUS_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return Event(e);
}

// Hands out aligned pieces of one allocation. Run once without a base to
// measure, then again over the allocation: the same calls give the same layout.
class Carver {
public:
    explicit Carver(char* base = nullptr) : m_base(base) {}
    template <class T>
    T* take(size_t count) {
        m_offset = (m_offset + 255) / 256 * 256;
        T* p = m_base ? reinterpret_cast<T*>(m_base + m_offset) : nullptr;
        m_offset += count * sizeof(T);
        return p;
    }
    size_t bytes() const { return m_offset; }

private:
    char* m_base;
    size_t m_offset = 0;
};

}  // namespace cetus::cuda
