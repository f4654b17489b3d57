// The routed experts' kernels alone, against double-precision products over the
// same inputs: the grouped tensor-core kernel (moe_experts_mma.cu; bf16 operands,
// fp32 sums) with tiles of 64 and 128 weight rows, and the fp32 kernel
// (moe_experts.cu), for BF16 and FP8 experts (128x128 block scales), at widths
// that end inside a 16-byte piece, a step and a tile (203 and 75), at whole tiles
// (512 and 384) and, with --v2-lite (the GPU check; slow on the emulator, whose
// WMMA products run once per lane), at V2-Lite's (2048 and 1408); with an expert
// of more than one tile of pairs, one of none, and rows padded with NaN (weights,
// bf16 activations) that must never be read; and for GGUF blocks (DeviceDtype::Ggml:
// random blocks with finite scales, their values the engine's own decoding,
// ggml_dequantize), K-quants and 32-value types, gate and up of different types, at
// widths of whole blocks whose rows (gate/up and down) end inside a tile. The model-level comparisons hold the tensor-core
// kernel to the CPU only within bf16 tolerance; here each kernel meets its own bound, and the two
// tile widths give the same bits. The decode launches' fused tails (one and two tokens) give the
// bits of their separate launches: the down launch with the MoE combine and next norm (with and
// without the shared experts in the launch, twice, so its counters are left at zero) against
// launch_moe_combine, and the product with the residual add and norm against launch_matvec and
// launch_add_rmsnorm; the combine's result is also held to a double-precision sum.
#include "check_util.h"
#include "cpu/ggml_int8.h"
#include "ggml_blocks.h"
#include "gguf.h"
#include "kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace cetus::cuda;
using namespace cetus::check;

// GGUF blocks of type id: rows of whole blocks, ld bytes apart (rounded up to 16, the
// padding 0xFF); exact: the engine's decoding, rounded: that rounded to bf16.
Weight make_ggml_weight(uint32_t id, int64_t rows, int64_t cols, std::mt19937& rng,
                        std::vector<void*>& owned) {
    int values = 0, bytes = 0;
    if (!cetus::ggml_blocks::block_shape(id, values, bytes) || cols % values != 0)
        throw std::runtime_error("experts check: GGUF type " + std::to_string(id) + " for rows of " +
                                 std::to_string(cols));
    Weight w;
    const int64_t blocks = cols / values, row_bytes = blocks * bytes;
    w.m = cetus::cuda::ggml_device_matrix(id, rows, cols, nullptr, round_up(row_bytes, 16));
    std::vector<std::byte> data(size_t(rows * w.m.ld), std::byte{0xFF});
    w.exact.resize(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
        random_ggml_blocks(id, bytes, blocks, &data[size_t(r * w.m.ld)], rng);
        cetus::ggml_dequantize(id, &data[size_t(r * w.m.ld)], &w.exact[size_t(r * cols)], cols);
    }
    w.rounded.resize(w.exact.size());
    for (size_t i = 0; i < w.exact.size(); ++i) w.rounded[i] = round_bf16(w.exact[i]);
    w.m.data = device_copy(device_layout(id, data, rows, cols, w.m.ld));
    owned.push_back(const_cast<void*>(w.m.data));
    w.m.l2_prefetch = true;  // (the sums are the same; the emulator checks each prefetch's range)
    return w;
}

struct Case {
    const char* name;
    int64_t hidden, inter, n_experts, top_k, n;
    uint32_t gate_type = 0, up_type = 0, down_type = 0;  // GGUF block types (DeviceDtype::Ggml)
    // GGUF, one or two tokens: the launches (of gate/up and down) that take two tiles in
    // flight when asked (rows of more than 32 chunks whose slots fit; check_staged).
    uint64_t doubled = 0;
};

const char* ggml_name(uint32_t id) {
    switch (id) {
    case 6: return "Q5_0";
    case 8: return "Q8_0";
    case 12: return "Q4_K";
    case 14: return "Q6_K";
    default: return "?";
    }
}

// ids[t, k]: slot 0 sends every token to expert 0 (more than one tile of pairs
// once n > 64), the other slots spread over experts 1 .. E-2 without repeats in
// a token; expert E-1 gets none.
std::vector<int32_t> make_routing(const Case& c, std::mt19937& rng) {
    std::vector<int32_t> ids(size_t(c.n * c.top_k));
    for (int64_t t = 0; t < c.n; ++t) {
        std::vector<int32_t> pool;
        for (int32_t e = 1; e < c.n_experts - 1; ++e) pool.push_back(e);
        std::shuffle(pool.begin(), pool.end(), rng);
        ids[size_t(t * c.top_k)] = 0;
        for (int64_t k = 1; k < c.top_k; ++k) ids[size_t(t * c.top_k + k)] = pool[size_t(k - 1)];
    }
    return ids;
}

struct Worst {
    double err =
        0.0; // the largest |got - want| - bound part, as a fraction of the bound (<= 1 passes)
    double rel = 0.0; // the largest |got - want| over the largest |want|
};

// got against want element by element: |got - want| <= rel_each * |want| + rel_top * max |want|.
Worst compare(const std::vector<float>& got, const std::vector<double>& want, double rel_each,
              double rel_top) {
    double top = 0.0;
    for (double v : want) top = std::max(top, std::fabs(v));
    Worst w;
    for (size_t i = 0; i < want.size(); ++i) {
        const double d = std::fabs(double(got[i]) - want[i]);
        if (!(d <= rel_each * std::fabs(want[i]) + rel_top * top))
            w.err = std::max(w.err, std::isnan(d) ? 1e30 : d);
        w.rel = std::max(w.rel, std::isnan(d) ? 1e30 : d / top);
    }
    return w;
}

// The fused down launch's combine and norm (the decode path, n <= k_fused_tail_max_tokens)
// against the down launch alone followed by launch_moe_combine: the same bits for x and
// out. The shared experts are an MLP of expert 0's matrices, in the launches or not.
void check_fused_combine(const std::string& name, const DeviceExperts& ex, const ExpertPairs& pairs,
                         const DeviceMatrix& sg, const DeviceMatrix& su, const DeviceMatrix& sd, const float* x_d,
                         float* h_d, float* y_d, int64_t n, int64_t K, int64_t H, int64_t E, std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> uni(0.05f, 1.0f);
    std::vector<float> x0(static_cast<size_t>(n * H)), wts(static_cast<size_t>(n * K)), norm_w(static_cast<size_t>(H));
    for (auto& v : x0) v = normal(rng);
    for (auto& v : wts) v = uni(rng);
    for (auto& v : norm_w) v = uni(rng);
    const float eps = 1e-6f;
    float* w_d = device_copy(wts);
    float* nw_d = device_copy(norm_w);
    float* xa = device_copy(x0);
    float* xb = device_copy(x0);
    float* out_a = device_copy(std::vector<float>(size_t(n * H)));
    float* out_b = device_copy(std::vector<float>(size_t(n * H)));
    float* sh_h = device_copy(std::vector<float>(size_t(n * sg.rows)));
    float* sh_out = device_copy(std::vector<float>(size_t(n * H)));
    const int64_t counters = moe_combine_counters(H);
    uint32_t* done = device_copy(std::vector<uint32_t>(size_t(counters)));
    const SharedExpertLaunch shared{sg, su, sd, sh_h, sh_out};
    const bool fusable = experts_shared_fusable(ex, sg, su, sd, H);
    check(fusable, name + ": expert 0's matrices can ride along as the shared experts");
    for (const bool with_shared : {true, false}) {
        const SharedExpertLaunch* sh = with_shared && fusable ? &shared : nullptr;
        const std::string tag = name + ", " + std::to_string(n) + " token(s), fused combine" +
                                (sh ? " with the shared experts" : "");
        launch_experts_gate_up(ex, pairs, x_d, n, int32_t(K), H, int32_t(E), h_d, nullptr, sh, nullptr);
        launch_experts_down(ex, pairs, h_d, n, int32_t(K), H, int32_t(E), y_d, nullptr, sh, nullptr, nullptr);
        const std::vector<float> y = host_copy(y_d, size_t(n * K * H));
        cudaMemcpy(xa, x0.data(), x0.size() * 4, cudaMemcpyHostToDevice);
        const MoeCombine sep{xa, w_d, K, sh ? sh_out : nullptr, nw_d, eps, out_a, nullptr, 0};
        launch_moe_combine(sep, y_d, n, int32_t(K), H, nullptr);
        const std::vector<float> want_x = host_copy(xa, size_t(n * H)), want_out = host_copy(out_a, size_t(n * H));
        // Twice: the counters must be back at zero for the second launch (a replayed graph).
        for (int run = 0; run < 2; ++run) {
            cudaMemcpy(xb, x0.data(), x0.size() * 4, cudaMemcpyHostToDevice);
            cudaMemcpy(out_b, std::vector<float>(size_t(n * H), -1.0f).data(), size_t(n * H) * 4,
                       cudaMemcpyHostToDevice);
            const MoeCombine fused{xb, w_d, K, sh ? sh_out : nullptr, nw_d, eps, out_b, done, counters};
            launch_experts_down(ex, pairs, h_d, n, int32_t(K), H, int32_t(E), y_d, nullptr, sh, &fused, nullptr);
            const std::vector<float> got_x = host_copy(xb, size_t(n * H)), got_out = host_copy(out_b, size_t(n * H));
            check(same_bits(host_copy(y_d, size_t(n * K * H)), y) && same_bits(got_x, want_x) &&
                      same_bits(got_out, want_out),
                  tag + ", launch " + std::to_string(run + 1) + " == down, then launch_moe_combine (bit for bit)");
        }
        check(host_copy(done, size_t(counters)) == std::vector<uint32_t>(size_t(counters)),
              tag + ": counters left at zero");
        // The separate combine against double sums of the same y (and shared rows).
        const std::vector<float> s_out = host_copy(sh_out, size_t(n * H));
        double worst = 0.0;
        for (int64_t t = 0; t < n; ++t) {
            std::vector<double> v(static_cast<size_t>(H));
            double ss = 0.0, top = 0.0;
            for (int64_t i = 0; i < H; ++i) {
                double r = 0.0;
                for (int64_t k = 0; k < K; ++k)
                    r += double(wts[size_t(t * K + k)]) * y[size_t((t * K + k) * H + i)];
                if (sh) r += s_out[size_t(t * H + i)];
                v[size_t(i)] = x0[size_t(t * H + i)] + r;
                ss += v[size_t(i)] * v[size_t(i)];
                top = std::max(top, std::fabs(v[size_t(i)]));
            }
            const double scale = 1.0 / std::sqrt(ss / double(H) + eps);
            for (int64_t i = 0; i < H; ++i) {
                worst = std::max(worst, std::fabs(want_x[size_t(t * H + i)] - v[size_t(i)]) / top);
                worst = std::max(worst, std::fabs(want_out[size_t(t * H + i)] - norm_w[size_t(i)] * v[size_t(i)] * scale) /
                                            (top * scale));
            }
        }
        char line[300];
        std::snprintf(line, sizeof line, "%s: x and out within %.3g of double sums (bound 1e-5)", tag.c_str(), worst);
        check(worst <= 1e-5, line);
    }
    for (void* p : std::initializer_list<void*>{w_d, nw_d, xa, xb, out_a, out_b, sh_h, sh_out, done}) cudaFree(p);
}

// The product with the residual add and norm in one launch (decode's output projection)
// against launch_matvec and launch_add_rmsnorm: the same bits for the residual and out.
void check_fused_add_norm(DeviceDtype dt, int64_t rows, int64_t cols) {
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> uni(0.05f, 1.0f);
    std::vector<void*> owned;
    const Weight w = make_weight(dt, rows, cols, rng, owned);
    for (int64_t n = 1; n <= k_fused_tail_max_tokens; ++n) {
        std::vector<float> x(static_cast<size_t>(n * cols)), resid(static_cast<size_t>(n * rows)),
            norm_w(static_cast<size_t>(rows));
        for (auto& v : x) v = normal(rng);
        for (auto& v : resid) v = normal(rng);
        for (auto& v : norm_w) v = uni(rng);
        float* x_d = device_copy(x);
        float* nw_d = device_copy(norm_w);
        float* ra = device_copy(resid);
        float* rb = device_copy(resid);
        float* ya = device_copy(std::vector<float>(size_t(n * rows)));
        float* yb = device_copy(std::vector<float>(size_t(n * rows)));
        float* oa = device_copy(std::vector<float>(size_t(n * rows)));
        float* ob = device_copy(std::vector<float>(size_t(n * rows)));
        uint32_t* done = device_copy(std::vector<uint32_t>(1));
        launch_matvec(w.m, x_d, cols, n, ya, rows, RowGroups{1, rows, 0, 0, 0, 0}, nullptr);
        launch_add_rmsnorm(ra, ya, nw_d, 1e-6f, n, rows, oa, nullptr);
        const std::vector<float> want_r = host_copy(ra, size_t(n * rows)), want_o = host_copy(oa, size_t(n * rows));
        bool same = true;
        for (int run = 0; run < 2; ++run) {  // twice: the counter is left at zero
            cudaMemcpy(rb, resid.data(), resid.size() * 4, cudaMemcpyHostToDevice);
            launch_matvec_add_rmsnorm(w.m, x_d, cols, n, yb, rb, nw_d, 1e-6f, ob, done, nullptr);
            same = same && same_bits(host_copy(rb, size_t(n * rows)), want_r) &&
                   same_bits(host_copy(ob, size_t(n * rows)), want_o);
        }
        check(same && !same_bits(want_r, resid),
              std::string(dt == DeviceDtype::BF16 ? "BF16" : "FP8") + " product of " + std::to_string(rows) + " rows, " +
                  std::to_string(n) + " token(s), with the residual add and norm (two launches) == launch_matvec, "
                  "then launch_add_rmsnorm (bit for bit)");
        for (void* p : std::initializer_list<void*>{x_d, nw_d, ra, rb, ya, yb, oa, ob, done}) cudaFree(p);
    }
    for (void* p : owned) cudaFree(p);
}

// GGUF rows staged in shared memory for one or two tokens (DeviceMatrix::ggml_stage, the decode
// products' copies), in exact, fast and (where the block types have it) int8 sums: the gate/up
// and down launches with the shared experts (expert 0's matrices) riding along give the bits
// of the same launches reading the rows, and the staged down launch with the fused combine the
// bits of the staged down and launch_moe_combine (check_fused_combine). The same with two tiles
// in flight (ggml_stage 2, the slots the size of the experts' block types): a launch whose
// rows are more than one tile takes two buffers (`doubled` of the two launches).
void check_staged(const std::string& name, const DeviceExperts& ex, const std::vector<DeviceMatrix>& gm,
                  const std::vector<DeviceMatrix>& um, const std::vector<DeviceMatrix>& dm, const ExpertPairs& pairs,
                  const float* x_d, float* h_d, float* y_d, int64_t n, int64_t K, int64_t H, int64_t E, int64_t I,
                  uint64_t doubled, std::mt19937& rng) {
    const int64_t P = n * K;
    const bool int8 = ggml_int8_fits_type(gm[0].ggml_type) && ggml_int8_fits_type(um[0].ggml_type) &&
                      ggml_int8_fits_type(dm[0].ggml_type) && gm[0].ggml_values == um[0].ggml_values;
    for (const int form : {0, 1, 2}) {
        if (form == 2 && !int8) continue;
        const bool fast = form == 1;
        const std::string sums = form == 2 ? ", int8 sums" : fast ? ", fast sums" : ", exact sums";
        DeviceExperts e[3];
        std::vector<DeviceMatrix> t[3][3];
        std::vector<float> got[3][4];
        float* sh_h = device_copy(std::vector<float>(size_t(n * I), -7.0f));
        float* sh_out = device_copy(std::vector<float>(size_t(n * H), -7.0f));
        for (int s = 0; s < 3; ++s) {
            t[s][0] = gm;
            t[s][1] = um;
            t[s][2] = dm;
            for (auto& v : t[s])
                for (DeviceMatrix& m : v) {
                    m.ggml_fast = fast;
                    m.ggml_stage = uint8_t(s);
                    m.ggml_int8 = form == 2;
                }
            e[s] = ex;
            e[s].gate = device_copy(t[s][0]);
            e[s].up = device_copy(t[s][1]);
            e[s].down = device_copy(t[s][2]);
            e[s].ggml_fast = fast;
            e[s].ggml_stage = uint8_t(s);
            e[s].ggml_int8_gate_up = form == 2 ? gm[0].ggml_values : 0;
            e[s].ggml_int8_down = form == 2 ? dm[0].ggml_values : 0;
            if (s == 2) {  // (as the upload sets them; 0 stands for the largest slot of any type)
                e[s].ggml_slot_gate_up = std::max(ggml_stage_slot_bytes(gm[0].ggml_type), ggml_stage_slot_bytes(um[0].ggml_type));
                e[s].ggml_slot_down = ggml_stage_slot_bytes(dm[0].ggml_type);
            }
            const SharedExpertLaunch shared{t[s][0][0], t[s][1][0], t[s][2][0], sh_h, sh_out};
            check(experts_shared_fusable(e[s], shared.gate, shared.up, shared.down, H),
                  name + ": expert 0's matrices can ride along as the shared experts");
            const uint64_t before = ggml_staged_launches(), before2 = ggml_staged_launches(2);
            const uint64_t before8 = ggml_int8_launches();
            launch_experts_gate_up(e[s], pairs, x_d, n, int32_t(K), H, int32_t(E), h_d, nullptr, &shared, nullptr);
            launch_experts_down(e[s], pairs, h_d, n, int32_t(K), H, int32_t(E), y_d, nullptr, &shared, nullptr, nullptr);
            check(ggml_staged_launches() - before == (s > 0 ? 2u : 0u),
                  name + ": both launches staged their rows when asked, none otherwise");
            check(ggml_int8_launches() - before8 == (form == 2 ? 2u : 0u),
                  name + sums + ": both launches took the int8 form where asked, none otherwise");
            const uint64_t two = ggml_staged_launches(2) - before2;
            check(two == (s == 2 ? doubled : 0u), name + ": " + std::to_string(two) + " launches took two tiles in flight (" +
                                                      std::to_string(s == 2 ? doubled : 0u) + " expected)");
            got[s][0] = host_copy(h_d, size_t(P * I));
            got[s][1] = host_copy(y_d, size_t(P * H));
            got[s][2] = host_copy(sh_h, size_t(n * I));
            got[s][3] = host_copy(sh_out, size_t(n * H));
        }
        for (int s = 1; s < 3; ++s) {
            bool same = true;
            for (int k = 0; k < 4; ++k) same = same && same_bits(got[0][k], got[s][k]);
            check(same, name + sums + ", " + std::to_string(n) +
                            " token(s): rows staged in shared memory" + (s == 2 ? " (two tiles in flight)" : "") +
                            " == read from the rows, bit for bit (gate/up, down, the shared experts')");
            check_fused_combine(name + sums + ", rows staged" +
                                    (s == 2 ? " (two tiles in flight)" : ""),
                                e[s], pairs, t[s][0][0], t[s][1][0], t[s][2][0], x_d, h_d, y_d, n, K, H, E, rng);
        }
        for (int s = 0; s < 3; ++s)
            for (const DeviceMatrix* p : {e[s].gate, e[s].up, e[s].down}) cudaFree(const_cast<DeviceMatrix*>(p));
        cudaFree(sh_h);
        cudaFree(sh_out);
    }
}

// ex with device copies of the experts' descriptors, each as mark leaves it (the caller
// frees the copies).
template <class Mark>
DeviceExperts experts_marked(const DeviceExperts& ex, std::vector<DeviceMatrix> gm, std::vector<DeviceMatrix> um,
                             std::vector<DeviceMatrix> dm, Mark mark) {
    for (auto* t : {&gm, &um, &dm})
        for (DeviceMatrix& m : *t) mark(m);
    DeviceExperts e = ex;
    e.gate = device_copy(gm);
    e.up = device_copy(um);
    e.down = device_copy(dm);
    return e;
}

// Double references of an MLP for one row: h[r] = silu(gate_r . x) * (up_r . x) over x's H
// values for the I rows of gate and up (I x H), and y[r] = down_r . hin over hin's I values
// (down: H x I; hin the kernel's own h, quantised).
void mlp_reference_row(const double* x, const std::vector<float>& gate, const std::vector<float>& up, int64_t I,
                       int64_t H, double* h, const double* hin, const std::vector<float>& down, double* y) {
    for (int64_t r = 0; r < I; ++r) {
        double g = 0.0, u = 0.0;
        for (int64_t i = 0; i < H; ++i) {
            g += x[i] * gate[size_t(r * H + i)];
            u += x[i] * up[size_t(r * H + i)];
        }
        h[r] = g / (1.0 + std::exp(-g)) * u;
    }
    for (int64_t r = 0; r < H; ++r) {
        double sum = 0.0;
        for (int64_t i = 0; i < I; ++i) sum += hin[i] * down[size_t(r * I + i)];
        y[r] = sum;
    }
}

// Activations quantised as cpu::quantise_int8 quantises them (per block of `block` values),
// as doubles d q: [rows, cols].
std::vector<double> int8_dequantised(const std::vector<float>& v, int64_t rows, int64_t cols, int block) {
    cetus::cpu::Int8Rows a;
    cetus::cpu::quantise_int8(v.data(), cols, rows, cols, block, a);
    std::vector<double> out(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < cols; ++i)
            out[size_t(r * cols + i)] =
                double(a.d[size_t(r * (cols / block) + i / block)]) * double(a.q[size_t(r * cols + i)]);
    return out;
}

// The int8 form with shared experts riding along whose blocks differ in size from the
// routed experts' (V2-Lite's Q4_K_M: routed down rows of 1,408 values in 32-value blocks,
// the shared experts' of 2,816 in K-quants): here Q4_K gate and up and Q6_K down over 512
// shared rows. Their launch blocks stage their own activations, each per its own block
// size: the pair is fusable, the routed experts' outputs are the bits of the launches
// without them, and the shared experts' are within the fp32 kernel's bound of double sums
// of their values times activations quantised per 256 values (x, then their own h).
void check_int8_mixed_shared(const std::string& name, const DeviceExperts& ex, const std::vector<DeviceMatrix>& gm,
                             const std::vector<DeviceMatrix>& um, const std::vector<DeviceMatrix>& dm,
                             const ExpertPairs& pairs, const std::vector<float>& x, const float* x_d, float* h_d,
                             float* y_d, int64_t n, int64_t K, int64_t H, int64_t E, int64_t I, std::mt19937& rng) {
    const int64_t P = n * K, Is = 512;
    std::vector<void*> owned;
    Weight sg = make_ggml_weight(12, Is, H, rng, owned), su = make_ggml_weight(12, Is, H, rng, owned),
           sd = make_ggml_weight(14, H, Is, rng, owned);
    for (Weight* w : {&sg, &su, &sd}) w->m.ggml_int8 = true;
    DeviceExperts e = experts_marked(ex, gm, um, dm, [](DeviceMatrix& m) { m.ggml_int8 = true; });
    e.ggml_int8_gate_up = gm[0].ggml_values;
    e.ggml_int8_down = dm[0].ggml_values;
    const std::string what = name + ", int8 sums, shared experts in 256-value blocks beside routed ones of " +
                             std::to_string(gm[0].ggml_values) + " and " + std::to_string(dm[0].ggml_values);
    check(experts_shared_fusable(e, sg.m, su.m, sd.m, H), what + ": fusable");
    launch_experts_gate_up(e, pairs, x_d, n, int32_t(K), H, int32_t(E), h_d, nullptr, nullptr, nullptr);
    const std::vector<float> h0 = host_copy(h_d, size_t(P * I));
    launch_experts_down(e, pairs, h_d, n, int32_t(K), H, int32_t(E), y_d, nullptr, nullptr, nullptr, nullptr);
    const std::vector<float> y0 = host_copy(y_d, size_t(P * H));
    float* sh_h = device_copy(std::vector<float>(size_t(n * Is), -7.0f));
    float* sh_out = device_copy(std::vector<float>(size_t(n * H), -7.0f));
    const SharedExpertLaunch shared{sg.m, su.m, sd.m, sh_h, sh_out};
    const uint64_t before = ggml_int8_launches();
    launch_experts_gate_up(e, pairs, x_d, n, int32_t(K), H, int32_t(E), h_d, nullptr, &shared, nullptr);
    launch_experts_down(e, pairs, h_d, n, int32_t(K), H, int32_t(E), y_d, nullptr, &shared, nullptr, nullptr);
    check(ggml_int8_launches() - before == 2, what + ": both launches took the int8 form");
    check(same_bits(h0, host_copy(h_d, size_t(P * I))) && same_bits(y0, host_copy(y_d, size_t(P * H))),
          what + ": the routed experts' outputs == without the shared experts, bit for bit");
    const std::vector<float> sh = host_copy(sh_h, size_t(n * Is));
    const std::vector<double> xq = int8_dequantised(x, n, H, 256), hq = int8_dequantised(sh, n, Is, 256);
    std::vector<double> hw(size_t(n * Is)), yw(size_t(n * H));
    for (int64_t t = 0; t < n; ++t)
        mlp_reference_row(&xq[size_t(t * H)], sg.exact, su.exact, Is, H, &hw[size_t(t * Is)], &hq[size_t(t * Is)],
                          sd.exact, &yw[size_t(t * H)]);
    const Worst wh = compare(sh, hw, 0.0, 1e-5), wy = compare(host_copy(sh_out, size_t(n * H)), yw, 0.0, 1e-5);
    char line[400];
    std::snprintf(line, sizeof line, "%s: theirs within %.3g (gate/up) and %.3g (down) of the largest (bound 1e-5)",
                  what.c_str(), wh.rel, wy.rel);
    check(wh.err == 0.0 && wy.err == 0.0, line);
    for (const DeviceMatrix* p : {e.gate, e.up, e.down}) cudaFree(const_cast<DeviceMatrix*>(p));
    cudaFree(sh_h);
    cudaFree(sh_out);
    for (void* p : owned) cudaFree(p);
}

void run_case(const Case& c, DeviceDtype dt) {
    const std::string name = std::string(c.name) +
                             (dt == DeviceDtype::BF16      ? ", BF16"
                              : dt == DeviceDtype::F8_E4M3 ? ", FP8"
                                                           : std::string(", GGUF ") + ggml_name(c.gate_type) + "/" +
                                                                 ggml_name(c.up_type) + "/" + ggml_name(c.down_type));
    const int64_t E = c.n_experts, K = c.top_k, n = c.n, H = c.hidden, I = c.inter, P = n * K;
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<void*> owned;
    std::vector<Weight> gate, up, down;
    for (int64_t e = 0; e < E; ++e) {
        if (dt == DeviceDtype::Ggml) {
            gate.push_back(make_ggml_weight(c.gate_type, I, H, rng, owned));
            up.push_back(make_ggml_weight(c.up_type, I, H, rng, owned));
            down.push_back(make_ggml_weight(c.down_type, H, I, rng, owned));
        } else {
            gate.push_back(make_weight(dt, I, H, rng, owned));
            up.push_back(make_weight(dt, I, H, rng, owned));
            down.push_back(make_weight(dt, H, I, rng, owned));
        }
    }
    std::vector<DeviceMatrix> gm, um, dm;
    for (int64_t e = 0; e < E; ++e) {
        gm.push_back(gate[size_t(e)].m);
        um.push_back(up[size_t(e)].m);
        dm.push_back(down[size_t(e)].m);
    }
    DeviceExperts ex;
    ex.gate = device_copy(gm);
    ex.up = device_copy(um);
    ex.down = device_copy(dm);
    ex.gate_up_dtype = ex.down_dtype = dt;
    ex.inter = I;

    std::vector<float> x(size_t(n * H));
    for (auto& v : x) v = normal(rng);
    const std::vector<int32_t> ids = make_routing(c, rng);
    float* x_d = device_copy(x);
    int32_t* ids_d = device_copy(ids);
    ExpertPairs pairs;
    pairs.counts = device_copy(std::vector<int32_t>(size_t(E)));
    pairs.offsets = device_copy(std::vector<int32_t>(size_t(E)));
    pairs.active = device_copy(std::vector<int32_t>(size_t(E)));
    pairs.n_active = device_copy(std::vector<int32_t>(1));
    pairs.list = device_copy(std::vector<int32_t>(size_t(P)));
    pairs.tiles = device_copy(std::vector<int32_t>(size_t(2 * expert_tiles_bound(n, K, E))));
    pairs.n_tiles = device_copy(std::vector<int32_t>(1));
    launch_group_pairs(ids_d, K, n, int32_t(K), int32_t(E), pairs, nullptr);

    // The bf16 rows start as NaN: columns past the widths must never reach a product.
    const int64_t ld_x = round_up(H, 8), ld_h = round_up(I, 8);
    uint16_t* xb_d = device_copy(std::vector<uint16_t>(size_t(n * ld_x), k_bf16_nan));
    float* h_d = device_copy(std::vector<float>(size_t(P * I)));
    float* y_d = device_copy(std::vector<float>(size_t(P * H)));

    // References in double. gate/up of pair p = (t, k) from x[t] with the kernels' operands.
    auto gate_up_ref = [&](bool rounded) {
        std::vector<double> h(size_t(P * I));
        std::vector<double> xt(static_cast<size_t>(H));
        for (int64_t p = 0; p < P; ++p) {
            const int64_t t = p / K, e = ids[size_t(p)];
            for (int64_t i = 0; i < H; ++i)
                xt[size_t(i)] = rounded ? round_bf16(x[size_t(t * H + i)]) : x[size_t(t * H + i)];
            const std::vector<float>& wg =
                rounded ? gate[size_t(e)].rounded : gate[size_t(e)].exact;
            const std::vector<float>& wu = rounded ? up[size_t(e)].rounded : up[size_t(e)].exact;
            for (int64_t r = 0; r < I; ++r) {
                double g = 0.0, u = 0.0;
                for (int64_t i = 0; i < H; ++i) {
                    g += xt[size_t(i)] * wg[size_t(r * H + i)];
                    u += xt[size_t(i)] * wu[size_t(r * H + i)];
                }
                h[size_t(p * I + r)] = g / (1.0 + std::exp(-g)) * u;
            }
        }
        return h;
    };
    // down of pair p from the given h rows (the kernel's own, so only this product is measured).
    auto down_ref = [&](const std::vector<float>& h, bool rounded) {
        std::vector<double> y(size_t(P * H));
        for (int64_t p = 0; p < P; ++p) {
            const int64_t e = ids[size_t(p)];
            const std::vector<float>& wd =
                rounded ? down[size_t(e)].rounded : down[size_t(e)].exact;
            for (int64_t r = 0; r < H; ++r) {
                double s = 0.0;
                for (int64_t i = 0; i < I; ++i)
                    s += double(h[size_t(p * I + i)]) * wd[size_t(r * I + i)];
                y[size_t(p * H + r)] = s;
            }
        }
        return y;
    };

    // The tensor-core kernel with both tile widths.
    std::vector<float> h_tiles[2], y_tiles[2];
    const int widths[2] = {64, 128};
    for (int w = 0; w < 2; ++w) {
        uint16_t* hb = reinterpret_cast<uint16_t*>(h_d);
        cudaMemcpy(hb, std::vector<uint16_t>(size_t(P * ld_h), k_bf16_nan).data(),
                   size_t(P * ld_h) * 2, cudaMemcpyHostToDevice);
        const ExpertMma mma{xb_d, ld_x, hb, ld_h, widths[w]};
        launch_experts_gate_up(ex, pairs, x_d, n, int32_t(K), H, int32_t(E), h_d, &mma, nullptr,
                               nullptr);
        launch_experts_down(ex, pairs, h_d, n, int32_t(K), H, int32_t(E), y_d, &mma, nullptr,
                            nullptr, nullptr);
        const std::vector<uint16_t> hb_host = host_copy(hb, size_t(P * ld_h));
        h_tiles[w].resize(size_t(P * I));
        for (int64_t p = 0; p < P; ++p)
            for (int64_t i = 0; i < I; ++i)
                h_tiles[w][size_t(p * I + i)] = from_bf16(hb_host[size_t(p * ld_h + i)]);
        y_tiles[w] = host_copy(y_d, size_t(P * H));
    }
    char line[300];
    {
        // h is rounded to bf16 (bf16's unit roundoff: 2^-8 of each value) after fp32 sums of bf16
        // products.
        const Worst wh = compare(h_tiles[0], gate_up_ref(true), 1.0 / 256, 2e-5);
        std::snprintf(line, sizeof line,
                      "%s, tensor cores: gate/up within %.3g of the largest (2^-8 of each, +2e-5)",
                      name.c_str(), wh.rel);
        check(wh.err == 0.0, line);
        // fp32 sums over the kernel's own bf16 h: ~1e-6 of the terms' size.
        const Worst wy = compare(y_tiles[0], down_ref(h_tiles[0], true), 0.0, 1e-5);
        std::snprintf(line, sizeof line,
                      "%s, tensor cores: down within %.3g of the largest (bound 1e-5)",
                      name.c_str(), wy.rel);
        check(wy.err == 0.0, line);
        check(std::memcmp(h_tiles[0].data(), h_tiles[1].data(), h_tiles[0].size() * 4) == 0 &&
                  std::memcmp(y_tiles[0].data(), y_tiles[1].data(), y_tiles[0].size() * 4) == 0,
              name + ", tensor cores: tiles of 64 and 128 rows give the same bits");
    }
    {
        // The fp32 kernel: exact operands, fp32 sums.
        launch_experts_gate_up(ex, pairs, x_d, n, int32_t(K), H, int32_t(E), h_d, nullptr, nullptr,
                               nullptr);
        launch_experts_down(ex, pairs, h_d, n, int32_t(K), H, int32_t(E), y_d, nullptr, nullptr,
                            nullptr, nullptr);
        const std::vector<float> h = host_copy(h_d, size_t(P * I));
        const Worst wh = compare(h, gate_up_ref(false), 0.0, 1e-5);
        const Worst wy = compare(host_copy(y_d, size_t(P * H)), down_ref(h, false), 0.0, 1e-5);
        std::snprintf(
            line, sizeof line,
            "%s, fp32 kernel: gate/up within %.3g, down within %.3g of the largest (bound 1e-5)",
            name.c_str(), wh.rel, wy.rel);
        check(wh.err == 0.0 && wy.err == 0.0, line);
    }
    if (n <= k_fused_tail_max_tokens)
        check_fused_combine(name, ex, pairs, gm[0], um[0], dm[0], x_d, h_d, y_d, n, K, H, E, rng);
    if (dt == DeviceDtype::Ggml && n <= 2)
        check_staged(name, ex, gm, um, dm, pairs, x_d, h_d, y_d, n, K, H, E, I, c.doubled, rng);
    if (dt == DeviceDtype::Ggml) {
        // The fp32 kernel with the fast mode's sums of GGUF blocks (DeviceMatrix::ggml_fast:
        // codes times activations, then scales and offsets): the same bound.
        DeviceExperts fast = experts_marked(ex, gm, um, dm, [](DeviceMatrix& m) { m.ggml_fast = true; });
        fast.ggml_fast = true;
        launch_experts_gate_up(fast, pairs, x_d, n, int32_t(K), H, int32_t(E), h_d, nullptr, nullptr, nullptr);
        launch_experts_down(fast, pairs, h_d, n, int32_t(K), H, int32_t(E), y_d, nullptr, nullptr, nullptr, nullptr);
        const std::vector<float> h = host_copy(h_d, size_t(P * I));
        const Worst wh = compare(h, gate_up_ref(false), 0.0, 1e-5);
        const Worst wy = compare(host_copy(y_d, size_t(P * H)), down_ref(h, false), 0.0, 1e-5);
        std::snprintf(line, sizeof line,
                      "%s, fp32 kernel, fast sums: gate/up within %.3g, down within %.3g of the largest (bound 1e-5)",
                      name.c_str(), wh.rel, wy.rel);
        check(wh.err == 0.0 && wy.err == 0.0, line);
        for (const DeviceMatrix* p : {fast.gate, fast.up, fast.down}) cudaFree(const_cast<DeviceMatrix*>(p));
    }
    if (dt == DeviceDtype::Ggml && ggml_int8_fits_type(c.gate_type) && ggml_int8_fits_type(c.up_type) &&
        ggml_int8_fits_type(c.down_type) && gm[0].ggml_values == um[0].ggml_values) {
        // The fp32 kernel in the int8 form (DeviceMatrix::ggml_int8: each pair's activations
        // quantised per block of the weights, integer dot products): against the double sums of
        // the host's values times the activations as cpu::quantise_int8 quantises them (x for
        // gate/up, the kernel's own h for down), within the fp32 kernel's bound.
        DeviceExperts q8 = experts_marked(ex, gm, um, dm, [](DeviceMatrix& m) { m.ggml_int8 = true; });
        q8.ggml_int8_gate_up = gm[0].ggml_values;
        q8.ggml_int8_down = dm[0].ggml_values;
        const uint64_t before = ggml_int8_launches();
        launch_experts_gate_up(q8, pairs, x_d, n, int32_t(K), H, int32_t(E), h_d, nullptr, nullptr, nullptr);
        launch_experts_down(q8, pairs, h_d, n, int32_t(K), H, int32_t(E), y_d, nullptr, nullptr, nullptr, nullptr);
        check(ggml_int8_launches() - before == 2, name + ", fp32 kernel, int8 sums: both launches took the int8 form");
        const std::vector<float> h = host_copy(h_d, size_t(P * I));
        const std::vector<double> xq = int8_dequantised(x, n, H, gm[0].ggml_values);
        const std::vector<double> hq = int8_dequantised(h, P, I, dm[0].ggml_values);
        std::vector<double> hw(size_t(P * I)), yw(size_t(P * H));
        for (int64_t p = 0; p < P; ++p) {
            const int64_t t = p / K, e = ids[size_t(p)];
            mlp_reference_row(&xq[size_t(t * H)], gate[size_t(e)].exact, up[size_t(e)].exact, I, H,
                              &hw[size_t(p * I)], &hq[size_t(p * I)], down[size_t(e)].exact, &yw[size_t(p * H)]);
        }
        const Worst wh = compare(h, hw, 0.0, 1e-5);
        const Worst wy = compare(host_copy(y_d, size_t(P * H)), yw, 0.0, 1e-5);
        std::snprintf(line, sizeof line,
                      "%s, fp32 kernel, int8 sums: gate/up within %.3g, down within %.3g of the largest (bound 1e-5)",
                      name.c_str(), wh.rel, wy.rel);
        check(wh.err == 0.0 && wy.err == 0.0, line);
        // The int8 activations move the products from the unquantised ones by at most half a
        // step of each value (d / 2) times the weights: here within 2 % of the largest.
        const Worst loose = compare(h, gate_up_ref(false), 0.0, 2e-2);
        check(loose.err == 0.0 && loose.rel > 1e-6,
              name + ", fp32 kernel, int8 sums: gate/up near the unquantised products (" + std::to_string(loose.rel) +
                  " of the largest, not the same)");
        for (const DeviceMatrix* p : {q8.gate, q8.up, q8.down}) cudaFree(const_cast<DeviceMatrix*>(p));
        if (n <= 2 && H % 256 == 0 && (gm[0].ggml_values != 256 || dm[0].ggml_values != 256))
            check_int8_mixed_shared(name, ex, gm, um, dm, pairs, x, x_d, h_d, y_d, n, K, H, E, I, rng);
    }
    if (cudaDeviceSynchronize() != cudaSuccess)
        check(false, name + ": kernels: " + cudaGetErrorString(cudaGetLastError()));
    for (void* p : owned) cudaFree(p);
    for (const void* p : {static_cast<const void*>(ex.gate), static_cast<const void*>(ex.up),
                          static_cast<const void*>(ex.down), static_cast<const void*>(x_d),
                          static_cast<const void*>(ids_d), static_cast<const void*>(xb_d),
                          static_cast<const void*>(h_d), static_cast<const void*>(y_d)})
        cudaFree(const_cast<void*>(p));
    for (int32_t* p : {pairs.counts, pairs.offsets, pairs.active, pairs.n_active, pairs.list,
                       pairs.tiles, pairs.n_tiles})
        cudaFree(p);
}

} // namespace

// device_matrix_bytes (the L2 prefetch's ranges, CETUS_CUDA_PREFETCH_AHEAD=1) against the
// bytes each weight's upload allocated, in every weight type, at widths that pad their
// rows; then the prefetch launched over them (the emulator checks each range).
void check_matrix_bytes() {
    std::mt19937 rng(5);
    std::vector<void*> owned;
    std::vector<Weight> ws;
    for (DeviceDtype dt : {DeviceDtype::F32, DeviceDtype::BF16, DeviceDtype::F8_E4M3})
        ws.push_back(make_weight(dt, 37, 203, rng, owned));
    ws.push_back(make_ggml_weight(12, 37, 512, rng, owned));  // Q4_K
    ws.push_back(make_ggml_weight(14, 9, 768, rng, owned));   // Q6_K
    ws.push_back(make_ggml_weight(6, 5, 96, rng, owned));     // Q5_0, rows of 66 bytes
    L2Ranges r;
    bool ok = true;
    std::string sizes;
    for (const Weight& w : ws) {
        const int64_t bytes = device_matrix_bytes(w.m);
#ifdef CETUS_CUDA_EMU
        const size_t allocated = cuda_emu::allocation_bytes(w.m.data);
#else  // (on a GPU: the bytes make_weight and make_ggml_weight copy)
        const size_t allocated = size_t(w.m.rows * w.m.ld) * (w.m.dtype == DeviceDtype::F32    ? 4
                                                              : w.m.dtype == DeviceDtype::BF16 ? 2
                                                                                               : 1);
#endif
        ok = ok && bytes > 0 && size_t(bytes) == allocated;
        sizes += " " + std::to_string(bytes) + "/" + std::to_string(allocated);
        if (r.n < L2Ranges::k_max) {
            r.p[r.n] = w.m.data;
            r.bytes[r.n++] = bytes;
        }
    }
    check(ok, "device_matrix_bytes == the bytes allocated (F32, BF16, FP8, Q4_K, Q6_K, Q5_0):" + sizes);
    launch_l2_prefetch(r, 132, nullptr);
    cudaDeviceSynchronize();
    check(cudaGetLastError() == cudaSuccess, "the L2 prefetch over them launches");
    for (void* p : owned) cudaFree(p);
}

int main(int argc, char** argv) {
    const bool v2_lite = argc > 1 && std::strcmp(argv[1], "--v2-lite") == 0;
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("experts check: no CUDA device (%s)\n", cudaGetErrorString(cudaGetLastError()));
        return 1;
    }
    try {
        // 90 tokens: expert 0 gets 90 pairs (a full tile and 26), experts 1-4 ~22 each, expert 5
        // none.
        const Case odd{"203 wide, 75 inner", 203, 75, 6, 2, 90};
        // Whole tiles and steps: 3 (or 6) row tiles for gate/up, 4 (or 8) for down.
        const Case whole{"512 wide, 384 inner", 512, 384, 4, 2, 40};
        // V2-Lite's widths: 11 (or 22) row tiles for gate/up, 16 (or 32) for down.
        const Case v2{"V2-Lite's 2048 wide, 1408 inner", 2048, 1408, 8, 6, 24};
        // One and two tokens (decode and a one-draft verify batch): the fused combine.
        const Case one{"203 wide, 75 inner", 203, 75, 6, 2, 1}, two{"264 wide, 96 inner", 264, 96, 6, 3, 2};
        // A row wider than the 8 x 256 values the fused norm keeps in registers.
        const Case wide{"2100 wide, 40 inner", 2100, 40, 4, 2, 1};
        check_matrix_bytes();
        std::vector<Case> cases{odd, whole, one, two, wide};
        if (v2_lite) cases.push_back(v2);
        if (v2_lite) cases.push_back({"V2-Lite's 2048 wide, 1408 inner", 2048, 1408, 8, 6, 1});
        for (const Case& c : cases)
            for (DeviceDtype dt : {DeviceDtype::BF16, DeviceDtype::F8_E4M3}) run_case(c, dt);
        // Narrow products (four warps a row: 203 rows, ending inside a block of rows) and wide
        // ones (a warp a row: 8200 rows).
        for (DeviceDtype dt : {DeviceDtype::BF16, DeviceDtype::F8_E4M3}) {
            check_fused_add_norm(dt, 203, 136);
            check_fused_add_norm(dt, 8200, 40);
        }
        // GGUF blocks, as llama.cpp's Q4_K_M files hold experts: Q4_K (256-value blocks) for
        // gate and up, Q6_K for down, and 32-value types where a row is not whole 256-value
        // blocks. 352 rows end inside a tile of 64 and of 128.
        run_case({"512 wide, 352 inner", 512, 352, 5, 2, 72, 12, 14, 8}, DeviceDtype::Ggml);
        run_case({"768 wide, 256 inner", 768, 256, 4, 2, 40, 14, 12, 12}, DeviceDtype::Ggml);
        // One and two tokens, as decode and a one-draft MTP verify run them: the fp32
        // kernel's warps take two rows each.
        run_case({"768 wide, 256 inner, 1 token", 768, 256, 4, 2, 1, 12, 14, 8}, DeviceDtype::Ggml);
        run_case({"1024 wide, 352 inner, 2 tokens", 1024, 352, 6, 3, 2, 12, 12, 6}, DeviceDtype::Ggml);
        // 32-value types throughout; the down products' 800 rows end inside a tile too.
        run_case({"800 wide, 288 inner", 800, 288, 4, 2, 24, 6, 8, 6}, DeviceDtype::Ggml);
        // One token of 32-value types, as V2-Lite's Q4_K_M down projections (1,408 values:
        // 44 blocks, a tile of 32 and one of 12).
        run_case({"256 wide, 1408 inner, 1 token", 256, 1408, 3, 2, 1, 8, 8, 6, 1}, DeviceDtype::Ggml);
        // Gate and up rows of three tiles (72 chunks), staged with two buffers: the first
        // buffer's slots are copied into again for the third tile.
        run_case({"2304 wide, 96 inner, 1 token", 2304, 96, 4, 2, 1, 12, 12, 8, 1}, DeviceDtype::Ggml);
        run_case({"2304 wide, 96 inner, 2 tokens", 2304, 96, 4, 2, 2, 12, 12, 8, 1}, DeviceDtype::Ggml);
        if (v2_lite) run_case({"V2-Lite's 2048 wide, 1408 inner", 2048, 1408, 8, 6, 24, 12, 12, 6}, DeviceDtype::Ggml);
        if (v2_lite)
            run_case({"V2-Lite's 2048 wide, 1408 inner, 1 token", 2048, 1408, 8, 6, 1, 12, 12, 6, 2}, DeviceDtype::Ggml);
    } catch (const std::exception& e) {
        check(false, e.what());
    }
    std::printf("experts check: %d failed\n", g_failed);
    return g_failed == 0 ? 0 : 1;
}
