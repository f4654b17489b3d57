// The decode attention kernels alone on the CUDA emulator, against a
// double-precision softmax over the same inputs: the CUDA-core kernel (fp32 and
// bf16 cache) and the tensor-core kernel (bf16 cache; queries and probabilities
// in two bf16 parts, and three as in exact mode), for decode (one token), verify
// batches (three tokens: each token's bits as when alone) and a prefill chunk
// (20 tokens, no split), at positions whose rows end inside a tile and need
// several splits, with 20 heads (a second block of heads, mostly empty) and
// with V2-Lite's widths; and the splits' merge fused with the value absorption
// (F32, BF16 and FP8 weights; its merge against the merge kernel's bits), also
// where a latent row ends inside a 16-byte piece, with an odd number of value
// rows, and with more splits than one batch of the merges' staged copies. The model-level comparisons hold
// these kernels to the CPU only within a bf16 cache's 1e-3; here the bounds are
// the kernels' own.
#include "check_util.h"
#include "kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace cetus::cuda;
using namespace cetus::check;

struct Case {
    const char* name;
    MlaShape m;
    int64_t capacity;
    bool mma = true;  // whether the tensor-core kernel takes the shape (widths of multiples of 16)
};

// Runs one kernel configuration over tokens start .. start + n - 1 and returns ctx [n, n_h, d_c],
// or with kv_b the fused merge and value absorption's o [n, n_h, d_v] (*fused: whether it ran).
std::vector<float> run(const Case& c, const AttentionPlan& plan, bool bf16, const float* q_abs,
                       const float* q, const void* cache, int64_t start, int64_t n,
                       int64_t q_offset, const DeviceMatrix* kv_b = nullptr, bool* fused = nullptr) {
    const MlaShape& m = c.m;
    const int64_t d_qk = m.d_n + m.d_r;
    std::vector<float> ctx_h(size_t(n * m.n_h * m.d_c)), o_h(size_t(n * m.n_h * m.d_v));
    int64_t* start_d = device_copy(std::vector<int64_t>{start});
    float* ctx = device_copy(ctx_h);
    float* o = device_copy(o_h);
    AttentionPartials parts;
    parts.plan = plan;
    cudaMalloc(reinterpret_cast<void**>(&parts.acc),
               size_t(plan.max_parts * m.n_h * m.d_c) * sizeof(float));
    cudaMalloc(reinterpret_cast<void**>(&parts.ml),
               size_t(plan.max_parts * m.n_h * 2) * sizeof(float));
    const bool did = launch_mla_attention(q_abs + q_offset * m.n_h * m.d_c, q + q_offset * m.n_h * d_qk, cache,
                                          bf16, n, start_d, m, 0.125f, 132, parts, ctx, nullptr, AbsorbV{kv_b, o});
    if (fused) *fused = did;
    cudaMemcpy(ctx_h.data(), ctx, ctx_h.size() * sizeof(float), cudaMemcpyDeviceToHost);
    cudaMemcpy(o_h.data(), o, o_h.size() * sizeof(float), cudaMemcpyDeviceToHost);
    for (void* p : {static_cast<void*>(ctx), static_cast<void*>(o), static_cast<void*>(start_d),
                    static_cast<void*>(parts.acc), static_cast<void*>(parts.ml)})
        cudaFree(p);
    return kv_b ? o_h : ctx_h;
}

void run_case(const Case& c) {
    const MlaShape& m = c.m;
    const int64_t width = m.d_c + m.d_r, d_qk = m.d_n + m.d_r, T = c.capacity;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    // Cache rows of bf16 values (both caches hold the same numbers); queries in fp32.
    std::vector<uint16_t> cache_bf16(size_t(T * width));
    std::vector<float> cache_f32(cache_bf16.size());
    for (size_t i = 0; i < cache_bf16.size(); ++i) {
        cache_bf16[i] = to_bf16(normal(rng));
        cache_f32[i] = from_bf16(cache_bf16[i]);
    }
    std::vector<float> q_abs(size_t(T * m.n_h * m.d_c)), q(size_t(T * m.n_h * d_qk));
    for (auto& v : q_abs) v = 0.5f * normal(rng);
    for (auto& v : q) v = 0.5f * normal(rng);
    float* q_abs_d = device_copy(q_abs);
    float* q_d = device_copy(q);
    uint16_t* cache_bf16_d = device_copy(cache_bf16);
    float* cache_f32_d = device_copy(cache_f32);

    // ctx of token at position p (query row p), in double.
    auto reference = [&](int64_t p) {
        std::vector<double> out(size_t(m.n_h * m.d_c), 0.0);
        for (int64_t h = 0; h < m.n_h; ++h) {
            std::vector<double> s(size_t(p + 1));
            double mx = -INFINITY;
            for (int64_t r = 0; r <= p; ++r) {
                double d = 0.0;
                for (int64_t i = 0; i < m.d_c; ++i)
                    d += double(q_abs[size_t((p * m.n_h + h) * m.d_c + i)]) *
                         cache_f32[size_t(r * width + i)];
                for (int64_t i = 0; i < m.d_r; ++i)
                    d += double(q[size_t((p * m.n_h + h) * d_qk + m.d_n + i)]) *
                         cache_f32[size_t(r * width + m.d_c + i)];
                s[size_t(r)] = d * 0.125;
                mx = std::max(mx, s[size_t(r)]);
            }
            double sum = 0.0;
            for (auto& v : s) sum += (v = std::exp(v - mx));
            for (int64_t r = 0; r <= p; ++r)
                for (int64_t i = 0; i < m.d_c; ++i)
                    out[size_t(h * m.d_c + i)] +=
                        s[size_t(r)] / sum * cache_f32[size_t(r * width + i)];
        }
        return out;
    };

    struct Kernel {
        const char* name;
        bool bf16, mma, exact;
        double tol; // of the largest |ctx|
    };
    // fp32 sums in another order: ~1e-6 (measured 5e-7 to 1e-6); two bf16 parts:
    // ~2^-18 of each query and probability, so a score moves by ~1e-5 of its terms'
    // size (measured 4e-6 to 6e-6); one part would be 2^-9: ~3e-3.
    const Kernel kernels[] = {{"CUDA cores, fp32 cache", false, false, false, 5e-6},
                              {"CUDA cores, bf16 cache", true, false, false, 5e-6},
                              {"tensor cores, two parts", true, true, false, 3e-5},
                              {"tensor cores, three parts", true, true, true, 5e-6}};
    struct Span {
        int64_t start, n;
    };
    // Decode at rows 1, 33 (a tile and a row) and the last; a verify batch; a 20-token chunk (no
    // split).
    const Span spans[] = {{0, 1}, {32, 1}, {T - 1, 1}, {T - 3, 3}, {T - 20, 20}};
    for (const Kernel& k : kernels) {
        const AttentionPlan plan = plan_attention(m, 132, k.bf16, 227 * 1024, k.mma, k.exact);
        if (k.mma && !c.mma) {
            check(!plan.mma, std::string(c.name) + ", " + k.name + ": the plan refuses the tensor cores");
            continue;
        }
        if (plan.mma != k.mma) {
            check(false, std::string(c.name) + ", " + k.name + ": the plan takes the other kernel");
            continue;
        }
        const void* cache = k.bf16 ? static_cast<const void*>(cache_bf16_d) : cache_f32_d;
        double worst = 0.0;
        bool batch_same = true;
        for (const Span& sp : spans) {
            const std::vector<float> got =
                run(c, plan, k.bf16, q_abs_d, q_d, cache, sp.start, sp.n, sp.start);
            for (int64_t t = 0; t < sp.n; ++t) {
                const std::vector<double> want = reference(sp.start + t);
                double top = 0.0, err = 0.0;
                for (size_t i = 0; i < want.size(); ++i) {
                    top = std::max(top, std::fabs(want[i]));
                    err = std::max(err,
                                   std::fabs(double(got[size_t(t) * want.size() + i]) - want[i]));
                }
                worst = std::max(worst, err / top);
            }
            if (sp.n == 3) { // each token of a verify batch: the bits it gets alone
                for (int64_t t = 0; t < 3; ++t) {
                    const std::vector<float> alone =
                        run(c, plan, k.bf16, q_abs_d, q_d, cache, sp.start + t, 1, sp.start + t);
                    batch_same =
                        batch_same && std::memcmp(alone.data(), got.data() + t * alone.size(),
                                                  alone.size() * sizeof(float)) == 0;
                }
            }
        }
        char line[256];
        std::snprintf(line, sizeof line,
                      "%s, %s: ctx within %.3g of the largest (bound %.0e; split cap %d)", c.name,
                      k.name, worst, k.tol, plan.split_cap);
        check(worst <= k.tol, line);
        check(batch_same,
              std::string(c.name) + ", " + k.name + ": verify batch == tokens alone (bit for bit)");

        // The merge fused with the value absorption (split batches: decode, verify): o against
        // double sums over the unfused launch's ctx (the fused merge gives its bits), |error| in
        // units of 1e-6 of the terms' magnitudes (fp32 sums of d_c terms: a few 1e-7); a
        // verify batch's tokens as alone; the unsplit chunk left to the caller.
        for (DeviceDtype dt : {DeviceDtype::F32, DeviceDtype::BF16, DeviceDtype::F8_E4M3}) {
            std::vector<void*> owned;
            const Weight kv = make_weight(dt, m.n_h * (m.d_n + m.d_v), m.d_c, rng, owned);
            const std::vector<float>& w = kv.exact;
            const DeviceMatrix& kv_b = kv.m;
            double worst_v = 0.0;
            bool fused_all = true, same = true, chunk_left = true;
            for (const Span& sp : spans) {
                bool fused = false;
                const std::vector<float> o = run(c, plan, k.bf16, q_abs_d, q_d, cache, sp.start, sp.n, sp.start,
                                                 &kv_b, &fused);
                if (sp.n > 16) {
                    chunk_left = chunk_left && !fused;
                    continue;
                }
                fused_all = fused_all && fused;
                const std::vector<float> ctx = run(c, plan, k.bf16, q_abs_d, q_d, cache, sp.start, sp.n, sp.start);
                for (int64_t t = 0; t < sp.n; ++t)
                    for (int64_t h = 0; h < m.n_h; ++h)
                        for (int64_t r = 0; r < m.d_v; ++r) {
                            const int64_t row = h * (m.d_n + m.d_v) + m.d_n + r;
                            double sum = 0.0, mag = 0.0;
                            for (int64_t i = 0; i < m.d_c; ++i) {
                                const double p = double(w[size_t(row * m.d_c + i)]) *
                                                 ctx[size_t((t * m.n_h + h) * m.d_c + i)];
                                sum += p;
                                mag += std::fabs(p);
                            }
                            const double got = o[size_t((t * m.n_h + h) * m.d_v + r)];
                            worst_v = std::max(worst_v, std::fabs(got - sum) / (mag * 1e-6 + 1e-30));
                        }
                if (sp.n == 3)
                    for (int64_t t = 0; t < 3; ++t) {
                        const std::vector<float> alone =
                            run(c, plan, k.bf16, q_abs_d, q_d, cache, sp.start + t, 1, sp.start + t, &kv_b);
                        same = same && std::memcmp(alone.data(), o.data() + t * alone.size(),
                                                   alone.size() * sizeof(float)) == 0;
                    }
            }
            for (void* p : owned) cudaFree(p);
            const std::string tag = std::string(c.name) + ", " + k.name + ", merge with the value absorption (" +
                                    (dt == DeviceDtype::BF16 ? "BF16" : dt == DeviceDtype::F32 ? "F32" : "FP8") + ")";
            std::snprintf(line, sizeof line, "%s: o within %.3g units of 1e-6 of the terms (bound 1)", tag.c_str(),
                          worst_v);
            check(fused_all && chunk_left && worst_v <= 1.0, line + std::string(fused_all ? "" : "; not fused") +
                                                             (chunk_left ? "" : "; the chunk fused"));
            check(same, tag + ": verify batch == tokens alone (bit for bit)");
        }

        // The fused launch's merge against the merge kernel's context, bit for bit: with F32
        // value rows of one 1 each (at column j0 + r for row r) the product adds exact zeros
        // to one exact term, so o[t, h, r] is the fused merge's column j0 + r itself.
        bool merge_same = true;
        for (int64_t j0 = 0; j0 < m.d_c; j0 += m.d_v) {
            const int64_t rows = m.n_h * (m.d_n + m.d_v), ld = round_up(m.d_c, 4);
            std::vector<float> one_hot(size_t(rows * ld), 0.0f);
            for (int64_t h = 0; h < m.n_h; ++h)
                for (int64_t r = 0; r < m.d_v && j0 + r < m.d_c; ++r)
                    one_hot[size_t((h * (m.d_n + m.d_v) + m.d_n + r) * ld + j0 + r)] = 1.0f;
            DeviceMatrix pick;
            pick.dtype = DeviceDtype::F32;
            pick.rows = rows;
            pick.cols = m.d_c;
            pick.ld = ld;
            float* pick_d = device_copy(one_hot);
            pick.data = pick_d;
            for (const Span& sp : spans) {
                if (sp.n > 16) continue;
                const std::vector<float> o = run(c, plan, k.bf16, q_abs_d, q_d, cache, sp.start, sp.n, sp.start, &pick);
                const std::vector<float> ctx = run(c, plan, k.bf16, q_abs_d, q_d, cache, sp.start, sp.n, sp.start);
                for (int64_t t = 0; t < sp.n; ++t)
                    for (int64_t h = 0; h < m.n_h; ++h)
                        for (int64_t r = 0; r < m.d_v && j0 + r < m.d_c; ++r)
                            merge_same = merge_same &&
                                         std::memcmp(&o[size_t((t * m.n_h + h) * m.d_v + r)],
                                                     &ctx[size_t((t * m.n_h + h) * m.d_c + j0 + r)], sizeof(float)) == 0;
            }
            cudaFree(pick_d);
        }
        check(merge_same, std::string(c.name) + ", " + k.name +
                              ": the fused launch's merge == the merge kernel's context (bit for bit)");
    }
    cudaFree(q_abs_d);
    cudaFree(q_d);
    cudaFree(cache_bf16_d);
    cudaFree(cache_f32_d);
}

} // namespace

int main() {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("attention check: no CUDA device (%s)\n",
                    cudaGetErrorString(cudaGetLastError()));
        return 1;
    }
    try {
        // 100 rows: 4 splits of a tile each (the last one 4 rows), whatever the cap.
        run_case({"20 heads, 64 + 16 wide", MlaShape{20, 32, 16, 32, 64}, 100});
        run_case({"V2-Lite's 16 heads, 512 + 64 wide", MlaShape{16, 128, 64, 128, 512}, 70});
        // 300 rows: up to 38 splits, more than one batch of the merges' staged copies.
        run_case({"8 heads, 64 + 16 wide, 300 rows", MlaShape{8, 16, 16, 16, 64}, 300});
        // Widths the tensor cores refuse: a latent row ending inside a 16-byte piece of bf16
        // and of FP8 weights (36 values), and an odd number of value rows (a warp's second row
        // missing).
        run_case({"5 heads, 36 + 8 wide, 7 value rows", MlaShape{5, 16, 8, 7, 36}, 100, false});
        if (cudaDeviceSynchronize() != cudaSuccess)
            check(false, std::string("kernels: ") + cudaGetErrorString(cudaGetLastError()));
    } catch (const std::exception& e) {
        check(false, e.what());
    }
    std::printf("attention check: %d failed\n", g_failed);
    return g_failed == 0 ? 0 : 1;
}
