// The CUDA emulator's host side: the fibers that run a block's threads, the
// host threads that run a launch's blocks side by side, static shared memory,
// the CUDA runtime calls the backend makes (device memory is host memory,
// every stream runs in order at once, a captured graph is the list of its
// operations), cuBLAS's products (fp32 sums over bf16/fp32 operands) and
// CUB's segmented sort. See include/cuda_emu.h.
#include "cuda_emu.h"

#include <cub/device/device_segmented_radix_sort.cuh>
#include <cublas_v2.h>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

// Under AddressSanitizer (the emu-sanitize preset): every switch between stacks is
// announced, so ASan knows which stack runs; a fiber stack is unpoisoned before a
// new block's thread starts on it (a finished thread's frames never return, so
// their redzones would stay); device memory, pinned host memory and static shared
// memory are allocated to the byte, and dynamic shared memory past the launch's
// size is poisoned, so a kernel's read or write past any of them is reported.
#if defined(__SANITIZE_ADDRESS__)
#define CETUS_EMU_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#else
#define CETUS_EMU_ASAN 0
#endif

// Context switch between fibers (x86-64 System V): saves the callee-saved
// registers on the current stack, stores its pointer in *from and continues on
// the stack `to`.
extern "C" void cuda_emu_switch(void** from, void* to);
extern "C" void cuda_emu_fiber_start();
asm(R"(
.text
.globl cuda_emu_switch
.type cuda_emu_switch,@function
cuda_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size cuda_emu_switch,.-cuda_emu_switch
.globl cuda_emu_fiber_start
.type cuda_emu_fiber_start,@function
cuda_emu_fiber_start:
    movq %r12, %rdi
    call cuda_emu_fiber_main@PLT
    ud2
.size cuda_emu_fiber_start,.-cuda_emu_fiber_start
)");

thread_local uint3 threadIdx CETUS_EMU_HOT_TLS;
thread_local uint3 blockIdx CETUS_EMU_HOT_TLS;
thread_local dim3 blockDim CETUS_EMU_HOT_TLS;
thread_local dim3 gridDim CETUS_EMU_HOT_TLS;

namespace cuda_emu {

thread_local Block* g_block CETUS_EMU_HOT_TLS = nullptr;

namespace {

constexpr size_t k_stack_bytes = 256 * 1024;
constexpr size_t k_guard_bytes = 4096;
constexpr int k_max_threads = 1024;

// Memory aligned to `align`: rounded up to whole 256-byte blocks, or under ASan
// to the byte (its redzone then starts right past the last one asked for).
void* aligned_bytes(size_t align, size_t bytes) {
#if CETUS_EMU_ASAN
    void* p = nullptr;
    return posix_memalign(&p, align, std::max<size_t>(bytes, 1)) == 0 ? p : nullptr;
#else
    return std::aligned_alloc(align, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
#endif
}

enum class FiberState { Ready, Waiting, Done };

struct AsyncCopy {
    void* dst;
    const void* src;
    size_t bytes, zero_fill;
};

struct Fiber {
    void* sp = nullptr;
    const void* stack_bottom = nullptr;  // the lowest usable byte of its stack (for ASan)
    FiberState state = FiberState::Ready;
    const uint64_t* wait_gen = nullptr;
    uint64_t wait_value = 0;
    Thread thread;
    // Asynchronous copies (cuda_pipeline.h): committed groups, oldest first, and the open one.
    std::vector<std::vector<AsyncCopy>> copy_groups;
    std::vector<AsyncCopy> open_copies;
};

struct WarpState {
    uint64_t gen = 0;
    int arrived = 0;
    int expected = 0;
    unsigned mask = 0;
    uint64_t slots[2][32]{};
    uint32_t gathered[2][32][k_gather_words]{};  // warp_xor_reduce's deposits
    // The collectives that compute once per meeting for the whole warp (warp_xor_reduce,
    // mma_m16n8k16_bf16, warp_once; the first lane to go on, see first_after) keep
    // their results here. warp_xor_reduce's results for every lane:
    float reduced[2][32][k_gather_words]{};
    int reduce_kind[2][32]{};  // each lane's n * 2 + take_max, which must agree
    // mma_m16n8k16_bf16's fragments (a[4], b[2], the accumulators' bits[4]) and every lane's results.
    uint32_t mma_in[2][32][10]{};
    float mma_out[2][32][4]{};
    // warp_once's inputs (each lane's list, on its stack while it waits) and result.
    const void* const* once_in[2][32]{};
    alignas(16) unsigned char once_out[2][k_warp_once_bytes]{};
    uint64_t computed[2]{};  // per slot: the generation + 1 of the meeting last computed

    // For a new block: the counters (the deposits are always written before they are read).
    void reset() {
        gen = 0;
        arrived = expected = 0;
        mask = 0;
        computed[0] = computed[1] = 0;
    }
};

struct BlockRun {
    Block block;
    int n = 0;
    std::vector<Fiber> fibers;
    std::vector<char> exited;
    uint64_t gen = 0;
    int arrived = 0;
    int live = 0;
    WarpState warps[k_max_threads / 32];
    const std::function<void()>* body = nullptr;
    const char* name = "";
    void* scheduler_sp = nullptr;
    // The host thread's own stack, which the scheduler runs on (for ASan; learnt at
    // the first switch into a fiber).
    const void* scheduler_bottom = nullptr;
    size_t scheduler_size = 0;
    int current = -1;
};

thread_local BlockRun* t_run CETUS_EMU_HOT_TLS = nullptr;

// One stack per thread of a block for each host thread, reused by every block; a guard page below each.
unsigned char* stacks() {
    thread_local unsigned char* base = [] {
        const size_t each = k_stack_bytes + k_guard_bytes;
        void* p = mmap(nullptr, each * k_max_threads, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p == MAP_FAILED) {
            std::fprintf(stderr, "cuda emulator: cannot map the fiber stacks\n");
            std::abort();
        }
        for (int i = 0; i < k_max_threads; ++i) mprotect(static_cast<unsigned char*>(p) + each * i, k_guard_bytes, PROT_NONE);
        return static_cast<unsigned char*>(p);
    }();
    return base;
}

bool reverse_order() {
    static const bool reverse = [] {
        const char* e = std::getenv("CETUS_EMU_ORDER");
        return e && std::string(e) == "reverse";
    }();
    return reverse;
}

// The fiber to run after `from` in the scheduling order (each thread in turn, forwards or in
// reverse), -1 when none can run.
int next_runnable(BlockRun& r, int from) {
    const bool reverse = reverse_order();
    int i = from;
    for (int k = 0; k < r.n; ++k) {
        i = reverse ? (i == 0 ? r.n - 1 : i - 1) : (i + 1 == r.n ? 0 : i + 1);
        Fiber& f = r.fibers[size_t(i)];
        if (f.state == FiberState::Done) continue;
        if (f.state == FiberState::Waiting) {
            if (*f.wait_gen == f.wait_value) continue;
            f.state = FiberState::Ready;
        }
        return i;
    }
    return -1;
}

// cuda_emu_switch, announced to ASan: the stack that runs next is [bottom, bottom + size).
// A fiber that will not run again (done) passes keep = false, so ASan drops its state.
void switch_stack(void** save, void* to, const void* bottom, size_t size, bool keep = true) {
#if CETUS_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(keep ? &fake : nullptr, bottom, size);
    cuda_emu_switch(save, to);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    (void)bottom;
    (void)size;
    (void)keep;
    cuda_emu_switch(save, to);
#endif
}

// The running fiber gives up the host thread: straight to the next fiber that can run (one
// switch, not two through the scheduler), or back to the scheduler when none can.
void switch_away() {
    BlockRun& r = *t_run;
    const int me = r.current;
    const int next = next_runnable(r, me);
    if (next == me) return;  // not reached today: the caller is waiting (unsatisfied) or done
    void** save = &r.fibers[size_t(me)].sp;
    const bool keep = r.fibers[size_t(me)].state != FiberState::Done;
    if (next < 0) {
        r.current = -1;
        switch_stack(save, r.scheduler_sp, r.scheduler_bottom, r.scheduler_size, keep);
        return;
    }
    r.current = next;
    threadIdx = r.fibers[size_t(next)].thread.idx;
    switch_stack(save, r.fibers[size_t(next)].sp, r.fibers[size_t(next)].stack_bottom, k_stack_bytes, keep);
}

void wait_on(const uint64_t* gen) {
    BlockRun& r = *t_run;
    Fiber& f = r.fibers[size_t(r.current)];
    f.state = FiberState::Waiting;
    f.wait_gen = gen;
    f.wait_value = *gen;
    switch_away();
}

std::string where() {
    const BlockRun& r = *t_run;
    char buf[256];
    const int n = std::snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u)", r.name, r.block.idx.x,
                                r.block.idx.y, r.block.idx.z);
    if (r.current >= 0 && n > 0 && size_t(n) < sizeof buf)
        std::snprintf(buf + n, sizeof buf - size_t(n), ", thread %d", r.current);
    return buf;
}

}  // namespace

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "cuda emulator: %s (%s)\n", what, t_run ? where().c_str() : "host");
    std::fflush(stderr);
    std::abort();
}

void sync_block() {
    BlockRun& r = *t_run;
    if (++r.arrived == r.live) {
        r.arrived = 0;
        ++r.gen;
        return;
    }
    wait_on(&r.gen);
}

namespace {

// Every lane of mask arrives (the first to arrive checks the mask); deposit()
// stores the lane's values in the slots of the collective's generation first.
// Returns that generation once all have arrived.
template <typename Deposit>
uint64_t warp_meet(unsigned mask, const char* what, Deposit deposit) {
    BlockRun& r = *t_run;
    const int me = r.current, lane = me & 31, first = me & ~31;
    WarpState& w = r.warps[me >> 5];
    if (!(mask >> lane & 1u)) fail((std::string(what) + ": the calling lane is not in the mask").c_str());
    if (w.arrived == 0) {
        // The first lane to arrive checks the mask for the whole collective: a lane that exits
        // later while the warp waits is caught in thread_exited().
        for (unsigned rest = mask; rest; rest &= rest - 1) {
            const int l = __builtin_ctz(rest);
            if (first + l >= r.n)
                fail((std::string(what) + ": the mask names lane " + std::to_string(l) + ", which the block does not have").c_str());
            if (r.exited[size_t(first + l)])
                fail((std::string(what) + ": the mask names lane " + std::to_string(l) + ", which has exited").c_str());
        }
        w.mask = mask;
        w.expected = __builtin_popcount(mask);
    } else if (w.mask != mask) {
        fail((std::string(what) + ": lanes of one warp meet with different masks").c_str());
    }
    const uint64_t g = w.gen;
    deposit(w, g & 1, lane);
    if (++w.arrived == w.expected) {
        w.arrived = 0;
        ++w.gen;
    } else {
        wait_on(&w.gen);
    }
    return g;
}

// Whether the calling lane is the first to go on after meeting g (and so computes for
// the whole warp); it runs on without yielding, so the others still wait at the meeting.
bool first_after(WarpState& w, uint64_t g) {
    uint64_t& c = w.computed[g & 1];
    if (c == g + 1) return false;
    c = g + 1;
    return true;
}

}  // namespace

uint64_t warp_collective(unsigned mask, uint64_t value, int src_lane, const char* what) {
    const int lane = t_run->current & 31;
    const uint64_t g = warp_meet(mask, what, [&](WarpState& w, uint64_t slot, int l) { w.slots[slot][l] = value; });
    if (src_lane < 0 || src_lane == lane) return value;
    if (src_lane > 31 || !(mask >> src_lane & 1u))
        fail((std::string(what) + ": reads lane " + std::to_string(src_lane) + ", outside the mask").c_str());
    return t_run->warps[t_run->current >> 5].slots[g & 1][src_lane];
}

void warp_xor_reduce(float* v, int n, bool take_max, const char* what) {
    if (n < 1 || n > k_gather_words) fail((std::string(what) + ": too many values to reduce").c_str());
    const uint64_t g = warp_meet(0xffffffffu, what, [&](WarpState& w, uint64_t slot, int l) {
        std::memcpy(w.gathered[slot][l], v, size_t(n) * sizeof(float));
        w.reduce_kind[slot][l] = n * 2 + (take_max ? 1 : 0);
    });
    const int me = t_run->current, slot = int(g & 1);
    WarpState& w = t_run->warps[me >> 5];
    if (first_after(w, g)) {  // every lane's butterfly
        for (int l = 1; l < 32; ++l)
            if (w.reduce_kind[slot][l] != w.reduce_kind[slot][0])
                fail((std::string(what) + ": lanes of one warp reduce different counts or kinds").c_str());
        for (int j = 0; j < n; ++j) {
            float x[32], y[32];
            for (int l = 0; l < 32; ++l) std::memcpy(&x[l], &w.gathered[slot][l][j], 4);
            for (int off = 16; off > 0; off >>= 1) {  // each lane's step as its shuffle runs it
                if (take_max)
                    for (int l = 0; l < 32; ++l) y[l] = fmaxf(x[l], x[l ^ off]);
                else
                    for (int l = 0; l < 32; ++l) y[l] = x[l] + x[l ^ off];
                std::memcpy(x, y, sizeof x);
            }
            for (int l = 0; l < 32; ++l) w.reduced[slot][l][j] = x[l];
        }
    }
    std::memcpy(v, w.reduced[slot][me & 31], size_t(n) * sizeof(float));
}

void warp_once(const void* const* in, const size_t* in_bytes, int n_in, void* out, size_t out_bytes,
               void (*compute)(void*), void* ctx, const char* what) {
    if (out_bytes > k_warp_once_bytes) fail((std::string(what) + ": a result larger than warp_once holds").c_str());
    const uint64_t g = warp_meet(0xffffffffu, what, [&](WarpState& w, uint64_t slot, int l) { w.once_in[slot][l] = in; });
    const int slot = int(g & 1);
    WarpState& w = t_run->warps[t_run->current >> 5];
    if (!first_after(w, g)) {
        std::memcpy(out, w.once_out[slot], out_bytes);
        return;
    }
    // The first lane after the meeting (the others wait there, their inputs intact on their stacks).
    for (int l = 0; l < 32; ++l)
        for (int i = 0; i < n_in; ++i)
            if (std::memcmp(w.once_in[slot][l][i], in[i], in_bytes[i]) != 0)
                fail((std::string(what) + ": lane " + std::to_string(l) + " brings other values than lane " +
                      std::to_string(t_run->current & 31) + " (the arguments must be the same in the whole warp)")
                         .c_str());
    compute(ctx);
    std::memcpy(w.once_out[slot], out, out_bytes);
}

void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    // The PTX ISA's fragments of mma.m16n8k16 (.bf16, row.col): lane = 4 * group + tig;
    // a[0]: A[group][2 tig .. +1], a[1]: A[group + 8][2 tig ..], a[2], a[3]: the same at
    // columns 2 tig + 8 ..; b[0]: B[2 tig .. +1][group], b[1]: B[2 tig + 8 ..][group];
    // d[0], d[1]: D[group][2 tig .. +1], d[2], d[3]: D[group + 8][2 tig ..]. Each pair's
    // lower index in the lower 16 bits.
    const uint64_t g = warp_meet(0xffffffffu, "mma.m16n8k16", [&](WarpState& w, uint64_t slot, int l) {
        uint32_t* in = w.mma_in[slot][l];
        for (int i = 0; i < 4; ++i) in[i] = a[i];
        in[4] = b[0];
        in[5] = b[1];
        std::memcpy(in + 6, d, sizeof d);
    });
    const int lane = t_run->current & 31, slot = int(g & 1);
    WarpState& w = t_run->warps[t_run->current >> 5];
    if (first_after(w, g)) {  // the whole tile
        auto bf = [](uint32_t word, int half) { return __uint_as_float((half ? word >> 16 : word & 0xffffu) << 16); };
        float A[16][16], B[16][8];
        for (int l = 0; l < 32; ++l) {
            const uint32_t* in = w.mma_in[slot][l];
            const int grp = l >> 2, tig = l & 3;
            for (int e = 0; e < 2; ++e) {
                A[grp][2 * tig + e] = bf(in[0], e);
                A[grp + 8][2 * tig + e] = bf(in[1], e);
                A[grp][2 * tig + 8 + e] = bf(in[2], e);
                A[grp + 8][2 * tig + 8 + e] = bf(in[3], e);
                B[2 * tig + e][grp] = bf(in[4], e);
                B[2 * tig + 8 + e][grp] = bf(in[5], e);
            }
        }
        for (int l = 0; l < 32; ++l) {
            const int grp = l >> 2, tig = l & 3;
            for (int e = 0; e < 4; ++e) {
                const int row = grp + (e >= 2 ? 8 : 0), col = 2 * tig + (e & 1);
                float s;  // products of bf16 values are exact in fp32
                std::memcpy(&s, &w.mma_in[slot][l][6 + e], 4);
                for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
                w.mma_out[slot][l][e] = s;
            }
        }
    }
    std::memcpy(d, w.mma_out[slot][lane], sizeof d);
}

unsigned char* dynamic_smem() { return g_block->dynamic_smem; }

// What shared memory holds before a block writes it: 0xA5 bytes, or with
// CETUS_EMU_SHARED_FILL=nan 0xFF bytes (NaN as fp32 and bf16, so a product of
// zero with a stale value shows).
int shared_fill() {
    static const int fill = [] {
        const char* e = std::getenv("CETUS_EMU_SHARED_FILL");
        return e && std::string(e) == "nan" ? 0xFF : 0xA5;
    }();
    return fill;
}

namespace {

bool copies_land_at_issue() {
    static const bool at_issue = [] {
        const char* e = std::getenv("CETUS_EMU_ASYNC");
        return e && std::string(e) == "issue";
    }();
    return at_issue;
}

void land(const AsyncCopy& c) {
    std::memcpy(c.dst, c.src, c.bytes - c.zero_fill);
    if (c.zero_fill) std::memset(static_cast<char*>(c.dst) + (c.bytes - c.zero_fill), 0, c.zero_fill);
}

}  // namespace

void pipeline_copy(void* dst, const void* src, size_t bytes, size_t zero_fill) {
    if (!t_run || t_run->current < 0) fail("__pipeline_memcpy_async outside a kernel");
    if (zero_fill > bytes) fail("__pipeline_memcpy_async: zero_fill larger than the copy");
    if (bytes != 4 && bytes != 8 && bytes != 16) fail("__pipeline_memcpy_async: a copy of 4, 8 or 16 bytes only");
    if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes)
        fail(("__pipeline_memcpy_async: a " + std::to_string(bytes) + "-byte copy from or to an address not aligned to it").c_str());
    const AsyncCopy c{dst, src, bytes, zero_fill};
    if (copies_land_at_issue()) land(c);
    else t_run->fibers[size_t(t_run->current)].open_copies.push_back(c);
}

void pipeline_commit() {
    if (!t_run || t_run->current < 0) fail("__pipeline_commit outside a kernel");
    Fiber& f = t_run->fibers[size_t(t_run->current)];
    f.copy_groups.push_back(std::move(f.open_copies));
    f.open_copies.clear();
}

void pipeline_wait_prior(size_t n) {
    if (!t_run || t_run->current < 0) fail("__pipeline_wait_prior outside a kernel");
    Fiber& f = t_run->fibers[size_t(t_run->current)];
    if (f.copy_groups.size() <= n) return;
    const size_t done = f.copy_groups.size() - n;
    for (size_t g = 0; g < done; ++g)
        for (const AsyncCopy& c : f.copy_groups[g]) land(c);
    f.copy_groups.erase(f.copy_groups.begin(), f.copy_groups.begin() + std::ptrdiff_t(done));
}

namespace {

void thread_exited() {
    BlockRun& r = *t_run;
    const int me = r.current;
    r.exited[size_t(me)] = 1;
    r.fibers[size_t(me)].state = FiberState::Done;
    --r.live;
    WarpState& w = r.warps[me >> 5];
    if (w.arrived > 0 && (w.mask >> (me & 31) & 1u))
        fail("a lane exited while its warp waits for it in a collective (__syncwarp or a shuffle)");
    if (r.arrived > 0 && r.arrived == r.live) {
        r.arrived = 0;
        ++r.gen;
    }
}

}  // namespace
}  // namespace cuda_emu

extern "C" void cuda_emu_fiber_main(void*) {
    using namespace cuda_emu;
#if CETUS_EMU_ASAN
    // A fiber's first run: the switch into it ends here. The first fiber of a block
    // was started from the scheduler, whose stack ASan names here.
    const void* from_bottom = nullptr;
    size_t from_size = 0;
    __sanitizer_finish_switch_fiber(nullptr, &from_bottom, &from_size);
    if (!t_run->scheduler_bottom) {
        t_run->scheduler_bottom = from_bottom;
        t_run->scheduler_size = from_size;
    }
#endif
    (*t_run->body)();
    thread_exited();
    switch_away();
    fail("a finished fiber was resumed");
}

namespace cuda_emu {
namespace {

cudaError_t g_last_error = cudaSuccess;

void set_error(cudaError_t e) {
    if (e != cudaSuccess && g_last_error == cudaSuccess) g_last_error = e;
}

std::map<const void*, std::string>& kernel_names() {
    static std::map<const void*, std::string> m;
    return m;
}
std::map<const void*, int>& max_dynamic_smem() {
    static std::map<const void*, int> m;
    return m;
}

void run_block(BlockRun& r) {
    unsigned char* base = stacks();
    const size_t each = k_stack_bytes + k_guard_bytes;
    r.fibers.assign(size_t(r.n), Fiber{});
    r.exited.assign(size_t(r.n), 0);
    r.gen = 0;
    r.arrived = 0;
    r.live = r.n;
    for (int i = 0; i < (r.n + 31) / 32; ++i) r.warps[i].reset();  // the block's warps
    for (int i = 0; i < r.n; ++i) {
        Fiber& f = r.fibers[size_t(i)];
        f.thread.linear = i;
        f.thread.idx = make_uint3(unsigned(i) % r.block.dim.x, unsigned(i) / r.block.dim.x % r.block.dim.y,
                                  unsigned(i) / (r.block.dim.x * r.block.dim.y));
        // The first switch pops six registers (r12 = the fiber) and returns into cuda_emu_fiber_start
        // with the stack 16-byte aligned.
        f.stack_bottom = base + each * size_t(i) + k_guard_bytes;
#if CETUS_EMU_ASAN
        ASAN_UNPOISON_MEMORY_REGION(f.stack_bottom, k_stack_bytes);
#endif
        auto* top = reinterpret_cast<uint64_t*>(base + each * size_t(i) + each);
        uint64_t* sp = top - 9;
        sp[0] = sp[1] = sp[2] = 0;                   // r15, r14, r13
        sp[3] = reinterpret_cast<uint64_t>(&f);     // r12
        sp[4] = sp[5] = 0;                           // rbx, rbp
        sp[6] = reinterpret_cast<uint64_t>(&cuda_emu_fiber_start);
        f.sp = sp;
    }
    r.current = reverse_order() ? r.n - 1 : 0;
    threadIdx = r.fibers[size_t(r.current)].thread.idx;
    r.scheduler_bottom = nullptr;  // learnt again: blocks run on several host threads
    switch_stack(&r.scheduler_sp, r.fibers[size_t(r.current)].sp, r.fibers[size_t(r.current)].stack_bottom,
                 k_stack_bytes);
    // Back here when no fiber can run: all finished, or the rest wait for each other.
    r.current = -1;
    int at_block = 0, at_warp = 0;
    for (const Fiber& f : r.fibers)
        if (f.state == FiberState::Waiting) (f.wait_gen == &r.gen ? at_block : at_warp)++;
    if (at_block + at_warp > 0)
        fail(("deadlock: " + std::to_string(at_block) + " threads wait at __syncthreads and " +
              std::to_string(at_warp) + " in warp collectives, never all met")
                 .c_str());
}

}  // namespace

const char* kernel_name(const void* fn) {
    auto it = kernel_names().find(fn);
    return it == kernel_names().end() ? "(unnamed kernel)" : it->second.c_str();
}

void name_kernel(const void* fn, const char* name) { kernel_names().emplace(fn, name); }

namespace {

// One launch: its blocks are shared out over the host threads (HostPool::for_each).
struct GridJob {
    dim3 grid, block;
    size_t smem = 0, smem_limit = 0;
    const std::function<void()>* body = nullptr;
    const char* name = "";
    uint64_t blocks = 0;
};

thread_local uint64_t t_block_serial = 0;

// Runs the job's k-th block (in reverse order with CETUS_EMU_ORDER=reverse) on the calling host
// thread, which has its own fibers, stacks, dynamic and static shared memory.
void run_one_block(const GridJob& job, uint64_t k) {
    if (t_run) fail("a launch from inside a kernel");
    thread_local std::unique_ptr<BlockRun> run = std::make_unique<BlockRun>();
    thread_local std::vector<unsigned char> dyn;
#if CETUS_EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(dyn.data(), dyn.size());  // the last launch's tail (poisoned below)
#endif
    if (dyn.size() < job.smem + 16) dyn.resize(job.smem + 16);
    auto* aligned = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(dyn.data()) + 15) & ~uintptr_t(15));
    BlockRun& r = *run;
    r.n = int(uint64_t(job.block.x) * job.block.y * job.block.z);
    r.body = job.body;
    r.name = job.name;
    const uint64_t i = reverse_order() ? job.blocks - 1 - k : k;
    r.block.idx = make_uint3(unsigned(i % job.grid.x), unsigned(i / job.grid.x % job.grid.y),
                             unsigned(i / (uint64_t(job.grid.x) * job.grid.y)));
    r.block.dim = job.block;
    r.block.grid = job.grid;
    r.block.dynamic_smem = aligned;
    r.block.dynamic_bytes = job.smem;
    r.block.smem_limit = job.smem_limit;
    r.block.static_bytes = 0;
    r.block.serial = ++t_block_serial;
    t_run = &r;
    g_block = &r.block;
    blockIdx = r.block.idx;
    blockDim = job.block;
    gridDim = job.grid;
    std::memset(aligned, shared_fill(), job.smem);  // every block's: not zero, so reads before writes show
#if CETUS_EMU_ASAN
    ASAN_POISON_MEMORY_REGION(aligned + job.smem, size_t(dyn.data() + dyn.size() - (aligned + job.smem)));
#endif
    run_block(r);
    t_run = nullptr;
    g_block = nullptr;
}

// The host threads that run a launch's blocks side by side (CETUS_EMU_THREADS, by default one
// per core, at most 8): blocks of one launch really run at the same time, as on a GPU, so the
// kernels' atomics and fences between blocks are exercised. Also the emulated cuBLAS's threads.
class HostPool {
public:
    static HostPool& get() {
        static HostPool pool;
        return pool;
    }

    // Calls fn(i) for every i in [0, count), shared out over the pool's threads (the caller's
    // included) through one counter; returns when all are done, also when the caller's share
    // throws. One caller at a time: the host thread that drives the backend.
    void for_each(uint64_t count, const std::function<void(uint64_t)>& fn) {
        std::atomic<uint64_t> next{0};
        const std::function<void()> work = [&] {
            for (uint64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < count;) fn(i);
        };
        if (workers_.empty() || count <= 1) {
            work();
            return;
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            work_ = &work;
            ++generation_;
            pending_ = workers_.size();
        }
        wake_.notify_all();
        struct WaitForWorkers {
            HostPool& pool;
            ~WaitForWorkers() {
                std::unique_lock<std::mutex> lock(pool.mutex_);
                pool.done_.wait(lock, [this] { return pool.pending_ == 0; });
                pool.work_ = nullptr;
            }
        } wait{*this};
        work();
    }

private:
    HostPool() {
        unsigned n = std::min(8u, std::max(1u, std::thread::hardware_concurrency()));
        if (const char* e = std::getenv("CETUS_EMU_THREADS")) n = unsigned(std::clamp(std::atoi(e), 1, 64));
        for (unsigned i = 1; i < n; ++i) workers_.emplace_back([this] { serve(); });
    }
    ~HostPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
    }

    void serve() {
        uint64_t seen = 0;
        for (;;) {
            const std::function<void()>* work = nullptr;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                work = work_;
            }
            (*work)();
            std::lock_guard<std::mutex> lock(mutex_);
            if (--pending_ == 0) done_.notify_one();
        }
    }

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    const std::function<void()>* work_ = nullptr;
    uint64_t generation_ = 0;
    size_t pending_ = 0;
    bool stop_ = false;
};

}  // namespace

void run_grid(dim3 grid, dim3 block, size_t smem, size_t smem_limit, std::function<void()> body, const char* name) {
    const uint64_t threads = uint64_t(block.x) * block.y * block.z;
    if (threads == 0 || threads > k_max_threads || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
        grid.z > 65535) {
        std::fprintf(stderr, "cuda emulator: invalid launch of %s: grid (%u,%u,%u), block (%u,%u,%u)\n", name, grid.x,
                     grid.y, grid.z, block.x, block.y, block.z);
        set_error(cudaErrorInvalidConfiguration);
        return;
    }
    GridJob job;
    job.grid = grid;
    job.block = block;
    job.smem = smem;
    job.smem_limit = smem_limit;
    job.body = &body;
    job.name = name;
    job.blocks = uint64_t(grid.x) * grid.y * grid.z;
    HostPool::get().for_each(job.blocks, [&job](uint64_t k) { run_one_block(job, k); });
}

int lane() { return t_run->current & 31; }

size_t launch_smem_limit(const void* fn, size_t smem, const char* name) {
    // Without the attribute 48 KiB in all; with it, its value for the dynamic part and the
    // multiprocessor's opt-in limit for both together.
    const auto it = max_dynamic_smem().find(fn);
    const bool opted_in = it != max_dynamic_smem().end();
    const size_t dynamic_limit = opted_in ? size_t(it->second) : 48 * 1024;
    if (smem > dynamic_limit) {
        std::fprintf(stderr, "cuda emulator: %s asks %zu bytes of dynamic shared memory, %zu allowed\n", name, smem,
                     dynamic_limit);
        set_error(cudaErrorInvalidValue);
        return 0;
    }
    return opted_in ? 227 * 1024 : 48 * 1024;
}

void* shared_storage(const void* site, size_t bytes, size_t align) {
    struct Slot {
        unsigned char* p = nullptr;
        uint64_t serial = 0;
    };
    thread_local std::map<const void*, Slot> slots;  // every declaration this host thread has met
    Block& b = *g_block;
    Slot& s = slots[site];
    if (!s.p) {
        s.p = static_cast<unsigned char*>(aligned_bytes(std::max<size_t>(align, 16), bytes));
        if (!s.p) fail("static shared memory: out of host memory");
    }
    if (s.serial != b.serial) {  // the block's first use of this declaration
        s.serial = b.serial;
        std::memset(s.p, shared_fill(), bytes);
        b.static_bytes += bytes;
        if (b.static_bytes + b.dynamic_bytes > b.smem_limit)
            fail(("static (" + std::to_string(b.static_bytes) + " bytes so far) and dynamic (" +
                  std::to_string(b.dynamic_bytes) + " bytes) shared memory exceed the " +
                  std::to_string(b.smem_limit) + " bytes a block may have")
                     .c_str());
    }
    return s.p;
}

// ---- streams, graphs and events --------------------------------------------------------------

struct Graph {
    std::vector<std::function<void()>> ops;
};

// A stream's work runs (or joins its capture's graph) at once, in the order the host
// enqueues it; with CETUS_EMU_STREAMS=lazy each stream's work waits in a queue until
// something needs it: a stream waiting on one of its events (the waiting stream's own
// queue goes first), a synchronisation, a synchronous copy or a free. Between a fork
// and its join the second stream's work then runs after everything the first enqueued
// meanwhile, where at once runs it before: a result that differs between the two shows
// work on the two streams touching the same memory.
// Captures follow the runtime's rules: a stream waiting on an event recorded in a capture
// joins that capture, and ending it fails (cudaErrorStreamCaptureUnjoined) while a
// joined stream has work that no stream of the capture waited for (fatal here: the
// backend would quietly fall back to direct launches).
namespace {
struct StreamState {
    bool capturing = false;
    std::unique_ptr<Graph> graph;  // the capture begun on this stream
    Graph* into = nullptr;         // while capturing: the graph its work joins (its own or the origin's)
    cudaStream_t origin = nullptr;  // the stream whose capture it joined (itself when it began it)
    // A stream that joined a capture: its work in it (the fork counted as one), and how much
    // of that another stream of the capture has waited for.
    uint64_t captured = 0, joined = 0;
    std::deque<std::function<void()>> queue;  // lazy: enqueued, not yet run (all in or all out of a capture)
    uint64_t enqueued = 0, done = 0;          // counts of work enqueued and run (or recorded)
};
std::map<cudaStream_t, StreamState>& streams() {
    static std::map<cudaStream_t, StreamState> m;
    return m;
}
bool any_capture() {
    for (auto& [s, st] : streams())
        if (st.capturing) return true;
    return false;
}
bool lazy_streams() {
    static const bool on = [] {
        const char* e = std::getenv("CETUS_EMU_STREAMS");
        return e && std::strcmp(e, "lazy") == 0;
    }();
    return on;
}
// Runs (or records into its capture) what the stream enqueued, up to `upto` of its count.
void run_queue(StreamState& st, uint64_t upto) {
    while (st.done < upto && !st.queue.empty()) {
        std::function<void()> op = std::move(st.queue.front());
        st.queue.pop_front();
        ++st.done;
        if (st.capturing) st.into->ops.push_back(std::move(op));
        else op();
    }
}
void run_all_queues() {
    for (auto& [s, st] : streams()) run_queue(st, st.enqueued);
}
}  // namespace

void record_or_run(cudaStream_t s, std::function<void()> op) {
    auto it = streams().find(s);
    if (it == streams().end()) {  // the default stream: after everything enqueued before it
        run_all_queues();
        op();
        return;
    }
    StreamState& st = it->second;
    ++st.enqueued;
    if (st.capturing) ++st.captured;
    if (lazy_streams()) {
        st.queue.push_back(std::move(op));
        return;
    }
    ++st.done;
    if (st.capturing) st.into->ops.push_back(std::move(op));
    else op();
}

cudaError_t segmented_sort_pairs_descending(void* temp, size_t& temp_bytes, const float* keys_in, float* keys_out,
                                            const int32_t* values_in, int32_t* values_out, int num_items,
                                            int num_segments, const int32_t* begin, const int32_t* end, int begin_bit,
                                            int end_bit, cudaStream_t s) {
    if (!temp) {
        temp_bytes = 256;
        return cudaSuccess;
    }
    if (begin_bit != 0 || end_bit != 32) return cudaErrorInvalidValue;
    record_or_run(s, [=] {
        // CUB's radix order of float keys: the bits flipped so that unsigned order is numeric order.
        auto radix = [](float f) {
            uint32_t b;
            std::memcpy(&b, &f, 4);
            return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
        };
        std::vector<int> order;
        for (int seg = 0; seg < num_segments; ++seg) {
            const int b0 = begin[seg], b1 = end[seg];
            if (b0 < 0 || b1 > num_items || b0 > b1) fail("segmented sort: a segment outside the items");
            order.resize(size_t(b1 - b0));
            std::iota(order.begin(), order.end(), b0);
            std::stable_sort(order.begin(), order.end(),
                             [&](int a, int b) { return radix(keys_in[a]) > radix(keys_in[b]); });
            std::vector<float> k(order.size());
            std::vector<int32_t> v(order.size());
            for (size_t i = 0; i < order.size(); ++i) {
                k[i] = keys_in[order[i]];
                v[i] = values_in[order[i]];
            }
            std::copy(k.begin(), k.end(), keys_out + b0);
            std::copy(v.begin(), v.end(), values_out + b0);
        }
    });
    return cudaSuccess;
}

}  // namespace cuda_emu

// ---- the CUDA runtime API ------------------------------------------------------------------------

using cuda_emu::record_or_run;
using cuda_emu::aligned_bytes;

namespace {

std::map<void*, size_t>& allocations() {  // device pointer -> bytes
    static std::map<void*, size_t> m;
    return m;
}
size_t g_used = 0;

}  // namespace

size_t cuda_emu::allocation_bytes(const void* p) {
    const auto it = allocations().find(const_cast<void*>(p));
    return it == allocations().end() ? 0 : it->second;
}

// (Kernels only read the map: the host allocates and frees between launches.)
void cuda_emu::check_device_range(const void* p, size_t bytes, const char* what) {
    const auto& m = allocations();
    auto it = m.upper_bound(const_cast<void*>(p));
    const auto at = reinterpret_cast<uintptr_t>(p);
    if (it != m.begin()) {
        --it;
        const auto start = reinterpret_cast<uintptr_t>(it->first);
        if (at >= start && at - start <= it->second && bytes <= it->second - (at - start)) return;
    }
    fail((std::string(what) + ": " + std::to_string(bytes) + " bytes at an address outside every device allocation")
             .c_str());
}

namespace {

// Freed allocations of 64 MiB and more, kept (up to 4 GiB in all) for the next
// cudaMalloc of the same size: a comparison that creates backend after backend on
// V2-Lite's 2 GiB of weights otherwise spends a tenth of its time faulting fresh
// pages in. Not under ASan, which should see a read of freed device memory.
constexpr size_t k_keep_min = size_t(64) << 20, k_keep_total = size_t(4) << 30;
std::multimap<size_t, void*>& kept() {
    static std::multimap<size_t, void*> m;
    return m;
}
size_t g_kept = 0;

void* take_kept(size_t bytes) {
    auto it = kept().find(bytes);
    if (it == kept().end()) return nullptr;
    void* p = it->second;
    kept().erase(it);
    g_kept -= bytes;
    return p;
}

void keep_or_free(void* p, size_t bytes) {
    if (CETUS_EMU_ASAN || bytes < k_keep_min) {
        std::free(p);
        return;
    }
    while (g_kept + bytes > k_keep_total && !kept().empty()) {  // the smallest kept go first
        g_kept -= kept().begin()->first;
        std::free(kept().begin()->second);
        kept().erase(kept().begin());
    }
    if (g_kept + bytes > k_keep_total) {
        std::free(p);
        return;
    }
    kept().emplace(bytes, p);
    g_kept += bytes;
}

size_t device_bytes() {
    static const size_t total = [] {
        const char* e = std::getenv("CETUS_EMU_MEMORY_MIB");
        return size_t(e ? std::strtoull(e, nullptr, 10) : 8192) << 20;
    }();
    return total;
}

cudaError_t capture_forbids(const char* what) {
    if (!cuda_emu::any_capture()) {
        cuda_emu::run_all_queues();  // (synchronous calls see everything enqueued before them)
        return cudaSuccess;
    }
    std::fprintf(stderr, "cuda emulator: %s while a stream is being captured\n", what);
    return cudaErrorStreamCaptureUnsupported;
}

}  // namespace

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDevice(int* device) {
    *device = 0;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
    if (device != 0) return cudaErrorInvalidDevice;
    *p = cudaDeviceProp{};
    std::snprintf(p->name, sizeof p->name, "CUDA emulator (CPU)");
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    p->totalGlobalMem = device_bytes();
    p->sharedMemPerBlock = 48 * 1024;
    p->sharedMemPerBlockOptin = 227 * 1024;
    p->sharedMemPerMultiprocessor = 228 * 1024;
    p->maxThreadsPerBlock = 1024;
    p->warpSize = 32;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->l2CacheSize = 50 * 1024 * 1024;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}
cudaError_t cudaGetLastError() {
    const cudaError_t e = cuda_emu::g_last_error;
    cuda_emu::g_last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError() { return cuda_emu::g_last_error; }
const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureUnjoined: return "capture unjoined";
    case cudaErrorStreamCaptureIsolation: return "dependency created on uncaptured work in another stream";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    default: return "emulated CUDA error";
    }
}
const char* cudaGetErrorName(cudaError_t e) { return cudaGetErrorString(e); }

cudaError_t cudaMalloc(void** p, size_t bytes) {
    if (cudaError_t e = capture_forbids("cudaMalloc"); e != cudaSuccess) return e;
    *p = nullptr;
    if (bytes > device_bytes() - g_used) return cudaErrorMemoryAllocation;
    void* q = take_kept(bytes);
    if (!q) q = aligned_bytes(256, bytes);
    if (!q) return cudaErrorMemoryAllocation;
    std::memset(q, 0xA5, bytes);  // not zero: reads of unwritten memory show
    allocations()[q] = bytes;
    g_used += bytes;
    *p = q;
    return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
    if (!p) return cudaSuccess;
    cuda_emu::run_all_queues();  // (cudaFree waits for the device)
    auto it = allocations().find(p);
    if (it == allocations().end()) return cudaErrorInvalidValue;
    g_used -= it->second;
    keep_or_free(p, it->second);
    allocations().erase(it);
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
    *total = device_bytes();
    *free_bytes = device_bytes() - g_used;
    return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned int) {
    *p = aligned_bytes(256, bytes);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaHostAlloc(p, bytes, 0); }
cudaError_t cudaFreeHost(void* p) {
    cuda_emu::run_all_queues();
    std::free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
    if (cudaError_t e = capture_forbids("cudaMemcpy"); e != cudaSuccess) return e;
    if (bytes) std::memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t s) {
    record_or_run(s, [=] {
        if (bytes) std::memmove(dst, src, bytes);
    });
    return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind, cudaStream_t s) {
    if (width > dpitch || width > spitch) return cudaErrorInvalidPitchValue;
    record_or_run(s, [=] {
        for (size_t r = 0; r < height; ++r)
            std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
    });
    return cudaSuccess;
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
    if (cudaError_t e = capture_forbids("cudaMemset"); e != cudaSuccess) return e;
    std::memset(dst, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t s) {
    record_or_run(s, [=] { std::memset(dst, value, bytes); });
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
    static uintptr_t next = 0x1000;
    *s = reinterpret_cast<cudaStream_t>(next += 0x10);
    cuda_emu::streams()[*s];
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    cuda_emu::run_all_queues();
    cuda_emu::streams().erase(s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    auto it = cuda_emu::streams().find(s);
    if (it != cuda_emu::streams().end() && it->second.capturing) {
        std::fprintf(stderr, "cuda emulator: cudaStreamSynchronize on a capturing stream\n");
        return cudaErrorStreamCaptureUnsupported;
    }
    cuda_emu::run_all_queues();
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return capture_forbids("cudaDeviceSynchronize"); }
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
    auto& st = cuda_emu::streams()[s];
    if (st.capturing) return cudaErrorIllegalState;
    cuda_emu::run_queue(st, st.enqueued);  // (work enqueued before the capture is not part of it)
    st.capturing = true;
    st.graph = std::make_unique<cuda_emu::Graph>();
    st.into = st.graph.get();
    st.origin = s;
    st.captured = st.joined = 0;
    return cudaSuccess;
}
// Ends the capture begun on s: the streams that joined it leave it; each must have had
// its last captured work waited for by another stream of the capture (the runtime's
// cudaErrorStreamCaptureUnjoined, fatal here).
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
    auto& st = cuda_emu::streams()[s];
    if (!st.capturing || st.origin != s) return cudaErrorIllegalState;
    cuda_emu::run_queue(st, st.enqueued);
    for (auto& [other, os] : cuda_emu::streams()) {
        if (other == s || !os.capturing || os.origin != s) continue;
        cuda_emu::run_queue(os, os.enqueued);
        // (The runtime's error would turn the backend's graphs off quietly; here it stops.)
        if (os.captured > os.joined) cuda_emu::fail("a stream forked in a capture was not joined back before its end");
        os.capturing = false;
        os.into = nullptr;
        os.origin = nullptr;
    }
    st.capturing = false;
    st.into = nullptr;
    st.origin = nullptr;
    *graph = reinterpret_cast<cudaGraph_t>(st.graph.release());
    return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
    auto it = cuda_emu::streams().find(s);
    *status = it != cuda_emu::streams().end() && it->second.capturing ? cudaStreamCaptureStatusActive
                                                                       : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
    *exec = reinterpret_cast<cudaGraphExec_t>(new cuda_emu::Graph(*reinterpret_cast<cuda_emu::Graph*>(graph)));
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (cuda_emu::any_capture()) {
        std::fprintf(stderr, "cuda emulator: cudaGraphLaunch while a stream is being captured\n");
        return cudaErrorStreamCaptureUnsupported;
    }
    const cuda_emu::Graph* g = reinterpret_cast<cuda_emu::Graph*>(exec);
    record_or_run(s, [g] {
        for (auto& op : g->ops) op();
    });
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete reinterpret_cast<cuda_emu::Graph*>(g);
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t g) {
    delete reinterpret_cast<cuda_emu::Graph*>(g);
    return cudaSuccess;
}

namespace {
struct Event {
    std::chrono::steady_clock::time_point at;
    bool recorded = false;
    cudaStream_t stream = nullptr;  // where it was last recorded
    uint64_t enqueued = 0;          // lazy: that stream's count of work at the record
    cuda_emu::Graph* capture = nullptr;  // the capture it was recorded in (null: outside any)
    uint64_t captured = 0;               // that stream's work in the capture at the record
};
}  // namespace
cudaError_t cudaEventCreate(cudaEvent_t* e) {
    *e = reinterpret_cast<cudaEvent_t>(new Event{});
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete reinterpret_cast<Event*>(e);
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    Event* ev = reinterpret_cast<Event*>(e);
    auto it = cuda_emu::streams().find(s);
    ev->recorded = true;
    ev->stream = s;
    ev->capture = nullptr;
    ev->enqueued = ev->captured = 0;
    if (it != cuda_emu::streams().end()) {
        cuda_emu::StreamState& st = it->second;
        if (st.capturing) {  // (in a capture an event marks the stream's work so far; nothing runs)
            ev->capture = st.into;
            ev->captured = st.captured;
            ev->enqueued = st.enqueued;
            return cudaSuccess;
        }
        ev->enqueued = st.enqueued + 1;  // (its own record included)
    }
    record_or_run(s, [ev] { ev->at = std::chrono::steady_clock::now(); });
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) {
    cuda_emu::run_all_queues();
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t) {
    cuda_emu::run_all_queues();
    return cudaSuccess;
}
// w's later work follows what the event's stream had enqueued at its record. An event
// recorded in a capture brings w into that capture (a fork) or, when w is in it already,
// marks the recording stream's work so far as joined.
cudaError_t cudaStreamWaitEvent(cudaStream_t w, cudaEvent_t e, unsigned int) {
    Event* ev = reinterpret_cast<Event*>(e);
    auto& streams = cuda_emu::streams();
    auto wi = streams.find(w);
    if (wi == streams.end()) {  // the default stream: after everything enqueued before
        if (ev->capture) cuda_emu::fail("the default stream waits on an event recorded in a capture");
        cuda_emu::run_all_queues();
        return cudaSuccess;
    }
    cuda_emu::StreamState& ws = wi->second;
    auto src = streams.find(ev->stream);
    if (ev->capture) {
        if (ws.capturing && ws.into != ev->capture) cuda_emu::fail("a stream waits on an event of another capture");
        if (!ws.capturing) {  // a fork
            cuda_emu::run_queue(ws, ws.enqueued);  // (its earlier work is not part of the capture)
            ws.capturing = true;
            ws.into = ev->capture;
            ws.origin = src->second.origin;
            ws.captured = 1;
            ws.joined = 0;
        } else if (ev->stream != w) {  // a join (lazy: the waiting stream's work first)
            cuda_emu::run_queue(ws, ws.enqueued);
            cuda_emu::run_queue(src->second, ev->enqueued);
            src->second.joined = std::max(src->second.joined, ev->captured);
        }
        return cudaSuccess;
    }
    if (ws.capturing && ev->recorded) cuda_emu::fail("a capturing stream waits on an event recorded outside its capture");
    if (src != streams.end() && ev->stream != w) {
        cuda_emu::run_queue(ws, ws.enqueued);      // the waiting stream's own work first,
        cuda_emu::run_queue(src->second, ev->enqueued);  // then what it waits for
    }
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = std::chrono::duration<float, std::milli>(reinterpret_cast<Event*>(b)->at - reinterpret_cast<Event*>(a)->at)
              .count();
    return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* fn, cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value > 227 * 1024) return cudaErrorInvalidValue;
        cuda_emu::max_dynamic_smem()[fn] = value;
    }
    return cudaSuccess;
}
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, const void*) {
    *a = cudaFuncAttributes{};
    a->maxThreadsPerBlock = 1024;
    a->numRegs = 64;
    a->maxDynamicSharedSizeBytes = 48 * 1024;
    a->binaryVersion = a->ptxVersion = CETUS_EMU_ARCH / 10;  // what the kernel files see as __CUDA_ARCH__
    return cudaSuccess;
}
// Programmatic dependent launch: refused, so the backend takes its plain launches.
cudaError_t cudaLaunchKernelExC(const cudaLaunchConfig_t*, const void*, void**) {
    cuda_emu::set_error(cudaErrorNotSupported);
    return cudaErrorNotSupported;
}

}  // extern "C"

// ---- cuBLAS: column-major products with fp32 sums ----------------------------------------------

struct cublasContext {
    cudaStream_t stream = nullptr;
};

namespace {

float load(const void* p, cudaDataType t, size_t i) {
    switch (t) {
    case CUDA_R_32F: return static_cast<const float*>(p)[i];
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case CUDA_R_16F: return __half2float(static_cast<const __half*>(p)[i]);
    default: cuda_emu::fail("cuBLAS: an operand type the emulator lacks");
    }
}
void store(void* p, cudaDataType t, size_t i, float v) {
    switch (t) {
    case CUDA_R_32F: static_cast<float*>(p)[i] = v; break;
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v); break;
    case CUDA_R_16F: static_cast<__half*>(p)[i] = __float2half(v); break;
    default: cuda_emu::fail("cuBLAS: a result type the emulator lacks");
    }
}

// An fp32 operand of a TF32 product: its mantissa rounded to 10 bits, to nearest
// (ties to even; the hardware's rounding is not documented, so this is the model).
float to_tf32(float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return v;  // inf, NaN
    u = (u + 0xfffu + ((u >> 13) & 1u)) & 0xffffe000u;
    std::memcpy(&v, &u, 4);
    return v;
}

cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                    const float* alpha, const void* A, cudaDataType at, int lda, long long sa, const void* B,
                    cudaDataType bt, int ldb, long long sb, const float* beta, void* C, cudaDataType ct, int ldc,
                    long long sc, int batch, bool tf32 = false) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0 || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (ldc < std::max(1, m) || lda < std::max(1, ta == CUBLAS_OP_N ? m : k) ||
        ldb < std::max(1, tb == CUBLAS_OP_N ? k : n))
        return CUBLAS_STATUS_INVALID_VALUE;
    if ((ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    const float al = *alpha, be = *beta;
    record_or_run(h->stream, [=] {
        // op(B)'s columns as rows of k in fp32 (exact for bf16 and fp16), and op(A)'s rows the
        // same way, 16 at a time by each host thread: each C(i, j) is a sum over two contiguous
        // rows, in order l = 0 .. k-1.
        std::vector<float> b_cols(size_t(n) * k);
        for (int b = 0; b < batch; ++b) {
            const size_t oa = size_t(sa) * b, ob = size_t(sb) * b, oc = size_t(sc) * b;
            for (int j = 0; j < n; ++j)
                for (int l = 0; l < k; ++l)
                    b_cols[size_t(j) * k + l] =
                        load(B, bt, ob + (tb == CUBLAS_OP_N ? size_t(j) * ldb + l : size_t(l) * ldb + j));
            if (tf32)
                for (float& v : b_cols) v = to_tf32(v);
            constexpr int kRows = 16;
            cuda_emu::HostPool::get().for_each(uint64_t(m + kRows - 1) / kRows, [&](uint64_t c) {
                thread_local std::vector<float> a_rows;
                a_rows.resize(size_t(kRows) * k);
                const int i0 = int(c) * kRows, ni = std::min(kRows, m - i0);
                for (int r = 0; r < ni; ++r)
                    for (int l = 0; l < k; ++l)
                        a_rows[size_t(r) * k + l] =
                            load(A, at, oa + (ta == CUBLAS_OP_N ? size_t(l) * lda + i0 + r : size_t(i0 + r) * lda + l));
                if (tf32)
                    for (int l = 0; l < ni * k; ++l) a_rows[size_t(l)] = to_tf32(a_rows[size_t(l)]);
                for (int r = 0; r < ni; ++r) {
                    const float* ar = a_rows.data() + size_t(r) * k;
                    for (int j0 = 0; j0 < n; j0 += 4) {
                        // Four columns side by side (four independent sums, each in order).
                        const int nj = std::min(4, n - j0);
                        const float* bc[4];
                        for (int q = 0; q < 4; ++q) bc[q] = b_cols.data() + size_t(j0 + std::min(q, nj - 1)) * k;
                        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                        for (int l = 0; l < k; ++l)
                            for (int q = 0; q < 4; ++q) acc[q] += ar[l] * bc[q][l];
                        for (int q = 0; q < nj; ++q) {
                            const size_t ic = oc + size_t(j0 + q) * ldc + size_t(i0 + r);
                            // beta == 0: C is not read (it may hold NaNs), as cuBLAS promises.
                            store(C, ct, ic, al * acc[q] + (be == 0.0f ? 0.0f : be * load(C, ct, ic)));
                        }
                    }
                }
            });
        }
    });
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* h) {
    *h = new cublasContext{};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void*, size_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char* cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "emulated cuBLAS error";
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType at, int lda, const void* B, cudaDataType bt,
                            int ldb, const void* beta, void* C, cudaDataType ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t) {
    return gemm(h, ta, tb, m, n, k, static_cast<const float*>(alpha), A, at, lda, 0, B, bt, ldb, 0,
                static_cast<const float*>(beta), C, ct, ldc, 0, 1, compute == CUBLAS_COMPUTE_32F_FAST_TF32);
}
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void* alpha, const void* A, cudaDataType at, int lda,
                                          long long sa, const void* B, cudaDataType bt, int ldb, long long sb,
                                          const void* beta, void* C, cudaDataType ct, int ldc, long long sc,
                                          int batch, cublasComputeType_t compute, cublasGemmAlgo_t) {
    return gemm(h, ta, tb, m, n, k, static_cast<const float*>(alpha), A, at, lda, sa, B, bt, ldb, sb,
                static_cast<const float*>(beta), C, ct, ldc, sc, batch, compute == CUBLAS_COMPUTE_32F_FAST_TF32);
}
cublasStatus_t cublasSgemm_v2(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                              float* C, int ldc) {
    return gemm(h, ta, tb, m, n, k, alpha, A, CUDA_R_32F, lda, 0, B, CUDA_R_32F, ldb, 0, beta, C, CUDA_R_32F, ldc, 0,
                1);
}
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* A, int lda, long long sa,
                                         const float* B, int ldb, long long sb, const float* beta, float* C, int ldc,
                                         long long sc, int batch) {
    return gemm(h, ta, tb, m, n, k, alpha, A, CUDA_R_32F, lda, sa, B, CUDA_R_32F, ldb, sb, beta, C, CUDA_R_32F, ldc,
                sc, batch);
}

}  // extern "C"
