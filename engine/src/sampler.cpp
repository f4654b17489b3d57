// Processing order as llama.cpp and transformers apply it: repetition penalty on
// raw logits (then, as vLLM does, the frequency and presence penalties on the
// answer's tokens), then temperature, then top-k, top-p (nucleus) and min-p on the
// softmax, renormalised.
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace cetus {

Sampler::Sampler(const SamplingParams& p, int64_t vocab, int64_t n_valid)
    : m_params(p), m_vocab(vocab), m_n_valid(std::clamp<int64_t>(n_valid, 1, vocab)), m_rng(p.seed),
      m_seen_mark(static_cast<size_t>(vocab), 0) {}

namespace {
double to_unit(uint64_t bits) { return double(bits >> 11) * (1.0 / 9007199254740992.0); }
}  // namespace

double Sampler::uniform() { return to_unit(m_rng()); }

void Sampler::peek_uniforms(int64_t n, double* out) const {
    std::mt19937_64 copy = m_rng;
    for (int64_t i = 0; i < n; ++i) out[i] = to_unit(copy());
}

void Sampler::skip_uniforms(int64_t n) { m_rng.discard(static_cast<unsigned long long>(std::max<int64_t>(n, 0))); }

void Sampler::penalise(std::vector<float>& x, std::span<const int32_t> seen, std::span<const int32_t> more) {
    constexpr float big = std::numeric_limits<float>::max();
    if (m_params.repetition_penalty != 1.0f) {
        const float r = m_params.repetition_penalty;
        std::vector<uint8_t>& mark = m_seen_mark;
        for (auto ids : {seen, more})
            for (int32_t id : ids) {
                if (id < 0 || id >= m_vocab || mark[size_t(id)]) continue;
                mark[size_t(id)] = 1;
                // Held to finite values: a penalty near 0 (or huge) would otherwise
                // overflow a large logit to +-inf and the softmax to NaN (fuzz_sampler).
                float& v = x[size_t(id)];
                v = std::fmin(std::fmax(v > 0 ? v / r : v * r, -big), big);
            }
        for (auto ids : {seen, more})
            for (int32_t id : ids)
                if (id >= 0 && id < m_vocab) mark[size_t(id)] = 0;
    }
    if (has_count_penalties(m_params)) {
        // Then OpenAI's rule on the answer's tokens (as vLLM orders them):
        // -= frequency * count + presence, once per id.
        const auto answer = seen.subspan(size_t(std::clamp<int64_t>(m_output_from, 0, int64_t(seen.size()))));
        m_counts.resize(size_t(m_vocab), 0);
        for (auto ids : {answer, more})
            for (int32_t id : ids)
                if (id >= 0 && id < m_vocab) ++m_counts[size_t(id)];
        for (auto ids : {answer, more})
            for (int32_t id : ids) {
                if (id < 0 || id >= m_vocab || m_counts[size_t(id)] == 0) continue;
                float& v = x[size_t(id)];
                const float c = float(m_counts[size_t(id)]);
                v = std::fmin(std::fmax(v - m_params.frequency_penalty * c - m_params.presence_penalty, -big), big);
                m_counts[size_t(id)] = 0;
            }
    }
}

void Sampler::mask(std::vector<float>& x) const {
    if (!m_allowed) return;
    const int64_t n = std::min<int64_t>(m_n_valid, int64_t(m_allowed->size()));
    for (int64_t i = 0; i < n; ++i)
        if (!(*m_allowed)[size_t(i)]) x[size_t(i)] = -std::numeric_limits<float>::infinity();
}

int32_t Sampler::argmax(const float* logits, std::span<const int32_t> seen, std::span<const int32_t> more) {
    if (m_params.repetition_penalty == 1.0f && !has_count_penalties(m_params) && !m_allowed)  // no copy
        return int32_t(std::max_element(logits, logits + m_n_valid) - logits);
    m_work.assign(logits, logits + m_n_valid);
    m_work.resize(size_t(m_vocab), -std::numeric_limits<float>::infinity());
    penalise(m_work, seen, more);
    mask(m_work);
    if (m_allowed) {  // the best allowed id, even where every allowed logit is -inf or NaN
        int32_t best = -1;
        for (int64_t i = 0; i < m_n_valid && i < int64_t(m_allowed->size()); ++i)
            if ((*m_allowed)[size_t(i)] && (best < 0 || m_work[size_t(i)] > m_work[size_t(best)])) best = int32_t(i);
        if (best >= 0) return best;
    }
    return int32_t(std::max_element(m_work.begin(), m_work.begin() + m_n_valid) - m_work.begin());
}

void Sampler::distribution(const float* logits, std::span<const int32_t> seen, std::vector<float>& probs,
                           std::span<const int32_t> more) {
    probs.assign(size_t(m_vocab), 0.0f);
    if (greedy()) {
        probs[size_t(argmax(logits, seen, more))] = 1.0f;
        return;
    }
    m_work.assign(logits, logits + m_vocab);
    penalise(m_work, seen, more);
    mask(m_work);
    const float inv_t = 1.0f / m_params.temperature;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < m_n_valid; ++i) mx = std::max(mx, m_work[size_t(i)]);
    // Candidates sorted by probability (descending, ties by id) for the truncations.
    m_order.resize(size_t(m_n_valid));
    std::iota(m_order.begin(), m_order.end(), 0);
    double sum = 0.0;
    for (int64_t i = 0; i < m_n_valid; ++i) {
        float e = std::exp((m_work[size_t(i)] - mx) * inv_t);
        m_work[size_t(i)] = e;
        sum += e;
    }
    int64_t keep = m_n_valid;
    auto by_prob = [&](int32_t a, int32_t b) {
        return m_work[size_t(a)] > m_work[size_t(b)] || (m_work[size_t(a)] == m_work[size_t(b)] && a < b);
    };
    if (m_params.top_k > 0 && m_params.top_k < keep) keep = m_params.top_k;
    const bool need_sort = keep < m_n_valid || m_params.top_p < 1.0f || m_params.min_p > 0.0f;
    if (need_sort) {
        if (keep < m_n_valid) std::partial_sort(m_order.begin(), m_order.begin() + keep, m_order.end(), by_prob);
        else std::sort(m_order.begin(), m_order.end(), by_prob);
    }
    if (m_params.top_p < 1.0f) {
        double kept_sum = 0.0;
        for (int64_t i = 0; i < keep; ++i) kept_sum += m_work[size_t(m_order[size_t(i)])];
        double acc = 0.0;
        int64_t n = 0;
        while (n < keep) {  // smallest prefix whose mass reaches top_p (at least one token)
            acc += m_work[size_t(m_order[size_t(n)])] / kept_sum;
            ++n;
            if (acc >= double(m_params.top_p)) break;
        }
        keep = n;
    }
    if (m_params.min_p > 0.0f && keep > 0) {
        const float floor_p = m_params.min_p * m_work[size_t(m_order[0])];
        int64_t n = 1;
        while (n < keep && m_work[size_t(m_order[size_t(n)])] >= floor_p) ++n;
        keep = n;
    }
    double z = 0.0;
    if (need_sort) {
        for (int64_t i = 0; i < keep; ++i) z += m_work[size_t(m_order[size_t(i)])];
        for (int64_t i = 0; i < keep; ++i) probs[size_t(m_order[size_t(i)])] = float(m_work[size_t(m_order[size_t(i)])] / z);
    } else {
        for (int64_t i = 0; i < m_n_valid; ++i) probs[size_t(i)] = float(m_work[size_t(i)] / sum);
    }
}

int32_t Sampler::draw(const std::vector<float>& probs, double u) {
    double total = 0.0;
    for (float p : probs) total += p;
    double r = u * total, acc = 0.0;
    int32_t last = -1;
    for (size_t i = 0; i < probs.size(); ++i) {
        if (probs[i] <= 0.0f) continue;
        acc += probs[i];
        last = int32_t(i);
        if (r < acc) return int32_t(i);
    }
    return last < 0 ? 0 : last;
}

int32_t Sampler::accept_or_replace(const std::vector<float>& p, const std::vector<float>& q, int32_t d,
                                   double u_accept, double u_draw) {
    const double pd = p[size_t(d)], qd = q[size_t(d)];
    if (qd > 0.0 && u_accept < std::min(1.0, pd / qd)) return -1;
    std::vector<float>& residual = m_work;
    residual.assign(p.size(), 0.0f);
    double z = 0.0;
    for (size_t i = 0; i < p.size(); ++i) {
        float v = std::max(0.0f, p[i] - q[i]);
        residual[i] = v;
        z += v;
    }
    if (z <= 0.0) return draw(p, u_draw);  // p == q up to rounding: any draw from p is exact
    return draw(residual, u_draw);
}

void choose_rows(Sampler& math, const float* logits, int64_t V, int64_t n, const ChoiceSpec& spec,
                 const double* u, std::vector<float>* q, int32_t* ids) {
    math.set_output_from(spec.output_from);
    std::vector<float>& probs = math.m_row;
    for (int64_t r = 0; r < n; ++r) {
        const float* row = logits + r * V;
        const auto more = spec.tail.first(size_t(std::min<int64_t>(spec.tail_first + r, int64_t(spec.tail.size()))));
        math.set_allowed(r < int64_t(spec.allowed.size()) ? &spec.allowed[size_t(r)] : nullptr);
        if (math.greedy()) {
            ids[r] = math.argmax(row, spec.history, more);
            continue;
        }
        std::vector<float>& p = q ? q[r] : probs;
        math.distribution(row, spec.history, p, more);
        ids[r] = Sampler::draw(p, u[r]);
    }
    math.set_allowed(nullptr);
}

VerifyResult verify_rows(Sampler& math, const float* logits, int64_t V, const ChoiceSpec& spec,
                         const std::vector<float>* q, const int32_t* drafts, int64_t D, const double* u) {
    math.set_output_from(spec.output_from);
    std::vector<float>& p = math.m_row;
    auto target = [&](int64_t a) {
        const auto more =
            spec.tail.first(size_t(std::min<int64_t>(spec.tail_first + a, int64_t(spec.tail.size()))));
        math.set_allowed(a < int64_t(spec.allowed.size()) ? &spec.allowed[size_t(a)] : nullptr);
        math.distribution(logits + a * V, spec.history, p, more);
        math.set_allowed(nullptr);
    };
    for (int64_t a = 0; a < D; ++a) {
        target(a);
        const int32_t rep = math.accept_or_replace(p, q[a], drafts[a], u[a], u[a + 1]);
        if (rep >= 0) return {a, rep};
    }
    target(D);
    return {D, Sampler::draw(p, u[D])};
}

float token_logprobs(const float* x, int64_t n_valid, int32_t id, int32_t top_n, std::vector<TokenLogprob>& top) {
    constexpr float neg_inf = -std::numeric_limits<float>::infinity();
    // NaN counts as no mass (a broken row must not poison the others' figures): every
    // comparison with it is false, so it is never the maximum and never summed.
    float m = neg_inf;
#pragma omp parallel for reduction(max : m) if (n_valid >= (int64_t(1) << 15))
    for (int64_t i = 0; i < n_valid; ++i)
        if (x[i] > m) m = x[i];
    // exp in float (the terms' rounding, 2^-24 relative, is far below what is reported),
    // summed in double. A +inf logit (an overflow) takes all the mass, shared among its kind.
    double sum = 0.0;
    int64_t n_inf = 0;
    if (m == -neg_inf) {
        for (int64_t i = 0; i < n_valid; ++i) n_inf += x[i] == m;
    } else if (std::isfinite(m)) {
        const float lo = m - 110.0f;  // below this exp(x - m) is 0 in float
#pragma omp parallel for reduction(+ : sum) if (n_valid >= (int64_t(1) << 15))
        for (int64_t i = 0; i < n_valid; ++i)
            if (x[i] >= lo) sum += double(std::exp(x[i] - m));
    }
    const double log_z = std::isfinite(m) ? double(m) + std::log(sum) : std::numeric_limits<double>::infinity();
    auto logprob = [&](int64_t i) {
        const float v = x[i];
        if (n_inf > 0) return v == m ? float(-std::log(double(n_inf))) : neg_inf;
        return v > neg_inf ? float(double(v) - log_z) : neg_inf;  // NaN and -inf: no mass
    };
    top.clear();
    const int64_t n = std::min<int64_t>(std::max<int32_t>(top_n, 0), n_valid);
    if (n > 0) {
        // One pass with a heap of the n best so far (its front: the worst of them); an
        // entry below the worst one kept costs one comparison.
        auto better = [&](int64_t a, int64_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
        std::vector<int64_t> heap;
        heap.reserve(size_t(n));
        int64_t i = 0;
        for (; i < n_valid && int64_t(heap.size()) < n; ++i) {
            if (std::isnan(x[i])) continue;
            heap.push_back(i);
            std::push_heap(heap.begin(), heap.end(), better);
        }
        float worst = heap.empty() ? neg_inf : x[heap.front()];
        for (; i < n_valid; ++i) {
            if (!(x[i] >= worst) || !better(i, heap.front())) continue;  // NaN fails the first test
            std::pop_heap(heap.begin(), heap.end(), better);
            heap.back() = i;
            std::push_heap(heap.begin(), heap.end(), better);
            worst = x[heap.front()];
        }
        std::sort_heap(heap.begin(), heap.end(), better);
        for (int64_t i : heap) top.push_back({int32_t(i), logprob(i)});
    }
    return id >= 0 && id < n_valid ? logprob(id) : neg_inf;
}

}  // namespace cetus
