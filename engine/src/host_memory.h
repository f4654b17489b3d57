// Host memory for buffers sized by the context (the latent cache, the MTP module's
// hidden states): zeroed blocks whose pages are taken as they are written, after a
// check that the machine could back all of them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

namespace cetus {

// Bytes a new allocation can still get without swapping (MemAvailable in
// /proc/meminfo), or 0 when unknown.
uint64_t host_available_bytes();

// Throws Error(OutOfMemory, message) (cetus/error.h stays out of this header).
[[noreturn]] void throw_out_of_memory(const std::string& message);

// n zeroed values from calloc: a large block comes straight from the kernel, so a
// long context costs memory only for the positions in use. Throws OutOfMemory
// naming `what` (and the advice) when more is asked than the machine has
// available, or the allocation fails; otherwise an allocation that could not be
// backed would succeed now and fail later, mid-answer.
template <class T>
class LazyArray {
public:
    LazyArray() = default;
    LazyArray(size_t n, const std::string& what, const std::string& advice) : m_n(n) {
        if (n == 0) return;
        const uint64_t bytes = uint64_t(n) * sizeof(T), avail = host_available_bytes();
        const std::string need = what + " needs " + std::to_string(bytes >> 20) + " MiB";
        if (avail > 0 && bytes > avail)
            throw_out_of_memory(need + " but " + std::to_string(avail >> 20) + " MiB are available" + advice);
        m_p.reset(static_cast<T*>(std::calloc(n, sizeof(T))));
        if (!m_p) throw_out_of_memory(need + advice);
    }
    LazyArray(LazyArray&& o) noexcept : m_n(std::exchange(o.m_n, 0)), m_p(std::move(o.m_p)) {}
    LazyArray& operator=(LazyArray&& o) noexcept {
        m_n = std::exchange(o.m_n, 0);
        m_p = std::move(o.m_p);
        return *this;
    }
    T* data() { return m_p.get(); }
    const T* data() const { return m_p.get(); }
    T* begin() { return m_p.get(); }
    size_t size() const { return m_n; }
    bool empty() const { return m_n == 0; }

private:
    struct Free {
        void operator()(T* p) const noexcept { std::free(p); }
    };
    size_t m_n = 0;
    std::unique_ptr<T, Free> m_p;
};

}  // namespace cetus
