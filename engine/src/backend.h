// Backend: where the model's forward passes run and where its latent cache
// lives. The generator, the benchmarks and the conformance suite talk to a
// Backend only; the CPU backend (Model + KvCache in host memory) is the
// reference, the CUDA backend (engine/src/cuda, a plug-in loaded at run time)
// follows it.
#pragma once

#include "cetus/error.h"
#include "model.h"
#include "sampler.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cetus {

class Backend {
public:
    virtual ~Backend() = default;

    virtual std::string name() const = 0;         // "cpu" | "cuda"
    virtual std::string description() const = 0;  // e.g. "NVIDIA H200, sm_90, 139.8 GiB"
    // What decides the bits of the cache rows this backend computes, and nothing that
    // varies between runs (free memory): the prefix store's files are shared only
    // between engines with the same (see prefix_disk.h).
    virtual std::string rows_identity() const { return name() + ", " + description(); }

    // Latent cache: capacity in tokens, rows held by the main layers. truncate(n)
    // keeps positions [0, n) (n <= n_tokens()); later writes overwrite the rest.
    virtual int64_t capacity() const = 0;
    virtual int64_t n_tokens() const = 0;
    virtual void truncate(int64_t n) = 0;
    void clear() { truncate(0); }
    virtual uint64_t kv_bytes_per_token() const = 0;  // all layers, MTP layers included
    virtual KvCacheType kv_cache_type() const = 0;
    // Cache row pos of a layer (main layers, then MTP layers) as fp32 values, as
    // stored (a bf16 cache's values widened exactly): for the conformance checks,
    // which compare what each backend stores. Synchronises with the device.
    virtual std::vector<float> cache_row(int64_t layer, int64_t pos) = 0;
    // The rows of positions [0, n) of every layer (main, then MTP) as stored, to or from
    // host memory: n * kv_bytes_per_token() bytes, layer after layer. load_rows sets
    // n_tokens() = n. (The generator keeps recent conversations' prefixes so.)
    virtual void save_rows(int64_t n, uint8_t* out) = 0;
    virtual void load_rows(int64_t n, const uint8_t* in) = 0;
    uint64_t kv_capacity_bytes() const { return kv_bytes_per_token() * uint64_t(capacity()); }
    uint64_t kv_used_bytes() const { return kv_bytes_per_token() * uint64_t(n_tokens()); }

    // Main model over ids at positions start_pos .. start_pos+T-1 (start_pos <=
    // n_tokens(), start_pos + T <= capacity()); writes those cache rows and sets
    // n_tokens() = start_pos + T. Same contract as Model::forward, plus
    // ForwardOptions::argmax_n_valid (the CUDA backend takes it for calls of up
    // to k_max_choice_rows logit rows, inside the step's graph).
    virtual void forward(const int32_t* ids, int64_t n_tokens, int64_t start_pos, const ForwardOptions& opt,
                         ForwardOutput& out) = 0;

    // MTP module k over (hidden[i], next_ids[i]) at positions start_pos + i, with
    // hidden the main model's post-norm states in host memory [T, H]. Same
    // contract as Model::mtp_forward. With MtpLogits::None no logits are
    // computed (the module's pass over a prompt only fills its cache).
    virtual void mtp_forward(int64_t k, const float* hidden, const int32_t* next_ids, int64_t n_tokens,
                             int64_t start_pos, const MtpOptions& opt, MtpOutput& out) = 0;

    // Token choice where the logits are (sampling on the device). The rows are
    // those of the last forward() or mtp_forward() call (its last chunk of up to
    // 256 tokens, or its one row when only the last token's logits were asked
    // for); they stay valid until the next call, whether or not they were
    // copied to the host, and choosing leaves them unchanged. Same results as
    // choose_rows / verify_rows in sampler.h up to float rounding.
    virtual bool samples_on_device() const { return false; }
    // Rows row0 .. row0 + n - 1 -> ids (n <= k_max_choice_rows). When sampling,
    // u holds one random number per row, and with q_slot >= 0 the processed
    // distributions are kept as draft distributions q_slot .. q_slot + n - 1
    // (< k_max_choice_rows) for verify().
    // (Defined here, not out of line: the CUDA plug-in derives from Backend
    // without linking the engine.)
    virtual void choose(int64_t, int64_t, const ChoiceSpec&, const double*, int64_t, int32_t*) {
        throw Error(ErrorCode::Unsupported, name() + " backend: no sampling on the device");
    }
    // verify_rows over rows 0 .. D of the last forward() with the draft
    // distributions in slots 0 .. D - 1 (sampling only; u holds D + 1 numbers).
    virtual VerifyResult verify(const ChoiceSpec&, const int32_t*, int64_t, const double*) {
        throw Error(ErrorCode::Unsupported, name() + " backend: no sampling on the device");
    }
    // Draft distribution `slot` (< k_max_choice_rows) all on id: a draft that is a
    // certainty (looked up in the context, GenerateRequest::lookup), for verify().
    virtual void certain_draft(int64_t, int32_t) {
        throw Error(ErrorCode::Unsupported, name() + " backend: no sampling on the device");
    }
    static constexpr int64_t k_max_choice_rows = 16;
    // A call that returns every row's logits leaves its last chunk of this many rows
    // for choose() (the CUDA backend's logit buffers hold that many).
    static constexpr int64_t k_logit_chunk_rows = 256;

    // Measured limits of the device for the benchmarks' "fraction of the limit"
    // figures (0: not measured by this backend): copy bandwidth (bytes read +
    // written per second, GB/s) and dense bf16 matrix-multiply throughput (TFLOP/s).
    virtual double copy_bandwidth_gbs() { return 0.0; }
    virtual double peak_bf16_tflops() { return 0.0; }
    // Bytes one full pass over weight matrix w reads as this backend holds it (the
    // benchmarks' bytes per token): its checkpoint bytes, unless the backend keeps
    // it in another form (the CUDA backend widens F16 to fp32, decodes a GGUF file's
    // kv_b_proj and router to fp32).
    uint64_t weight_read_bytes(const Matrix& w) const {
        const uint64_t held = held_weight_bytes(w);
        return held > 0 ? held : w.n_bytes();
    }
    // weight_read_bytes where the backend knows them (0: the checkpoint's bytes). The
    // CUDA plug-in answers without calling into the engine, whose symbols it lacks.
    virtual uint64_t held_weight_bytes(const Matrix&) const { return 0; }

    // Tokens per forward() call that use the backend best when no logits but the
    // last row's are asked for (prompt prefill, the MTP module's pass over a
    // prompt). Calls may be of any length; this is where splitting them costs nothing.
    virtual int64_t prefill_chunk() const { return 256; }

    // Alternative ways of enqueueing the same decode step, which one machine runs faster
    // than another (the CUDA backend's: the shared experts on a second stream, the
    // L2 asked for the next rows ahead, programmatic dependent launch, the decode fusions, GGUF rows staged
    // in shared memory): each switch's name, what it does, the values it takes and its
    // value now. The tuner (tune.h) times them on the machine at hand. A switch changes
    // how a step's work is enqueued, not what it computes beyond the order of a sum.
    struct StepSwitch {
        std::string name, description;
        std::vector<int> values;
        int value = 0;
        // Every value gives the same bits (the loads' order, prefetches, launch attributes);
        // else some sums are taken in another order (the prefix cache keeps such rows apart).
        bool same_bits = true;
    };
    virtual std::vector<StepSwitch> step_switches() const { return {}; }
    // Sets switch `name` of step_switches() to one of its values; Error(BadRequest) otherwise.
    virtual void set_step_switch(const std::string& name, int value) {
        throw Error(ErrorCode::BadRequest, name + ": " + this->name() + " backend has no step switch of that name (value " +
                                               std::to_string(value) + ")");
    }
    // Drops what was prepared while tuning (the CUDA backend's captured graphs, one set
    // for each setting timed).
    virtual void forget_prepared_steps() {}
};

// The CPU backend: the model's own forward pass over a host cache.
class CpuBackend final : public Backend {
public:
    CpuBackend(const Model& model, int64_t capacity, KvCacheType cache_type = KvCacheType::F32);

    std::string name() const override { return "cpu"; }
    std::string description() const override;
    // Every instruction-set clone and thread count gives the same bits (cpu/ops.h);
    // int8 activations (Model::use_int8_activations) give others.
    std::string rows_identity() const override {
        return m_model.int8_activations() ? "cpu, int8 activations, block sums" : "cpu";
    }
    int64_t capacity() const override { return m_cache.capacity(); }
    int64_t n_tokens() const override { return m_cache.n_tokens; }
    void truncate(int64_t n) override { m_cache.n_tokens = n; }
    uint64_t kv_bytes_per_token() const override { return m_cache.bytes_per_token(); }
    KvCacheType kv_cache_type() const override { return m_cache.type(); }
    std::vector<float> cache_row(int64_t layer, int64_t pos) override { return m_cache.row_f32(layer, pos); }
    void save_rows(int64_t n, uint8_t* out) override;
    void load_rows(int64_t n, const uint8_t* in) override;
    void forward(const int32_t* ids, int64_t T, int64_t start_pos, const ForwardOptions& opt,
                 ForwardOutput& out) override;
    void mtp_forward(int64_t k, const float* hidden, const int32_t* next_ids, int64_t T, int64_t start_pos,
                     const MtpOptions& opt, MtpOutput& out) override;
    // Threaded copies of 256 MiB (bytes read + written per second), measured once.
    double copy_bandwidth_gbs() override;
    KvCache& cache() { return m_cache; }

    // Choices "on the device" computed on the host from logits the backend keeps:
    // the generator's device-sampling path, run without a GPU (tests, and the
    // CPU stand-in of the CUDA conformance harness).
    void set_device_sampling(bool on) { m_device_sampling = on; }
    bool samples_on_device() const override { return m_device_sampling; }
    void choose(int64_t row0, int64_t n, const ChoiceSpec& spec, const double* u, int64_t q_slot,
                int32_t* ids) override;
    VerifyResult verify(const ChoiceSpec& spec, const int32_t* drafts, int64_t D, const double* u) override;
    void certain_draft(int64_t slot, int32_t id) override;

private:
    static void check_argmax_rows(int64_t argmax_n_valid, int64_t rows);
    const float* kept_rows(int64_t row0, int64_t n) const;

    const Model& m_model;
    KvCache m_cache;
    // CETUS_CPU_MLA_FORM=absorbed|naive, read once: one MLA form for every chunk of
    // forward() and mtp_forward() (side-by-side benches); unset, the callers' policy.
    std::optional<MlaFormPolicy> m_forced_form;
    double m_copy_gbs = -1.0;
    bool m_device_sampling = false;
    std::vector<float> m_kept;  // [rows, vocab]: the last call's logits (device sampling)
    std::vector<std::vector<float>> m_q = std::vector<std::vector<float>>(size_t(k_max_choice_rows));
};

}  // namespace cetus
