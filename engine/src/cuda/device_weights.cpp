// The layout is computed twice by the same code: once without memory to
// measure it, then over the real allocation, collecting one copy job per
// tensor. The jobs run through two pinned 64 MiB staging buffers: while the
// GPU copies one, the host fills the other from the (mmap'd) checkpoint. A
// random model's drawn matrices (Matrix::drawn) are drawn on the device instead.
#include "device_weights.h"

#include "cetus/error.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <tuple>

namespace cetus::cuda {
namespace {

// One host tensor region to copy: n_rows rows of src_row_bytes, to rows dst_pitch apart.
struct CopyJob {
    char* dst;
    size_t dst_pitch;
    const void* src;
    size_t src_row_bytes;
    size_t n_rows;
    bool widen_f16;  // F16 source written as F32
    // A GGUF block-quantised matrix (Dtype::Ggml) written as fp32, for the kernels that
    // read no blocks: its rows of blocks (src_row_bytes each) go up in the device's
    // layout (kernels.h: ggml_device_row), rows padded to 16 bytes, and are decoded on
    // the device (launch_ggml_to_f32) into rows of ggml_cols values.
    bool ggml = false;
    // A GGUF matrix kept in its blocks: rows of ggml_type's blocks written in the
    // device's layout.
    bool ggml_rows = false;
    uint32_t ggml_type = 0;
    int64_t ggml_cols = 0;  // (and a drawn matrix's columns)
    // A random model's matrix drawn on the device (src is null): straight into dst, or
    // for ggml into the blocks' landing place and decoded from there.
    const random_draws::Recipe* drawn = nullptr;
    size_t staged_row_bytes() const {
        return widen_f16 ? src_row_bytes * 2 : ggml ? (src_row_bytes + 15) / 16 * 16 : src_row_bytes;
    }
    // Rows whose bytes are not copied as they are.
    bool rearranged() const { return (ggml || ggml_rows) && ggml_row_rearranged(ggml_type); }
};

class Layout {
public:
    // ggml_fast: the GGUF matrices' DeviceMatrix::ggml_fast (and their experts').
    Layout(const ModelConfig& c, char* base, bool ggml_fast = false, bool l2_prefetch = false, uint8_t ggml_stage = 0)
        : m_config(c), m_carver(base), m_ggml_fast(ggml_fast), m_l2_prefetch(l2_prefetch), m_ggml_stage(ggml_stage) {}

    size_t bytes() const { return m_carver.bytes(); }
    std::vector<CopyJob>& jobs() { return m_jobs; }
    const std::map<const void*, uint64_t>& read_bytes() const { return m_read_bytes; }

    const float* floats(const float* p, size_t n) {
        if (n == 0) return nullptr;
        float* d = m_carver.take<float>(n);
        m_jobs.push_back({reinterpret_cast<char*>(d), n * 4, p, n * 4, 1, false});
        return d;
    }
    const float* vector(const std::vector<float>& v) { return floats(v.data(), v.size()); }

    // blocks: a GGUF matrix stays in its blocks (the warp-per-row kernels and the
    // embedding read them); else it is decoded to fp32 (exact: the CPU's values).
    DeviceMatrix matrix(const Matrix& m, bool blocks = true) {
        const Key key{m.key(), int(m.dtype), m.rows, m.cols, blocks};
        if (auto it = m_seen.find(key); it != m_seen.end()) return it->second;
        DeviceMatrix d;
        d.rows = m.rows;
        d.cols = m.cols;
        if (m.dtype == Dtype::Ggml && blocks) {
            d = ggml_blocks(m);
            d.l2_prefetch = m_l2_prefetch;
            m_seen.emplace(key, d);
            m_read_bytes[m.key()] = uint64_t(m.rows) * uint64_t(ggml_bytes_per_row(m));
            return d;
        }
        size_t host_bytes = 0, dev_bytes = 0;  // per element
        switch (m.dtype) {
        case Dtype::F32:
            d.dtype = DeviceDtype::F32;
            host_bytes = dev_bytes = 4;
            break;
        case Dtype::F16:  // widened: every half is exact in fp32
            d.dtype = DeviceDtype::F32;
            host_bytes = 2;
            dev_bytes = 4;
            break;
        case Dtype::BF16:
            d.dtype = DeviceDtype::BF16;
            host_bytes = dev_bytes = 2;
            break;
        case Dtype::F8_E4M3:
            d.dtype = DeviceDtype::F8_E4M3;
            host_bytes = dev_bytes = 1;
            break;
        case Dtype::Ggml:  // GGUF blocks, decoded on the device to fp32 (host_bytes: see below)
            d.dtype = DeviceDtype::F32;
            dev_bytes = 4;
            break;
        default:
            throw Error(ErrorCode::Unsupported, "CUDA backend: a " + std::to_string(m.rows) + " x " +
                                                    std::to_string(m.cols) + " weight has a dtype it cannot hold");
        }
        d.ld = (m.cols * int64_t(dev_bytes) + 15) / 16 * 16 / int64_t(dev_bytes);
        char* p = m_carver.take<char>(size_t(m.rows) * size_t(d.ld) * dev_bytes);
        d.data = p;
        size_t src_row_bytes = size_t(m.cols) * host_bytes;
        if (m.dtype == Dtype::Ggml) src_row_bytes = size_t(ggml_bytes_per_row(m));
        m_jobs.push_back({p, size_t(d.ld) * dev_bytes, m.data, src_row_bytes, size_t(m.rows), m.dtype == Dtype::F16});
        if (m.dtype == Dtype::Ggml) {
            m_jobs.back().ggml = true;
            m_jobs.back().ggml_type = m.ggml_type;
        }
        m_jobs.back().ggml_cols = m.cols;
        m_jobs.back().drawn = m.drawn;
        if (m.dtype == Dtype::F8_E4M3) {
            if (!m.scale_inv || m.scale_cols < (m.cols + 127) / 128)
                throw Error(ErrorCode::Unsupported, "CUDA backend: an FP8 weight without its block scales");
            d.scale_cols = m.scale_cols;
            d.scale_inv = floats(m.scale_inv, size_t((m.rows + 127) / 128 * m.scale_cols));
        }
        d.l2_prefetch = m_l2_prefetch;
        m_seen.emplace(key, d);
        m_read_bytes[m.key()] = uint64_t(m.rows) * uint64_t(m.cols) * dev_bytes +
                               (d.scale_inv ? uint64_t((m.rows + 127) / 128 * m.scale_cols) * 4 : 0);
        return d;
    }

    // A GGUF matrix's rows of blocks, in the device's layout, rows padded to 16 bytes.
    DeviceMatrix ggml_blocks(const Matrix& m) {
        const int64_t row = ggml_bytes_per_row(m), ld = (row + 15) / 16 * 16;
        char* p = m_carver.take<char>(size_t(m.rows) * size_t(ld));
        m_jobs.push_back({p, size_t(ld), m.data, size_t(row), size_t(m.rows), false});
        m_jobs.back().ggml_rows = true;
        m_jobs.back().ggml_type = m.ggml_type;
        m_jobs.back().ggml_cols = m.cols;
        m_jobs.back().drawn = m.drawn;
        DeviceMatrix d = ggml_device_matrix(m.ggml_type, m.rows, m.cols, p, ld);
        d.ggml_fast = m_ggml_fast;
        d.ggml_stage = ggml_stage_fits_type(m.ggml_type) ? m_ggml_stage : uint8_t(0);
        d.ggml_int8 = m.int8_activations && ggml_int8_fits_type(m.ggml_type);
        return d;
    }
    // Bytes of one of m's rows of blocks; throws for a type the device cannot decode.
    static int64_t ggml_bytes_per_row(const Matrix& m) {
        const int64_t raw = ggml_row_bytes(m.ggml_type, m.cols);
        if (raw <= 0)
            throw Error(ErrorCode::Unsupported, "CUDA backend: a " + std::to_string(m.rows) + " x " +
                                                    std::to_string(m.cols) + " GGUF weight of ggml type " +
                                                    std::to_string(m.ggml_type) + ", which it cannot decode");
        return raw;
    }

    DeviceMlp mlp(const MlpWeights& w) { return {matrix(w.gate), matrix(w.up), matrix(w.down)}; }

    DeviceLayer layer(const LayerWeights& lw, int64_t index) {
        DeviceLayer d;
        d.input_norm = vector(lw.input_layernorm);
        d.post_norm = vector(lw.post_attention_layernorm);
        const AttentionWeights& a = lw.attn;
        d.q_lora = m_config.q_lora_rank > 0;
        if (d.q_lora) {
            d.q_a = matrix(a.q_a_proj);
            d.q_a_norm = vector(a.q_a_layernorm);
            d.q_b = matrix(a.q_b_proj);
        } else {
            d.q_proj = matrix(a.q_proj);
        }
        d.kv_a = matrix(a.kv_a_proj_with_mqa);
        d.kv_a_norm = vector(a.kv_a_layernorm);
        d.kv_b = matrix(a.kv_b_proj);
        d.o = matrix(a.o_proj);
        d.is_moe = lw.is_moe;
        if (!lw.is_moe) {
            d.mlp = mlp(lw.mlp);
            return d;
        }
        const MoeWeights& m = lw.moe;
        d.router = matrix(m.gate, false);  // (the fused router reads no blocks)
        d.bias = vector(m.e_score_correction_bias);
        const size_t E = m.experts.size();
        std::vector<DeviceMatrix> table(3 * E);  // gate [E], up [E], down [E]
        for (size_t e = 0; e < E; ++e) {
            table[e] = matrix(m.experts[e].gate);
            table[E + e] = matrix(m.experts[e].up);
            table[2 * E + e] = matrix(m.experts[e].down);
            // The grouped kernels are compiled per dtype: one for gate/up, one for down.
            if (table[e].dtype != table[0].dtype || table[E + e].dtype != table[0].dtype ||
                table[2 * E + e].dtype != table[2 * E].dtype)
                throw Error(ErrorCode::Unsupported, "CUDA backend: layer " + std::to_string(index) +
                                                        " mixes weight dtypes across its experts");
        }
        const DeviceDtype gate_up_dtype = E ? table[0].dtype : DeviceDtype::F32;
        const DeviceDtype down_dtype = E ? table[2 * E].dtype : DeviceDtype::F32;
        // (every expert's blocks staged, or none: a launch is one kernel; matrices of other
        // dtypes never take the GGUF kernels), each launch's slots the size of its largest
        uint8_t stage = m_ggml_stage;
        bool stage_fits = true;
        int32_t slot[2] = {};  // gate and up, down
        // (the int8 form where every matrix of a launch has it, with blocks of one size)
        int32_t int8_block[2] = {-1, -1};
        for (size_t i = 0; i < table.size(); ++i) {
            const DeviceMatrix& x = table[i];
            int32_t& q = int8_block[i < 2 * E ? 0 : 1];
            const int32_t values = x.dtype == DeviceDtype::Ggml && x.ggml_int8 ? x.ggml_values : 0;
            q = q < 0 || q == values ? values : 0;
            if (x.dtype != DeviceDtype::Ggml) continue;
            stage = std::min(stage, x.ggml_stage);
            stage_fits = stage_fits && ggml_stage_fits_type(x.ggml_type);
            int32_t& s = slot[i < 2 * E ? 0 : 1];
            s = std::max(s, ggml_stage_slot_bytes(x.ggml_type));
        }
        const DeviceMatrix* t = descriptors(std::move(table));
        d.experts = DeviceExperts{t, t + E, t + 2 * E, gate_up_dtype, down_dtype, m_config.moe_intermediate_size,
                                  m_ggml_fast};
        d.experts.ggml_stage = stage;
        d.experts_stage_fits = stage_fits;
        d.experts.ggml_slot_gate_up = slot[0];
        d.experts.ggml_slot_down = slot[1];
        d.experts.ggml_int8_gate_up = std::max(int8_block[0], 0);
        d.experts.ggml_int8_down = std::max(int8_block[1], 0);
        d.has_shared = m.has_shared;
        if (m.has_shared) d.shared = mlp(m.shared);
        return d;
    }

private:
    // Copies of descriptor tables stay here until the upload has staged them.
    const DeviceMatrix* descriptors(std::vector<DeviceMatrix> table) {
        m_tables.push_back(std::move(table));
        const std::vector<DeviceMatrix>& t = m_tables.back();
        DeviceMatrix* d = m_carver.take<DeviceMatrix>(t.size());
        const size_t n = t.size() * sizeof(DeviceMatrix);
        m_jobs.push_back({reinterpret_cast<char*>(d), n, t.data(), n, 1, false});
        return d;
    }

    using Key = std::tuple<const void*, int, int64_t, int64_t, bool>;
    const ModelConfig& m_config;
    Carver m_carver;
    bool m_ggml_fast;
    bool m_l2_prefetch;
    uint8_t m_ggml_stage;
    std::map<Key, DeviceMatrix> m_seen;
    std::map<const void*, uint64_t> m_read_bytes;
    std::deque<std::vector<DeviceMatrix>> m_tables;
    std::vector<CopyJob> m_jobs;
};

// Lays out the whole model (main layers, then MTP modules, then the rope table).
DeviceWeights lay_out(const Model& model, const float* rope_table, int64_t capacity, Layout& l) {
    const ModelConfig& c = model.config();
    DeviceWeights w;
    w.embed = l.matrix(model.embed());
    w.lm_head = l.matrix(model.lm_head());
    w.final_norm = l.vector(model.final_norm());
    for (size_t i = 0; i < model.layers().size(); ++i) w.layers.push_back(l.layer(model.layers()[i], int64_t(i)));
    for (size_t k = 0; k < model.mtp_weights().size(); ++k) {
        const MtpWeights& m = model.mtp_weights()[k];
        DeviceMtp d;
        d.embed = l.matrix(m.embed_tokens);
        d.enorm = l.vector(m.enorm);
        d.hnorm = l.vector(m.hnorm);
        d.eh_proj = l.matrix(m.eh_proj);
        d.head_norm = l.vector(m.shared_head_norm);
        d.head = l.matrix(m.shared_head_head);
        d.block = l.layer(m.block, c.num_hidden_layers + int64_t(k));
        w.mtp.push_back(d);
    }
    w.rope_table = l.floats(rope_table, size_t(capacity * c.qk_rope_head_dim));
    return w;
}

// Double-buffered staging: jobs are cut into pieces that fit the free part of
// the current buffer (contiguous regions anywhere, padded or widened rows at
// row boundaries); a full buffer is handed to the GPU and the host moves to
// the other one once the GPU has finished reading it.
class Uploader {
public:
    static constexpr size_t k_buffer_bytes = size_t(64) << 20;

    Uploader(const UploadOptions& o, size_t total_bytes) : m_o(o), m_total(std::max<size_t>(total_bytes, 1)) {
        for (int i = 0; i < 2; ++i) {
            m_buffer[i] = PinnedBuffer(k_buffer_bytes);
            m_free[i] = make_event();
        }
    }
    // Copies in flight may still read the staging buffers.
    ~Uploader() { cudaStreamSynchronize(m_o.stream); }
    Uploader(const Uploader&) = delete;
    Uploader& operator=(const Uploader&) = delete;

    void run(const std::vector<CopyJob>& jobs) {
        report(0.0f);
        for (const CopyJob& j : jobs) copy(j);
        CETUS_CUDA(cudaStreamSynchronize(m_o.stream));
        report(1.0f);
    }

private:
    void copy(const CopyJob& j) {
        if (j.drawn) {
            draw(j);
            return;
        }
        if (!j.widen_f16 && !j.ggml && !j.rearranged() && j.dst_pitch == j.src_row_bytes) {
            copy_bytes(j.dst, static_cast<const char*>(j.src), j.n_rows * j.src_row_bytes);
            return;
        }
        // Padded, widened or rearranged rows: whole rows per piece.
        const size_t row = staged_row(j);
        for (size_t r0 = 0; r0 < j.n_rows;) {
            if (m_o.cancel && m_o.cancel->load()) throw Error(ErrorCode::Cancelled, "loading cancelled");
            size_t n = std::min(j.n_rows - r0, (k_buffer_bytes - m_used) / row);
            if (n == 0) {
                next_buffer();
                continue;
            }
            char* stage = m_buffer[m_current].get() + m_used;
            const char* src = static_cast<const char*>(j.src) + r0 * j.src_row_bytes;
            if (j.rearranged() || j.ggml) {
                for (size_t i = 0; i < n; ++i)
                    ggml_device_row(j.ggml_type, src + i * j.src_row_bytes, stage + i * row, j.ggml_cols);
            }
            if (j.ggml) {
                // The blocks go up, then the device decodes them (the CPU backend's
                // values) into their rows; the next piece's copy into m_raw waits for
                // that on the stream.
                CETUS_CUDA(cudaMemcpyAsync(m_raw.get(), stage, n * row, cudaMemcpyHostToDevice, m_o.stream));
                launch_ggml_to_f32(j.ggml_type, m_raw.get(), int64_t(row), int64_t(n), j.ggml_cols,
                                   reinterpret_cast<float*>(j.dst + r0 * j.dst_pitch), int64_t(j.dst_pitch / 4),
                                   m_o.stream);
            } else if (j.widen_f16) {
                const size_t count = n * j.src_row_bytes / 2;
                for (size_t i = 0; i < count; ++i) {
                    uint16_t h;
                    std::memcpy(&h, src + 2 * i, 2);
                    const float f = __half2float(__half(__half_raw{h}));  // exact (a NaN stays a NaN)
                    std::memcpy(stage + 4 * i, &f, 4);
                }
            } else if (!j.rearranged()) {
                std::memcpy(stage, src, n * row);
            }
            if (!j.ggml)
                CETUS_CUDA(cudaMemcpy2DAsync(j.dst + r0 * j.dst_pitch, j.dst_pitch, stage, row, row, n,
                                             cudaMemcpyHostToDevice, m_o.stream));
            m_used += n * row;
            r0 += n;
            m_done += n * j.src_row_bytes;
            report(float(double(m_done) / double(m_total)));
        }
    }

    // Bytes of j's rows as staged (throws for one over the staging buffer); for GGUF
    // blocks decoded to fp32, makes their landing place on the device when first needed.
    size_t staged_row(const CopyJob& j) {
        const size_t row = j.staged_row_bytes();
        if (row > k_buffer_bytes)
            throw Error(ErrorCode::Unsupported, "CUDA backend: a weight row of " + std::to_string(row) +
                                                    " bytes exceeds the staging buffer");
        if (j.ggml && !m_raw.get()) m_raw = DeviceBuffer(k_buffer_bytes);
        return row;
    }

    // A drawn matrix: on the device, in the stream's order (after the allocation's
    // zeroing, and for GGUF blocks decoded to fp32 after the previous piece's decode
    // has read the landing place).
    void draw(const CopyJob& j) {
        if (m_o.cancel && m_o.cancel->load()) throw Error(ErrorCode::Cancelled, "loading cancelled");
        if (!j.ggml) {
            launch_draw_matrix(*j.drawn, 0, int64_t(j.n_rows), j.ggml_cols, j.dst, int64_t(j.dst_pitch), m_o.stream);
        } else {
            const size_t row = staged_row(j);
            for (size_t r0 = 0; r0 < j.n_rows;) {
                const size_t n = std::min(j.n_rows - r0, k_buffer_bytes / row);
                launch_draw_matrix(*j.drawn, int64_t(r0), int64_t(n), j.ggml_cols, m_raw.get(), int64_t(row),
                                   m_o.stream);
                launch_ggml_to_f32(j.ggml_type, m_raw.get(), int64_t(row), int64_t(n), j.ggml_cols,
                                   reinterpret_cast<float*>(j.dst + r0 * j.dst_pitch), int64_t(j.dst_pitch / 4),
                                   m_o.stream);
                r0 += n;
            }
        }
        m_done += j.n_rows * j.src_row_bytes;
        report(float(double(m_done) / double(m_total)));
    }

    // A contiguous region, cut anywhere.
    void copy_bytes(char* dst, const char* src, size_t bytes) {
        for (size_t done = 0; done < bytes;) {
            if (m_o.cancel && m_o.cancel->load()) throw Error(ErrorCode::Cancelled, "loading cancelled");
            if (m_used == k_buffer_bytes) next_buffer();
            const size_t n = std::min(bytes - done, k_buffer_bytes - m_used);
            char* stage = m_buffer[m_current].get() + m_used;
            std::memcpy(stage, src + done, n);
            CETUS_CUDA(cudaMemcpyAsync(dst + done, stage, n, cudaMemcpyHostToDevice, m_o.stream));
            m_used += n;
            done += n;
            m_done += n;
            report(float(double(m_done) / double(m_total)));
        }
    }

    void next_buffer() {
        CETUS_CUDA(cudaEventRecord(m_free[m_current].get(), m_o.stream));
        m_current ^= 1;
        CETUS_CUDA(cudaEventSynchronize(m_free[m_current].get()));  // a never-recorded event is complete
        m_used = 0;
    }

    void report(float fraction) {
        if (!m_o.progress || (fraction < m_last_report + 0.02f && fraction < 1.0f)) return;
        m_last_report = fraction;
        m_o.progress(fraction, m_o.stage);
    }

    const UploadOptions& m_o;
    DeviceBuffer m_raw;  // GGUF blocks on their way to being decoded (k_buffer_bytes, made when first needed)
    size_t m_total, m_done = 0, m_used = 0;
    PinnedBuffer m_buffer[2];
    Event m_free[2];
    int m_current = 0;
    float m_last_report = -1.0f;
};

}  // namespace

size_t device_weight_bytes(const Model& model, int64_t capacity) {
    Layout measure(model.config(), nullptr);
    lay_out(model, nullptr, capacity, measure);
    return measure.bytes();
}

DeviceWeights upload_weights(const Model& model, const float* rope_table, int64_t capacity, const UploadOptions& o) {
    Layout measure(model.config(), nullptr);
    lay_out(model, rope_table, capacity, measure);
    DeviceBuffer memory(measure.bytes());
    // Row padding is never read, but zeroed all the same so the allocation holds no stale data.
    CETUS_CUDA(cudaMemsetAsync(memory.get(), 0, memory.bytes(), o.stream));
    Layout layout(model.config(), memory.get(), o.ggml_fast, o.l2_prefetch, o.ggml_stage);
    DeviceWeights w = lay_out(model, rope_table, capacity, layout);
    size_t total = 0;
    for (const CopyJob& j : layout.jobs()) total += j.n_rows * j.src_row_bytes;
    {
        Uploader up(o, total);
        up.run(layout.jobs());
    }
    w.memory = std::move(memory);
    w.read_bytes = layout.read_bytes();
    return w;
}

}  // namespace cetus::cuda
