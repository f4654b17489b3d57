// The CPU backend's calls that are more than a forward to Model.
#include "backend.h"

#include "cpu/ggml_int8.h"

#include "cetus/error.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdlib>

namespace cetus {

namespace {
// Rows of a call's last chunk of logit rows (what a device keeps).
int64_t last_chunk_rows(int64_t rows) {
    constexpr int64_t c = Backend::k_logit_chunk_rows;
    return rows - (rows - 1) / c * c;
}

// The first id of the largest of each row over [0, n_valid) (n_valid > 0).
void append_argmax(const std::vector<float>& logits, int64_t V, int64_t n_valid, std::vector<int32_t>& out) {
    if (n_valid <= 0) return;
    n_valid = std::min(n_valid, V);
    for (size_t r = 0; (r + 1) * size_t(V) <= logits.size(); ++r) {
        const float* row = logits.data() + r * size_t(V);
        out.push_back(int32_t(std::max_element(row, row + n_valid) - row));
    }
}
}  // namespace

std::string CpuBackend::description() const {
    return std::to_string(omp_get_max_threads()) + " threads" +
           (!m_model.int8_activations()      ? ""
            : cpu::int8_vnni_in_use()        ? ", int8 activations (AVX-512 VNNI)"
                                             : ", int8 activations (AVX2)");
}

double CpuBackend::copy_bandwidth_gbs() {
    if (m_copy_gbs >= 0) return m_copy_gbs;
    const size_t n = size_t(64) << 20;  // floats: 256 MiB, far beyond the caches
    std::vector<float> src(n, 1.0f), dst(n, 0.0f);
    double best = 0;
    for (int rep = 0; rep < 4; ++rep) {  // the best of four: the first touches the pages
        const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < int64_t(n); ++i) dst[size_t(i)] = src[size_t(i)];
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, 2.0 * double(n * sizeof(float)) / s / 1e9);
    }
    m_copy_gbs = dst[n / 2] == 1.0f ? best : 0.0;  // the copy is used, so it is not optimised away
    return m_copy_gbs;
}

CpuBackend::CpuBackend(const Model& model, int64_t capacity, KvCacheType cache_type)
    : m_model(model), m_cache(model.make_cache(capacity, cache_type)) {
    if (const char* form = std::getenv("CETUS_CPU_MLA_FORM")) {
        const std::string f = form;
        if (f == "absorbed") m_forced_form = MlaFormPolicy{int64_t(1) << 40, false};
        else if (f == "naive") m_forced_form = MlaFormPolicy{0, false};
        else if (f != "auto")
            throw Error(ErrorCode::BadRequest, "CETUS_CPU_MLA_FORM must be auto, absorbed or naive, not '" + f + "'");
    }
}

void CpuBackend::save_rows(int64_t n, uint8_t* out) {
    if (n < 0 || n > m_cache.capacity()) throw Error(ErrorCode::BadRequest, "save_rows: n outside the cache");
    const size_t row_bytes = size_t(m_cache.width()) * m_cache.element_bytes();
    for (int64_t l = 0; l < m_cache.n_layers(); ++l)
        std::memcpy(out + size_t(l * n) * row_bytes, m_cache.layer(l).data, size_t(n) * row_bytes);
}

void CpuBackend::load_rows(int64_t n, const uint8_t* in) {
    if (n < 0 || n > m_cache.capacity()) throw Error(ErrorCode::BadRequest, "load_rows: n outside the cache");
    const size_t row_bytes = size_t(m_cache.width()) * m_cache.element_bytes();
    for (int64_t l = 0; l < m_cache.n_layers(); ++l)
        std::memcpy(m_cache.layer(l).data, in + size_t(l * n) * row_bytes, size_t(n) * row_bytes);
    m_cache.n_tokens = n;
}

// The fused argmax takes at most k_max_choice_rows rows on every backend (the
// CUDA backend's limit), so a caller that asks for more fails here as on the GPU.
void CpuBackend::check_argmax_rows(int64_t argmax_n_valid, int64_t rows) {
    if (argmax_n_valid > 0 && rows > k_max_choice_rows)
        throw Error(ErrorCode::BadRequest, "cpu backend: a fused argmax over " + std::to_string(rows) +
                                               " rows (at most " + std::to_string(k_max_choice_rows) + ")");
}

void CpuBackend::forward(const int32_t* ids, int64_t T, int64_t start_pos, const ForwardOptions& opt,
                         ForwardOutput& out) {
    check_argmax_rows(opt.argmax_n_valid, opt.all_logits ? T : 1);
    if (m_forced_form) {
        ForwardOptions o = opt;
        o.mla_form = *m_forced_form;
        m_model.forward(ids, T, start_pos, m_cache, o, out);
    } else {
        m_model.forward(ids, T, start_pos, m_cache, opt, out);
    }
    out.argmax.clear();
    append_argmax(out.logits, m_model.config().vocab_size, opt.argmax_n_valid, out.argmax);
    if (!m_device_sampling) {
        m_kept.clear();
        return;
    }
    // Like a device: the last chunk's rows (or the one row) stay for choose().
    const int64_t V = m_model.config().vocab_size;
    const int64_t keep = last_chunk_rows(int64_t(out.logits.size()) / V);
    m_kept.assign(out.logits.end() - keep * V, out.logits.end());
    if (!opt.logits_to_host) out.logits.clear();
}

void CpuBackend::mtp_forward(int64_t k, const float* hidden, const int32_t* next_ids, int64_t T,
                             int64_t start_pos, const MtpOptions& opt, MtpOutput& out) {
    if (opt.logits != MtpLogits::None) check_argmax_rows(opt.argmax_n_valid, T);
    m_kept.clear();
    out.argmax.clear();
    std::vector<float>* out_hidden = opt.want_hidden ? &out.hidden : nullptr;
    if (!opt.want_hidden) out.hidden.clear();
    out.routing = RoutingRecord{};
    MtpPassOptions po;
    po.mla_form = m_forced_form.value_or(MlaFormPolicy{});
    po.routing = opt.want_routing ? &out.routing : nullptr;
    po.follow_routing = opt.follow_routing;
    po.follow_cache = opt.follow_cache;
    if (opt.logits == MtpLogits::None) {
        m_model.mtp_forward(k, hidden, next_ids, T, start_pos, m_cache, nullptr, out_hidden, po);
        out.logits.clear();
        return;
    }
    m_model.mtp_forward(k, hidden, next_ids, T, start_pos, m_cache, &out.logits, out_hidden, po);
    const int64_t V = m_model.config().vocab_size;
    append_argmax(out.logits, V, opt.argmax_n_valid, out.argmax);
    if (!m_device_sampling) return;
    const int64_t keep = last_chunk_rows(T);
    m_kept.assign(out.logits.end() - keep * V, out.logits.end());
    if (opt.logits == MtpLogits::Keep) out.logits.clear();
}

const float* CpuBackend::kept_rows(int64_t row0, int64_t n) const {
    const int64_t V = m_model.config().vocab_size, rows = int64_t(m_kept.size()) / V;
    if (!m_device_sampling) throw Error(ErrorCode::Unsupported, "cpu backend: device sampling is off");
    if (row0 < 0 || n < 1 || n > k_max_choice_rows || row0 + n > rows)
        throw Error(ErrorCode::BadRequest, "cpu backend: choice of rows " + std::to_string(row0) + " .. " +
                                               std::to_string(row0 + n - 1) + " of the " + std::to_string(rows) +
                                               " rows of the last call");
    return m_kept.data() + row0 * V;
}

void CpuBackend::choose(int64_t row0, int64_t n, const ChoiceSpec& spec, const double* u, int64_t q_slot,
                        int32_t* ids) {
    const float* rows = kept_rows(row0, n);
    if (q_slot >= 0 && q_slot + n > k_max_choice_rows)
        throw Error(ErrorCode::BadRequest, "cpu backend: draft slots past " + std::to_string(k_max_choice_rows));
    Sampler math(spec.params, m_model.config().vocab_size, spec.n_valid);
    choose_rows(math, rows, m_model.config().vocab_size, n, spec, u, q_slot >= 0 ? &m_q[size_t(q_slot)] : nullptr,
                ids);
}

void CpuBackend::certain_draft(int64_t slot, int32_t id) {
    const int64_t V = m_model.config().vocab_size;
    if (!m_device_sampling) throw Error(ErrorCode::Unsupported, "cpu backend: device sampling is off");
    if (slot < 0 || slot >= k_max_choice_rows || id < 0 || id >= V)
        throw Error(ErrorCode::BadRequest, "cpu backend: draft slot " + std::to_string(slot) + " with id " +
                                               std::to_string(id) + " out of range");
    m_q[size_t(slot)].assign(size_t(V), 0.0f);
    m_q[size_t(slot)][size_t(id)] = 1.0f;
}

VerifyResult CpuBackend::verify(const ChoiceSpec& spec, const int32_t* drafts, int64_t D, const double* u) {
    const float* rows = kept_rows(0, D + 1);
    Sampler math(spec.params, m_model.config().vocab_size, spec.n_valid);
    return verify_rows(math, rows, m_model.config().vocab_size, spec, m_q.data(), drafts, D, u);
}

}  // namespace cetus
