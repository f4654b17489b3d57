// Backend: where the model's forward passes run and where its latent cache
// lives. The generator, the benchmarks and the conformance suite talk to a
// Backend only; the CPU backend (Model + KvCache in host memory) is the
// reference, the CUDA backend (engine/src/cuda, a plug-in loaded at run time)
// follows it.
#pragma once

#include "model.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cetus {

class Backend {
public:
    virtual ~Backend() = default;

    virtual std::string name() const = 0;         // "cpu" | "cuda"
    virtual std::string description() const = 0;  // e.g. "NVIDIA H200, sm_90, 139.8 GiB"

    // Latent cache: capacity in tokens, rows held by the main layers. truncate(n)
    // keeps positions [0, n) (n <= n_tokens()); later writes overwrite the rest.
    virtual int64_t capacity() const = 0;
    virtual int64_t n_tokens() const = 0;
    virtual void truncate(int64_t n) = 0;
    void clear() { truncate(0); }
    virtual uint64_t kv_bytes_per_token() const = 0;  // all layers, MTP layers included
    uint64_t kv_capacity_bytes() const { return kv_bytes_per_token() * uint64_t(capacity()); }
    uint64_t kv_used_bytes() const { return kv_bytes_per_token() * uint64_t(n_tokens()); }

    // Main model over ids at positions start_pos .. start_pos+T-1 (start_pos <=
    // n_tokens(), start_pos + T <= capacity()); writes those cache rows and sets
    // n_tokens() = start_pos + T. Same contract as Model::forward.
    virtual void forward(const int32_t* ids, int64_t n_tokens, int64_t start_pos, const ForwardOptions& opt,
                         ForwardOutput& out) = 0;

    // MTP module k over (hidden[i], next_ids[i]) at positions start_pos + i, with
    // hidden the main model's post-norm states in host memory [T, H]. Same
    // contract as Model::mtp_forward.
    virtual void mtp_forward(int64_t k, const float* hidden, const int32_t* next_ids, int64_t n_tokens,
                             int64_t start_pos, std::vector<float>& logits, std::vector<float>* out_hidden) = 0;

    // Measured limits of the device for the benchmarks' "fraction of the limit"
    // figures (0: not measured by this backend): copy bandwidth (bytes read +
    // written per second, GB/s) and dense bf16 matrix-multiply throughput (TFLOP/s).
    virtual double copy_bandwidth_gbs() { return 0.0; }
    virtual double peak_bf16_tflops() { return 0.0; }
};

// The CPU backend: the model's own forward pass over a host cache.
class CpuBackend final : public Backend {
public:
    CpuBackend(const Model& model, int64_t capacity) : m_model(model), m_cache(model.make_cache(capacity)) {}

    std::string name() const override { return "cpu"; }
    std::string description() const override;
    int64_t capacity() const override { return m_cache.capacity(); }
    int64_t n_tokens() const override { return m_cache.n_tokens; }
    void truncate(int64_t n) override { m_cache.n_tokens = n; }
    uint64_t kv_bytes_per_token() const override { return m_cache.bytes_per_token(); }
    void forward(const int32_t* ids, int64_t T, int64_t start_pos, const ForwardOptions& opt,
                 ForwardOutput& out) override {
        m_model.forward(ids, T, start_pos, m_cache, opt, out);
    }
    void mtp_forward(int64_t k, const float* hidden, const int32_t* next_ids, int64_t T, int64_t start_pos,
                     std::vector<float>& logits, std::vector<float>* out_hidden) override {
        m_model.mtp_forward(k, hidden, next_ids, T, start_pos, m_cache, logits, out_hidden);
    }
    // Threaded copies of 256 MiB (bytes read + written per second), measured once.
    double copy_bandwidth_gbs() override;
    KvCache& cache() { return m_cache; }

private:
    const Model& m_model;
    KvCache m_cache;
    double m_copy_gbs = -1.0;
};

}  // namespace cetus
