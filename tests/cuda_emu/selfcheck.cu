// The CUDA emulator's own check: kernels whose right answer or fault is known,
// so that the emulator's barriers, shuffles, atomics, blocks side by side and
// fault reports are known to work before they vouch for the CUDA backend.
// Each faulty kernel runs in a child process (this program run again with
// --case NAME), which the emulator must stop with the expected message.
// Written in CUDA and rewritten by rewrite.pl like the backend's own kernels;
// nvcc would take it as it is.
#include <cuda_runtime.h>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "device_math.cuh"
#include "last_block.cuh"
#include "mma_bf16.cuh"

#include <cuda_pipeline.h>
#include <mma.h>

namespace {

using cetus::cuda::last_block_arrived;

constexpr int kBlock = 256;

// Each block sums its slice (warp shuffles, then shared memory across warps);
// the last block to finish adds the blocks' sums.
__global__ void sum_kernel(const float* in, float* block_sums, float* total, uint32_t* counter, int n) {
    __shared__ float warp_sums[kBlock / 32];
    const int i = int(blockIdx.x) * kBlock + int(threadIdx.x);
    float v = i < n ? in[i] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int w = 0; w < kBlock / 32; ++w) s += warp_sums[w];
        block_sums[blockIdx.x] = s;
    }
    if (last_block_arrived(counter) && threadIdx.x == 0) {
        float s = 0.0f;
        for (unsigned b = 0; b < gridDim.x; ++b) s += __ldcg(&block_sums[b]);
        *total = s;
    }
}

// Appends tag to the log (log[0]: the count).
__global__ void tag_kernel(int* log, int tag) {
    if (threadIdx.x == 0) log[++log[0]] = tag;
}

// Every thread counts into one word from every block.
__global__ void count_kernel(unsigned* count) { atomicAdd(count, 1u); }

// Reads a neighbour's shared-memory write: with the barrier (fixed) or without it (a race).
template <bool kBarrier>
__global__ void neighbour_kernel(int* out) {
    extern __shared__ int s[];
    s[threadIdx.x] = int(threadIdx.x);
    if (kBarrier) __syncthreads();
    out[threadIdx.x] = s[threadIdx.x ^ 1u];
}

// Two tiles copied in with cp.async, one commit group each, the second still in
// flight while the first is read (after waiting for all but one group and a
// barrier: right); kEarly reads the second one there too, before its wait (a
// race on a GPU: the emulator must show the data from before the copy).
template <bool kEarly>
__global__ void async_copy_kernel(const int4* in, int* out) {
    extern __shared__ int4 tiles[];  // [2][16] int4: two tiles of 64 ints
    tiles[threadIdx.x] = make_int4(-1, -1, -1, -1);
    tiles[16 + threadIdx.x] = make_int4(-1, -1, -1, -1);
    __syncthreads();
    for (int t = 0; t < 2; ++t) {
        __pipeline_memcpy_async(&tiles[16 * t + threadIdx.x], &in[16 * t + threadIdx.x], 16);
        __pipeline_commit();
    }
    const int* ints = reinterpret_cast<const int*>(tiles);
    const unsigned other = threadIdx.x ^ 1u;  // a neighbour's copy: the barrier matters too
    __pipeline_wait_prior(1);
    __syncthreads();
    for (int i = 0; i < 4; ++i) out[4 * threadIdx.x + i] = ints[4 * other + i];
    if (!kEarly) {
        __pipeline_wait_prior(0);
        __syncthreads();
    }
    for (int i = 0; i < 4; ++i) out[64 + 4 * threadIdx.x + i] = ints[64 + 4 * other + i];
}

// Static shared memory read before any thread of the block writes it: each
// block must see the fill, not what the block before it left.
__global__ void stale_shared_kernel(unsigned* seen) {
    __shared__ unsigned word;
    if (threadIdx.x == 0) seen[blockIdx.x] = word;
    __syncthreads();
    if (threadIdx.x == 0) word = blockIdx.x;
}

// Static and dynamic shared memory together over the 48 KiB a block may have
// without opting in.
__global__ void too_much_shared_kernel(int* out) {
    extern __shared__ int dyn[];
    __shared__ int big[8192];  // 32 KiB, plus 20 KiB dynamic
    big[threadIdx.x] = dyn[threadIdx.x] = 1;
    out[threadIdx.x] = big[threadIdx.x];
}

// Half the block waits at __syncthreads, the other half at a __syncwarp that
// needs the first half too.
__global__ void deadlock_kernel(int* out) {
    if (threadIdx.x < 16) __syncthreads();
    else __syncwarp(0xffffffffu);
    out[threadIdx.x] = 1;
}

// Lanes 16..31 leave; the rest shuffle with a mask that names them.
__global__ void exited_lane_kernel(int* out) {
    if (threadIdx.x >= 16) return;
    out[threadIdx.x] = __shfl_sync(0xffffffffu, int(threadIdx.x), 20);
}

// Lanes of one warp meet in a collective with different masks.
__global__ void mask_mismatch_kernel(int* out) {
    const unsigned mask = threadIdx.x == 0 ? 0xffffffffu : 0x7fffffffu;
    if (threadIdx.x < 31) __syncwarp(mask);
    out[threadIdx.x] = 1;
}

// A WMMA product whose lanes bring different tiles (lane 0 loads another row): the
// API wants the same arguments in the whole warp, so the emulator must stop it.
__global__ void wmma_divergent_kernel(int* out) {
    __shared__ __align__(32) __nv_bfloat16 tile[32 * 16];
    for (int i = int(threadIdx.x); i < 32 * 16; i += 32) tile[i] = __float2bfloat16(float(i % 7));
    __syncwarp();
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16, nvcuda::wmma::row_major> a;
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16, nvcuda::wmma::col_major> b;
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> c;
    nvcuda::wmma::load_matrix_sync(a, tile + (threadIdx.x == 0 ? 16 * 16 : 0), 16);
    nvcuda::wmma::load_matrix_sync(b, tile, 16);
    nvcuda::wmma::fill_fragment(c, 0.0f);
    nvcuda::wmma::mma_sync(c, a, b, c);
    out[threadIdx.x] = int(c.x[0]);
}

// device_math.cuh's warp reductions (one meeting on the emulator) against the
// same butterflies by explicit shuffles, in every warp of every block (blocks
// reuse the emulator's warp state); out: per warp and lane the six results of each.
__global__ void reduce_kernel(const float* in, float* fused, float* shuffled) {
    const int lane = int(threadIdx.x & 31);
    const int warp = int(blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32);
    const float* mine = in + 96 * warp;
    float v[3] = {mine[lane], mine[32 + lane], mine[64 + lane]};
    float s[3] = {v[0], v[1], v[2]};
    cetus::cuda::warp_sum_each(s);
    const float one = cetus::cuda::warp_sum(v[0]), mx = cetus::cuda::warp_max(v[1]);
    const float f[6] = {s[0], s[1], s[2], one, mx, cetus::cuda::warp_max(v[2])};
    float w[6] = {v[0], v[1], v[2], v[0], v[1], v[2]};
    for (int off = 16; off > 0; off >>= 1) {
        for (int j = 0; j < 4; ++j) w[j] += __shfl_xor_sync(0xffffffffu, w[j], off);
        for (int j = 4; j < 6; ++j) w[j] = fmaxf(w[j], __shfl_xor_sync(0xffffffffu, w[j], off));
    }
    for (int j = 0; j < 6; ++j) {
        fused[(warp * 6 + j) * 32 + lane] = f[j];
        shuffled[(warp * 6 + j) * 32 + lane] = w[j];
    }
}

// D = A B + C for A [16, 16], B [16, 8] (bf16 bits, row-major) and C [16, 8]
// (fp32), each lane loading its own fragment words as the PTX ISA lays them out.
__global__ void mma_kernel(const uint16_t* a, const uint16_t* b, const float* c, float* d) {
    const int lane = int(threadIdx.x), grp = lane >> 2, tig = lane & 3;
    auto pair = [](uint16_t lo, uint16_t hi) { return cetus::cuda::bf16_pair(lo, hi); };
    const uint32_t fa[4] = {pair(a[grp * 16 + 2 * tig], a[grp * 16 + 2 * tig + 1]),
                            pair(a[(grp + 8) * 16 + 2 * tig], a[(grp + 8) * 16 + 2 * tig + 1]),
                            pair(a[grp * 16 + 2 * tig + 8], a[grp * 16 + 2 * tig + 9]),
                            pair(a[(grp + 8) * 16 + 2 * tig + 8], a[(grp + 8) * 16 + 2 * tig + 9])};
    const uint32_t fb[2] = {pair(b[(2 * tig) * 8 + grp], b[(2 * tig + 1) * 8 + grp]),
                            pair(b[(2 * tig + 8) * 8 + grp], b[(2 * tig + 9) * 8 + grp])};
    float acc[4] = {c[grp * 8 + 2 * tig], c[grp * 8 + 2 * tig + 1], c[(grp + 8) * 8 + 2 * tig],
                    c[(grp + 8) * 8 + 2 * tig + 1]};
    cetus::cuda::mma_bf16_16816(acc, fa, fb);
    d[grp * 8 + 2 * tig] = acc[0];
    d[grp * 8 + 2 * tig + 1] = acc[1];
    d[(grp + 8) * 8 + 2 * tig] = acc[2];
    d[(grp + 8) * 8 + 2 * tig + 1] = acc[3];
}

// The blocks wait (boundedly) for each other: they all see the others arrive
// only when they run at the same time.
__global__ void together_kernel(unsigned* arrived, unsigned* saw_all, long long spins) {
    if (threadIdx.x != 0) return;
    atomicAdd(arrived, 1u);
    for (long long i = 0; i < spins; ++i)
        if (atomicAdd(arrived, 0u) == gridDim.x) {
            saw_all[blockIdx.x] = 1;
            return;
        }
}

// The integer intrinsics the GGUF decoders use, at known answers (the CUDA Math API's
// definitions): byte permutes and funnel shifts, a rotation among them.
__global__ void bits_kernel(unsigned* out) {
    out[0] = __byte_perm(0x33221100u, 0x77665544u, 0x5140u);
    out[1] = __byte_perm(0x33221100u, 0x77665544u, 0x7623u);
    out[2] = __funnelshift_r(0x89ABCDEFu, 0x01234567u, 8);
    out[3] = __funnelshift_r(0x89ABCDEFu, 0x01234567u, 40);  // the shift taken mod 32
    out[4] = __funnelshift_r(0x89ABCDEFu, 0x01234567u, 0);
    out[5] = __funnelshift_r(0x12345678u, 0x12345678u, 28);  // rotated left by 4
}

int g_failed = 0;

void check(bool ok, const std::string& what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    if (!ok) ++g_failed;
}

template <typename T>
T* device_alloc(size_t n) {
    void* p = nullptr;
    if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) {
        std::fprintf(stderr, "cuda_emu_selfcheck: cudaMalloc failed\n");
        std::exit(2);
    }
    return static_cast<T*>(p);
}

template <typename T>
std::vector<T> to_host(const T* d, size_t n) {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
}

void check_sum() {
    constexpr int n = 37 * kBlock + 101, blocks = (n + kBlock - 1) / kBlock;
    std::vector<float> h(n);
    double expect = 0.0;
    for (int i = 0; i < n; ++i) {
        h[size_t(i)] = float(i % 17) - 8.0f;  // small integers: every order of summation is exact
        expect += h[size_t(i)];
    }
    float* in = device_alloc<float>(n);
    float* sums = device_alloc<float>(blocks);
    float* total = device_alloc<float>(1);
    uint32_t* counter = device_alloc<uint32_t>(1);
    cudaMemcpy(in, h.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemset(counter, 0, sizeof(uint32_t));
    for (int rep = 0; rep < 20; ++rep) {
        cudaMemset(total, 0xff, sizeof(float));
        sum_kernel<<<blocks, kBlock>>>(in, sums, total, counter, n);
        const float got = to_host(total, 1)[0];
        const uint32_t left = to_host(counter, 1)[0];
        if (got != float(expect) || left != 0) {
            check(false, "sum over " + std::to_string(blocks) + " blocks (last block adds): " + std::to_string(got) +
                             ", expected " + std::to_string(expect) + ", counter left at " + std::to_string(left));
            return;
        }
    }
    check(true, "sum over " + std::to_string(blocks) + " blocks: shuffles, barrier, last block (20 runs)");
}

void check_count() {
    unsigned* count = device_alloc<unsigned>(1);
    cudaMemset(count, 0, sizeof(unsigned));
    count_kernel<<<dim3(64, 3, 2), dim3(32, 4)>>>(count);
    const unsigned got = to_host(count, 1)[0];
    check(got == 64u * 3 * 2 * 128, "atomicAdd from 384 blocks of 128 threads: " + std::to_string(got));
}

void check_neighbours() {
    int* out = device_alloc<int>(64);
    neighbour_kernel<true><<<1, 64, 64 * sizeof(int)>>>(out);
    std::vector<int> h = to_host(out, 64);
    bool right = true;
    for (int t = 0; t < 64; ++t) right = right && h[size_t(t)] == (t ^ 1);
    check(right, "a neighbour's shared write read after __syncthreads");
    neighbour_kernel<false><<<1, 64, 64 * sizeof(int)>>>(out);
    h = to_host(out, 64);
    int wrong = 0;
    for (int t = 0; t < 64; ++t) wrong += h[size_t(t)] != (t ^ 1);
    check(wrong > 0, "a neighbour's shared write read without a barrier shows (" + std::to_string(wrong) +
                         " of 64 reads wrong)");
}

void check_async_copies() {
    if (const char* e = std::getenv("CETUS_EMU_ASYNC"); e && std::string(e) == "issue") {
        std::printf("skip cp.async waits (CETUS_EMU_ASYNC=issue lands copies at once)\n");
        return;
    }
    std::vector<int> h_in(128);
    for (int i = 0; i < 128; ++i) h_in[size_t(i)] = 1000 + i;
    int* in = device_alloc<int>(128);
    cudaMemcpy(in, h_in.data(), 128 * sizeof(int), cudaMemcpyHostToDevice);
    int* out = device_alloc<int>(128);
    auto expected = [](int i) { return 1000 + (i / 64) * 64 + (((i % 64) / 4) ^ 1) * 4 + i % 4; };
    async_copy_kernel<false><<<1, 16, 32 * sizeof(int4)>>>(reinterpret_cast<const int4*>(in), out);
    std::vector<int> h = to_host(out, 128);
    int wrong = 0;
    for (int i = 0; i < 128; ++i) wrong += h[size_t(i)] != expected(i);
    check(wrong == 0, "cp.async tiles read after their waits and a barrier (" + std::to_string(wrong) + " wrong)");
    async_copy_kernel<true><<<1, 16, 32 * sizeof(int4)>>>(reinterpret_cast<const int4*>(in), out);
    h = to_host(out, 128);
    int first_wrong = 0, early_stale = 0;
    for (int i = 0; i < 64; ++i) first_wrong += h[size_t(i)] != expected(i);
    for (int i = 64; i < 128; ++i) early_stale += h[size_t(i)] == -1;
    check(first_wrong == 0 && early_stale == 64,
          "a cp.async tile read before its wait shows the old data (" + std::to_string(early_stale) +
              " of 64 reads stale)");
}

void check_mma() {
    // Small integers and halves: every product and sum is exact, so the order of the sums does not matter.
    std::vector<uint16_t> ha(16 * 16), hb(16 * 8);
    std::vector<float> hc(16 * 8);
    auto bits = [](float v) {
        uint32_t u;
        std::memcpy(&u, &v, 4);
        return uint16_t(u >> 16);
    };
    auto value = [](uint16_t b) {
        const uint32_t u = uint32_t(b) << 16;
        float v;
        std::memcpy(&v, &u, 4);
        return v;
    };
    for (int i = 0; i < 16 * 16; ++i) ha[size_t(i)] = bits(float((i * 7) % 11 - 5) * 0.5f);
    for (int i = 0; i < 16 * 8; ++i) hb[size_t(i)] = bits(float((i * 5) % 13 - 6));
    for (int i = 0; i < 16 * 8; ++i) hc[size_t(i)] = float(i % 3);
    uint16_t* a = device_alloc<uint16_t>(ha.size());
    uint16_t* b = device_alloc<uint16_t>(hb.size());
    float* c = device_alloc<float>(hc.size());
    float* d = device_alloc<float>(hc.size());
    cudaMemcpy(a, ha.data(), ha.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(b, hb.data(), hb.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(c, hc.data(), hc.size() * 4, cudaMemcpyHostToDevice);
    mma_kernel<<<1, 32>>>(a, b, c, d);
    const std::vector<float> got = to_host(d, hc.size());
    int wrong = 0;
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 8; ++j) {
            float want = hc[size_t(i * 8 + j)];
            for (int k = 0; k < 16; ++k) want += value(ha[size_t(i * 16 + k)]) * value(hb[size_t(k * 8 + j)]);
            wrong += got[size_t(i * 8 + j)] != want;
        }
    check(wrong == 0, "mma.m16n8k16 bf16 from the PTX fragment layout (" + std::to_string(wrong) + " of 128 wrong)");
}

void check_warp_reductions() {
    // Values of mixed sizes and signs, so that the order of the additions shows in the
    // bits; 8 blocks of 2 warps, each warp its own values.
    constexpr int kWarps = 16;
    std::vector<float> h(96 * kWarps);
    for (int i = 0; i < int(h.size()); ++i)
        h[size_t(i)] = float((i * 37) % 101 - 50) * (i % 7 == 0 ? 1e-7f : 0.37f) + float(i % 5) * 1e3f;
    float* in = device_alloc<float>(h.size());
    float* fused = device_alloc<float>(6 * 32 * kWarps);
    float* shuffled = device_alloc<float>(6 * 32 * kWarps);
    cudaMemcpy(in, h.data(), h.size() * 4, cudaMemcpyHostToDevice);
    reduce_kernel<<<kWarps / 2, 64>>>(in, fused, shuffled);
    const std::vector<float> a = to_host(fused, 6 * 32 * kWarps), b = to_host(shuffled, 6 * 32 * kWarps);
    check(std::memcmp(a.data(), b.data(), a.size() * 4) == 0,
          "warp_sum, warp_sum_each and warp_max from one meeting: the shuffles' bits in every lane of 16 warps");
}

void check_stale_shared() {
    // Many more blocks than host threads, so each host thread runs several; `seen` starts at zero,
    // so only the kernel's reads can make it 0xA5A5A5A5.
    constexpr int blocks = 64;
    unsigned* seen = device_alloc<unsigned>(blocks);
    cudaMemset(seen, 0, blocks * sizeof(unsigned));
    stale_shared_kernel<<<blocks, 32>>>(seen);
    const std::vector<unsigned> h = to_host(seen, blocks);
    int stale = 0;
    for (unsigned v : h) stale += v != 0xA5A5A5A5u;
    check(stale == 0, "static shared memory filled afresh for every block (" + std::to_string(stale) + " of " +
                          std::to_string(blocks) + " blocks did not see the fill)");
}

void check_bits() {
    unsigned* out = device_alloc<unsigned>(6);
    bits_kernel<<<1, 1>>>(out);
    const std::vector<unsigned> h = to_host(out, 6);
    const unsigned want[6] = {0x55114400u, 0x77662233u, 0x6789ABCDu, 0x6789ABCDu, 0x89ABCDEFu, 0x23456781u};
    bool ok = true;
    for (int i = 0; i < 6; ++i) ok = ok && h[size_t(i)] == want[i];
    char buf[160];
    std::snprintf(buf, sizeof buf, "__byte_perm and __funnelshift_r at known answers (%08x %08x %08x %08x %08x %08x)",
                  h[0], h[1], h[2], h[3], h[4], h[5]);
    check(ok, buf);
}

void check_together() {
    const char* threads = std::getenv("CETUS_EMU_THREADS");
    if (!threads || std::atoi(threads) < 2) {
        std::printf("skip blocks side by side (CETUS_EMU_THREADS is not 2 or more)\n");
        return;
    }
    unsigned* arrived = device_alloc<unsigned>(1);
    unsigned* saw = device_alloc<unsigned>(2);
    cudaMemset(arrived, 0, sizeof(unsigned));
    cudaMemset(saw, 0, 2 * sizeof(unsigned));
    together_kernel<<<2, 32>>>(arrived, saw, 2000000000LL);
    const std::vector<unsigned> h = to_host(saw, 2);
    check(h[0] == 1 && h[1] == 1, "two blocks run side by side (each sees the other arrive)");
}

// Two streams and the events of a fork and its join.
struct TwoStreams {
    cudaStream_t a = nullptr, b = nullptr;
    cudaEvent_t fork = nullptr, join = nullptr;
    TwoStreams() {
        cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking);
        cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking);
        cudaEventCreateWithFlags(&fork, cudaEventDisableTiming);
        cudaEventCreateWithFlags(&join, cudaEventDisableTiming);
    }
    // Tags 1 and 3 on stream a, 2 on stream b forked from a after 1 and joined back before 4.
    void fork_join(int* log, bool joined = true) const {
        tag_kernel<<<1, 32, 0, a>>>(log, 1);
        cudaEventRecord(fork, a);
        cudaStreamWaitEvent(b, fork, 0);
        tag_kernel<<<1, 32, 0, b>>>(log, 2);
        cudaEventRecord(join, b);
        tag_kernel<<<1, 32, 0, a>>>(log, 3);
        if (joined) cudaStreamWaitEvent(a, join, 0);
        tag_kernel<<<1, 32, 0, a>>>(log, 4);
    }
};

// Work on two streams, directly and as a captured graph: in the order enqueued (1 2 3 4),
// or with CETUS_EMU_STREAMS=lazy the forked stream's work after what the other enqueued
// until the join (1 3 2 4).
void check_streams() {
    const char* mode = std::getenv("CETUS_EMU_STREAMS");
    const bool lazy = mode && std::string(mode) == "lazy";
    const std::vector<int> want = lazy ? std::vector<int>{4, 1, 3, 2, 4} : std::vector<int>{4, 1, 2, 3, 4};
    const TwoStreams two;
    cudaStream_t a = two.a;
    int* log = device_alloc<int>(8);
    const auto order = [&](const char* how) {
        const std::vector<int> h = to_host(log, 5);
        char buf[160];
        std::snprintf(buf, sizeof buf, "two streams %s, %s: tags %d %d %d %d (%d)", how, lazy ? "lazy" : "at once",
                      h[1], h[2], h[3], h[4], h[0]);
        check(h == want, buf);
    };
    cudaMemsetAsync(log, 0, 8 * sizeof(int), a);
    two.fork_join(log);
    cudaStreamSynchronize(a);
    order("launched directly");
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    const bool begun = cudaStreamBeginCapture(a, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
    two.fork_join(log);
    const bool ended = begun && cudaStreamEndCapture(a, &graph) == cudaSuccess &&
                       cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    check(ended, "a fork joined back is captured");
    if (!ended) return;
    cudaMemsetAsync(log, 0, 8 * sizeof(int), a);
    cudaGraphLaunch(exec, a);
    cudaStreamSynchronize(a);
    order("as a captured graph");
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
}

int run_case(const std::string& name) {
    int* out = device_alloc<int>(64);
    if (name == "deadlock") deadlock_kernel<<<1, 32>>>(out);
    else if (name == "exited-lane") exited_lane_kernel<<<1, 32>>>(out);
    else if (name == "mask-mismatch") mask_mismatch_kernel<<<1, 32>>>(out);
    else if (name == "too-much-shared") too_much_shared_kernel<<<1, 32, 20 * 1024>>>(out);
    else if (name == "wmma-divergent") wmma_divergent_kernel<<<1, 32>>>(out);
    else if (name == "unjoined-fork") {
        const TwoStreams two;
        cudaGraph_t graph = nullptr;
        cudaStreamBeginCapture(two.a, cudaStreamCaptureModeThreadLocal);
        two.fork_join(out, false);
        cudaStreamEndCapture(two.a, &graph);
    } else {
        std::fprintf(stderr, "cuda_emu_selfcheck: no case %s\n", name.c_str());
        return 2;
    }
    return 0;  // the emulator let the faulty kernel finish
}

// Runs this program with --case name; the child must be stopped with a message containing `expect`.
void check_fault(const char* self, const std::string& name, const std::string& expect) {
    int pipe_fd[2];
    if (pipe(pipe_fd) != 0) std::exit(2);
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(pipe_fd[1], 2);
        close(pipe_fd[0]);
        close(pipe_fd[1]);
        execl(self, self, "--case", name.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    close(pipe_fd[1]);
    std::string err;
    char buf[4096];
    for (ssize_t got; (got = read(pipe_fd[0], buf, sizeof buf)) > 0;) err.append(buf, size_t(got));
    close(pipe_fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    const bool stopped = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
    const bool said = err.find(expect) != std::string::npos;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    check(stopped && said, "fault '" + name + "' stopped with \"" + expect + "\": " + (err.empty() ? "(nothing)" : err));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "--case") return run_case(argv[2]);
    check_fault(argv[0], "deadlock", "deadlock: 16 threads wait at __syncthreads and 16 in warp collectives");
    check_fault(argv[0], "exited-lane", "exited");
    check_fault(argv[0], "mask-mismatch", "different masks");
    check_fault(argv[0], "too-much-shared", "shared memory exceed the 49152 bytes");
    check_fault(argv[0], "wmma-divergent", "must be the same in the whole warp");
    check_fault(argv[0], "unjoined-fork", "not joined back");
    check_sum();
    check_count();
    check_neighbours();
    check_stale_shared();
    check_async_copies();
    check_mma();
    check_warp_reductions();
    check_bits();
    check_together();
    check_streams();
    std::printf("cuda emulator selfcheck: %d failed\n", g_failed);
    return g_failed == 0 ? 0 : 1;
}
