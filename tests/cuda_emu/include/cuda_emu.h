// The CUDA emulator's device side, included first in every file of the CUDA
// backend when it is built for the emulator (tests/cuda_emu/CMakeLists.txt):
// the backend's own sources, compiled by the host compiler, run on the CPU.
// Every block runs its threads as fibers on one host thread; __syncthreads,
// __syncwarp and the warp shuffles are barriers between those fibers, so the
// kernels' synchronisation is exercised, and a barrier that some threads never
// reach, a shuffle naming an exited lane or a collective with mismatched masks
// stops the program with a message naming the kernel. The blocks of a launch
// run side by side on a few host threads (CETUS_EMU_THREADS), so atomics and
// fences between blocks are real. The runtime (cudart, cuBLAS, CUB's device
// sort) is in runtime.cpp; selfcheck.cu checks the emulator itself.
//
// It is a test tool for machines without a GPU: it checks the kernels' logic
// (indices, synchronisation, the host code around them) against the CPU
// backend. It says nothing about speed, and nothing about what only hardware
// shows (the GPU's weaker memory model, WMMA's fragment layouts; mma.sync's
// m16n8k16 fragments are laid out as the PTX ISA documents them).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define CETUS_CUDA_EMU 1
// What `__CUDA_ARCH__` reads as in the rewritten kernel files (rewrite.pl).
#define CETUS_EMU_ARCH 900

namespace cuda_emu {

struct Block {
    uint3 idx{};
    dim3 dim{};
    dim3 grid{};
    unsigned char* dynamic_smem = nullptr;
    size_t dynamic_bytes = 0;
    size_t smem_limit = 0;    // static + dynamic shared memory the launch may use
    size_t static_bytes = 0;  // static shared memory this block has reached so far
    uint64_t serial = 0;      // which block runs: static shared memory is refilled for each
};

struct Thread {
    uint3 idx{};
    int linear = 0;
};

// The emulator's hottest thread-locals (every kernel reads them) take the initial-exec
// model: a plain %fs-relative load instead of a __tls_get_addr call each time. They
// come from the static TLS that glibc keeps for modules loaded later (the plug-in is
// dlopen'ed): a few dozen bytes of its 512.
#define CETUS_EMU_HOT_TLS __attribute__((tls_model("initial-exec")))
extern thread_local Block* g_block CETUS_EMU_HOT_TLS;

void sync_block();
// One warp collective: every lane of mask deposits value; returns the value of
// lane src_lane (computed by the caller from its own lane), or its own value
// when src_lane < 0.
uint64_t warp_collective(unsigned mask, uint64_t value, int src_lane, const char* what);
// The most values a lane brings to one warp meeting (warp_xor_reduce).
inline constexpr int k_gather_words = 8;
// A warp-uniform computation done once: the whole warp meets, each lane bringing its
// n_in inputs, which must hold the same bytes in every lane; the first lane to go on
// runs compute(ctx), which writes its out (up to k_warp_once_bytes), and every other
// lane gets a copy of those bytes in its own out.
inline constexpr size_t k_warp_once_bytes = 1024;
void warp_once(const void* const* in, const size_t* in_bytes, int n_in, void* out, size_t out_bytes,
               void (*compute)(void*), void* ctx, const char* what);
// The xor butterfly of device_math.cuh's warp_sum / warp_max (offsets 16, 8, 4, 2, 1:
// v = v + shfl_xor(v, off), or fmaxf(v, shfl_xor(v, off))) over each of v[0 .. n) (n up
// to k_gather_words), computed from one meeting of the whole warp instead of five
// shuffles per value: each lane gets the bits the shuffles give it.
void warp_xor_reduce(float* v, int n, bool take_max, const char* what);
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 with d as both C and D:
// the whole warp's fragments in the PTX ISA's layout (mma_bf16.cuh issues the
// instruction itself on a GPU).
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
[[noreturn]] void fail(const char* what);
// Fails unless [p, p + bytes) lies inside one live cudaMalloc allocation (a prefetch's
// range: on a GPU it reads nothing the kernel sees, so only its address can be wrong).
void check_device_range(const void* p, size_t bytes, const char* what);
// Bytes of the live cudaMalloc allocation that starts at p (0: none starts there).
size_t allocation_bytes(const void* p);
unsigned char* dynamic_smem();

int lane();

template <typename T>
uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

void* shared_storage(const void* site, size_t bytes, size_t align);
template <typename T, size_t Align>
T& shared_var(const void* site) {
    return *static_cast<T*>(shared_storage(site, sizeof(T), std::max(Align, alignof(T))));
}

// The kernel launch: every block's threads run body() as fibers.
void run_grid(dim3 grid, dim3 block, size_t smem, size_t smem_limit, std::function<void()> body, const char* name);
void record_or_run(cudaStream_t s, std::function<void()> op);
const char* kernel_name(const void* fn);
void name_kernel(const void* fn, const char* name);
// The shared memory (static + dynamic) a launch of fn may use; 0 when smem alone is too much.
size_t launch_smem_limit(const void* fn, size_t smem, const char* name);

// The kernel, its name recorded for messages (the first name given wins).
template <typename K>
K named(K kernel, const char* name) {
    name_kernel(reinterpret_cast<const void*>(kernel), name);
    return kernel;
}

struct Launch {
    dim3 grid, block;
    size_t smem = 0;
    cudaStream_t stream = nullptr;
    Launch(dim3 g, dim3 b, size_t sm = 0, cudaStream_t s = nullptr) : grid(g), block(b), smem(sm), stream(s) {}

    template <typename... Params, typename... Args>
    void run(void (*kernel)(Params...), Args&&... args) const {
        // Converted to the parameters' types now, as a launch copies its arguments.
        std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
        const dim3 g = grid, b = block;
        const size_t sm = smem;
        const cudaStream_t st = stream;
        const char* name = kernel_name(reinterpret_cast<const void*>(kernel));
        const size_t limit = launch_smem_limit(reinterpret_cast<const void*>(kernel), sm, name);
        if (limit == 0) return;
        record_or_run(st, [=] {
            run_grid(g, b, sm, limit, [kernel, &params] { std::apply(kernel, params); }, name);
        });
    }
};

}  // namespace cuda_emu

// Static shared memory: rewrite.pl turns each `__shared__ T name[N];` into a
// reference to the running block's storage for that declaration (site), filled
// with 0xA5 bytes (0xFF with CETUS_EMU_SHARED_FILL=nan) when the block first
// reaches it, as dynamic shared memory is.
// A declaration rewrite.pl does not take fails to compile here.
#undef __shared__
#define __shared__ __shared__declaration_not_taken_by_rewrite_pl
#undef __launch_bounds__
#define __launch_bounds__(...)

// The built-in variables: the running fiber's, set by the scheduler before it
// switches to a fiber (variables, not macros: cudaLaunchConfig_t has a gridDim).
extern thread_local uint3 threadIdx CETUS_EMU_HOT_TLS;
extern thread_local uint3 blockIdx CETUS_EMU_HOT_TLS;
extern thread_local dim3 blockDim CETUS_EMU_HOT_TLS;
extern thread_local dim3 gridDim CETUS_EMU_HOT_TLS;

inline void __syncthreads() { ::cuda_emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::cuda_emu::warp_collective(mask, 0, -1, "__syncwarp"); }
// Blocks run side by side on host threads: a fence orders the host thread's accesses.
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() {}
[[noreturn]] inline void __trap() { ::cuda_emu::fail("__trap()"); }

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int lane = ::cuda_emu::lane(), base = lane & ~(width - 1);
    return ::cuda_emu::from_bits<T>(
        ::cuda_emu::warp_collective(mask, ::cuda_emu::to_bits(v), base + (src & (width - 1)), "__shfl_sync"));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = ::cuda_emu::lane(), base = lane & ~(width - 1), src = lane ^ lane_mask;
    return ::cuda_emu::from_bits<T>(::cuda_emu::warp_collective(mask, ::cuda_emu::to_bits(v),
                                                                src >= base + width ? lane : src, "__shfl_xor_sync"));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::cuda_emu::lane(), base = lane & ~(width - 1), src = lane + int(delta);
    return ::cuda_emu::from_bits<T>(::cuda_emu::warp_collective(mask, ::cuda_emu::to_bits(v),
                                                                src >= base + width ? lane : src, "__shfl_down_sync"));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::cuda_emu::lane(), base = lane & ~(width - 1), src = lane - int(delta);
    return ::cuda_emu::from_bits<T>(
        ::cuda_emu::warp_collective(mask, ::cuda_emu::to_bits(v), src < base ? lane : src, "__shfl_up_sync"));
}

// Atomics: blocks run side by side on host threads, so a compare-and-swap loop (relaxed, as
// CUDA's atomics are; __threadfence orders).
template <typename T, typename F>
T atomic_update(T* p, F next) {
    std::atomic_ref<T> a(*p);
    T old = a.load(std::memory_order_relaxed);
    while (!a.compare_exchange_weak(old, next(old), std::memory_order_relaxed)) {
    }
    return old;
}
template <typename T>
T atomicAdd(T* p, T v) {
    return atomic_update(p, [v](T old) { return T(old + v); });
}
template <typename T>
T atomicExch(T* p, T v) {
    return atomic_update(p, [v](T) { return v; });
}
template <typename T>
T atomicMax(T* p, T v) {
    return atomic_update(p, [v](T old) { return std::max(old, v); });
}
template <typename T>
T atomicMin(T* p, T v) {
    return atomic_update(p, [v](T old) { return std::min(old, v); });
}
template <typename T>
T atomicCAS(T* p, T compare, T v) {
    return atomic_update(p, [compare, v](T old) { return old == compare ? v : old; });
}

// Cache-hinted loads are plain loads.
template <typename T>
T __ldg(const T* p) {
    return *p;
}
template <typename T>
T __ldcg(const T* p) {
    return *p;
}
template <typename T>
T __ldcs(const T* p) {
    return *p;
}
template <typename T>
void __stcg(T* p, T v) {
    *p = v;
}

// Byte permute (PRMT, default mode): result byte n is byte (s >> 4 n) & 7 of the eight
// bytes of x (0 .. 3) and y (4 .. 7); a selector nibble's top bit (sign replication)
// is refused, as nothing here uses it.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t in = uint64_t(y) << 32 | x;
    unsigned r = 0;
    for (int n = 0; n < 4; ++n) {
        const unsigned sel = (s >> (4 * n)) & 0xFu;
        if (sel & 8u) __builtin_trap();
        r |= unsigned((in >> (8 * sel)) & 0xFFu) << (8 * n);
    }
    return r;
}

// Funnel shift right (SHF.R, clamp-free form): hi:lo as 64 bits shifted right by shift & 31,
// the low 32 bits (with hi == lo a rotation).
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    return unsigned(((uint64_t(hi) << 32) | lo) >> (shift & 31u));
}

// Fast-math intrinsics: the accurate functions (the GPU's are within a few ulp).
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __saturatef(float x) { return std::clamp(x, 0.0f, 1.0f); }
// CUDA never fuses __fmul_rn, __fadd_rn or __fsub_rn into a multiply-add. Built
// with -DCETUS_EMU_CONTRACT=ON the compiler fuses products where it chooses, so
// there each product leaves __fmul_rn rounded and each operand enters __fadd_rn
// and __fsub_rn rounded (an empty asm hides the value from the optimiser).
#ifdef CETUS_EMU_CONTRACT
inline float emu_unfused(float v) {
    asm("" : "+x"(v));
    return v;
}
#else
inline float emu_unfused(float v) { return v; }
#endif
inline float __fmul_rn(float a, float b) { return emu_unfused(a * b); }
inline float __fadd_rn(float a, float b) { return emu_unfused(a) + emu_unfused(b); }
inline float __fsub_rn(float a, float b) { return emu_unfused(a) - emu_unfused(b); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return emu_unfused(a) / emu_unfused(b); }
inline int __float2int_rn(float x) { return int(std::nearbyint(x)); }
// The four signed bytes of a times those of b, summed into c (DP4A, signed form).
inline int __dp4a(int a, int b, int c) {
    int64_t s = c;
    for (int i = 0; i < 4; ++i) s += int64_t(int8_t(uint32_t(a) >> (8 * i))) * int8_t(uint32_t(b) >> (8 * i));
    return int(uint32_t(uint64_t(s)));
}
inline int __float_as_int(float x) { return ::cuda_emu::from_bits<int>(::cuda_emu::to_bits(x)); }
inline unsigned __float_as_uint(float x) { return ::cuda_emu::from_bits<unsigned>(::cuda_emu::to_bits(x)); }
inline float __int_as_float(int x) { return ::cuda_emu::from_bits<float>(::cuda_emu::to_bits(x)); }
inline float __uint_as_float(unsigned x) { return ::cuda_emu::from_bits<float>(::cuda_emu::to_bits(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }

// CUDA's integer min/max overloads next to the float ones of <cmath>.
using std::max;
using std::min;
inline int64_t min(int64_t a, int b) { return std::min<int64_t>(a, b); }
inline int64_t min(int a, int64_t b) { return std::min<int64_t>(a, b); }
inline int64_t max(int64_t a, int b) { return std::max<int64_t>(a, b); }
inline int64_t max(int a, int64_t b) { return std::max<int64_t>(a, b); }
inline unsigned min(unsigned a, int b) { return std::min<unsigned>(a, unsigned(b)); }
inline unsigned max(unsigned a, int b) { return std::max<unsigned>(a, unsigned(b)); }

// The runtime's kernel-pointer overloads (cuda_runtime.h has them for nvcc only).
template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*fn)(P...), cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute(reinterpret_cast<const void*>(fn), attr, value);
}
template <typename... P>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, void (*fn)(P...)) {
    return cudaFuncGetAttributes(a, reinterpret_cast<const void*>(fn));
}
