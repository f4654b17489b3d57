// Turns logits into a probability distribution (repetition penalty, vocabulary
// mask, temperature, top-k, top-p, min-p) and draws from it with a seeded
// generator. Speculative decoding uses the same processed distributions for
// its accept/reject rule, so the output distribution equals plain sampling.
#pragma once

#include "cetus/sampling.h"

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace cetus {

class Sampler {
public:
    Sampler(const SamplingParams& params, int64_t vocab_size, int64_t n_valid);

    bool greedy() const { return m_params.temperature <= 0.0f; }

    // Processed distribution of one row of logits into probs[vocab] (zeros outside
    // the kept set). The repetition penalty applies to the ids in `seen` and `more`
    // (two spans, so a caller can add a few pending tokens without copying its history).
    void distribution(const float* logits, std::span<const int32_t> seen, std::vector<float>& probs,
                      std::span<const int32_t> more = {});
    // Argmax after the repetition penalty and the vocabulary mask (greedy mode).
    int32_t argmax(const float* logits, std::span<const int32_t> seen, std::span<const int32_t> more = {});

    int32_t sample(const std::vector<float>& probs);  // draw from a distribution
    double uniform();                                  // in [0, 1)

    // Speculative rule for one draft: accept d with probability min(1, p(d)/q(d));
    // on rejection the replacement is drawn from normalise(max(0, p - q)).
    // Returns -1 when accepted, otherwise the replacement id.
    int32_t accept_or_replace(const std::vector<float>& p, const std::vector<float>& q, int32_t draft);

private:
    void penalise(std::vector<float>& x, std::span<const int32_t> seen, std::span<const int32_t> more);

    SamplingParams m_params;
    int64_t m_vocab, m_n_valid;
    std::mt19937_64 m_rng;
    std::vector<float> m_work;
    std::vector<int32_t> m_order;
    std::vector<uint8_t> m_seen_mark;
};

}  // namespace cetus
