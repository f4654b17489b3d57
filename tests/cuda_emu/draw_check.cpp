// Random models' matrices drawn on the device (random_draws.h, cuda/draw_weights.cu)
// against the bytes the host builds (random_model.cpp): both models uploaded
// (device_weights.cpp), every matrix's device form compared byte for byte: BF16
// values, FP8 codes and their block scales, GGUF blocks in the device's layout
// (Q4_K, Q5_0, Q8_0 and Q6_K, whose rows are rearranged) and the router's blocks
// decoded to fp32; the embedding and output head of a medium model are larger than
// one grid of the drawing kernels, so their loops wrap. Built for the CUDA emulator.
#include "cetus/engine.h"
#include "check_util.h"
#include "device_weights.h"
#include "model.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace cetus {
std::unique_ptr<Model> build_random_model(const RandomModelOptions& r, bool drawn);  // random_model.cpp
}

namespace {

using namespace cetus;
using namespace cetus::cuda;

// Every matrix a DeviceWeights holds, the experts' through their descriptor tables.
std::vector<DeviceMatrix> matrices(const DeviceWeights& w, int64_t n_experts) {
    std::vector<DeviceMatrix> out{w.embed, w.lm_head};
    auto layer = [&](const DeviceLayer& l) {
        for (const DeviceMatrix& m : {l.q_proj, l.q_a, l.q_b, l.kv_a, l.kv_b, l.o, l.mlp.gate, l.mlp.up, l.mlp.down,
                                      l.router, l.shared.gate, l.shared.up, l.shared.down})
            if (m.data) out.push_back(m);
        if (!l.is_moe) return;
        for (const DeviceMatrix* t : {l.experts.gate, l.experts.up, l.experts.down})
            for (const DeviceMatrix& m : check::host_copy(t, size_t(n_experts))) out.push_back(m);
    };
    for (const DeviceLayer& l : w.layers) layer(l);
    for (const DeviceMtp& m : w.mtp) {
        out.push_back(m.embed);
        out.push_back(m.eh_proj);
        out.push_back(m.head);
        layer(m.block);
    }
    return out;
}

// The bytes of a matrix's rows (and FP8 block scales) as the device holds them.
std::vector<uint8_t> bytes_of(const DeviceMatrix& m) {
    const int64_t element = m.dtype == DeviceDtype::F32 ? 4 : m.dtype == DeviceDtype::BF16 ? 2 : 1;  // Ggml: ld in bytes
    std::vector<uint8_t> b = check::host_copy(static_cast<const uint8_t*>(m.data), size_t(m.rows * m.ld * element));
    if (m.scale_inv) {
        const auto s = check::host_copy(reinterpret_cast<const uint8_t*>(m.scale_inv),
                                        size_t((m.rows + 127) / 128 * m.scale_cols * 4));
        b.insert(b.end(), s.begin(), s.end());
    }
    return b;
}

void compare(const RandomModelOptions& o, const std::string& name) {
    const auto host = build_random_model(o, false), drawn = build_random_model(o, true);
    const ModelConfig& c = host->config();
    const int64_t capacity = 8;
    std::vector<float> rope(size_t(capacity * c.qk_rope_head_dim), 0.5f);
    UploadOptions uo;
    const DeviceWeights a = upload_weights(*host, rope.data(), capacity, uo);
    const DeviceWeights b = upload_weights(*drawn, rope.data(), capacity, uo);
    const std::vector<DeviceMatrix> ma = matrices(a, c.n_routed_experts), mb = matrices(b, c.n_routed_experts);
    bool same_layout = ma.size() == mb.size() && a.memory.bytes() == b.memory.bytes();
    int64_t differ = 0, kinds[4] = {0, 0, 0, 0};
    uint64_t compared = 0;
    for (size_t i = 0; same_layout && i < ma.size(); ++i) {
        const DeviceMatrix &x = ma[i], &y = mb[i];
        if (x.dtype != y.dtype || x.rows != y.rows || x.cols != y.cols || x.ld != y.ld || x.ggml_type != y.ggml_type ||
            (x.scale_inv == nullptr) != (y.scale_inv == nullptr)) {
            same_layout = false;
            break;
        }
        const std::vector<uint8_t> bx = bytes_of(x), by = bytes_of(y);
        differ += bx != by;
        compared += bx.size();
        ++kinds[int(x.dtype)];
    }
    check::check(same_layout && differ == 0 && compared > 0,
                 name + ": " + std::to_string(ma.size()) + " matrices drawn on the device == built on the host, " +
                     std::to_string(compared) + " bytes (" + std::to_string(kinds[0]) + " fp32, " +
                     std::to_string(kinds[1]) + " bf16, " + std::to_string(kinds[2]) + " fp8, " +
                     std::to_string(kinds[3]) + " GGUF; " + std::to_string(differ) + " differ" +
                     (same_layout ? "" : ", the layouts differ") + ")");
    // The decode's byte count (bench) knows the drawn matrices as the host-built ones.
    uint64_t read_a = 0, read_b = 0;
    for (const auto& [key, n] : a.read_bytes) read_a += n;
    for (const auto& [key, n] : b.read_bytes) read_b += n;
    check::check(read_a == read_b && a.read_bytes.size() == b.read_bytes.size() && read_a > 0,
                 name + ": bytes read per pass counted alike (" + std::to_string(read_a) + " and " +
                     std::to_string(read_b) + ")");
}

}  // namespace

int main() {
    try {
        compare({"tiny", "bf16", 0, 3}, "tiny bf16");
        compare({"tiny", "fp8", 0, 3}, "tiny fp8");
        // MLP width 512: whole 256-blocks, so the dense down projection is Q6_K; the
        // experts' 64-wide rows are Q5_0 and Q8_0.
        compare({"tiny", "q4_k_m", 0, 3, 512}, "tiny q4_k_m");
        // 32000 x 768 embedding and head: 24.6 M values, more than one grid's 16.8 M threads.
        compare({"medium-cpu", "bf16", 2, 5}, "medium-cpu 2 layers bf16");
    } catch (const std::exception& e) {
        check::check(false, std::string("draw check: ") + e.what());
    }
    std::printf("%s\n", check::g_failed ? "draw check: FAILED" : "draw check: all passed");
    return check::g_failed ? 1 : 0;
}
