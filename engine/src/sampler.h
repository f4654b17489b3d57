// Turns logits into a probability distribution (repetition penalty, vocabulary
// mask, temperature, top-k, top-p, min-p) and draws from it with a seeded
// generator. Speculative decoding uses the same processed distributions for
// its accept/reject rule, so the output distribution equals plain sampling.
#pragma once

#include "cetus/generate.h"
#include "cetus/sampling.h"

#include <climits>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace cetus {

// A batch of token choices over rows of logits, as Backend::choose and
// Backend::verify take it (and choose_rows / verify_rows compute it on the host).
// Row r penalises the ids of `history` and tail[0, tail_first + r): in a verify
// batch row r follows the pending token and the drafts before draft r. The answer's
// tokens (frequency and presence penalties) are history[output_from ..] and the tail's.
struct ChoiceSpec {
    SamplingParams params;
    int64_t n_valid = 0;  // ids >= n_valid are never chosen
    std::span<const int32_t> history;
    std::span<const int32_t> tail;
    int64_t tail_first = 0;
    int64_t output_from = INT64_MAX;  // where the answer starts in history (the prompt's length)
    // A grammar's choices (JSON mode): row r may choose only ids with allowed[r][id] != 0
    // (ids below n_valid; at least one each). Rows past its end, or none given: any id.
    std::span<const std::vector<uint8_t>> allowed = {};
};

struct VerifyResult {
    int64_t accepted = 0;  // drafts accepted
    int32_t next = -1;     // the replacement of the first rejected draft, or the bonus token
};

class Sampler {
public:
    Sampler(const SamplingParams& params, int64_t vocab_size, int64_t n_valid);

    bool greedy() const { return is_greedy(m_params); }

    // Processed distribution of one row of logits into probs[vocab] (zeros outside
    // the kept set). The repetition penalty applies to the ids in `seen` and `more`
    // (two spans, so a caller can add a few pending tokens without copying its history);
    // the frequency and presence penalties to seen[output_from() ..] and `more`.
    void distribution(const float* logits, std::span<const int32_t> seen, std::vector<float>& probs,
                      std::span<const int32_t> more = {});
    // Argmax after the repetition penalty and the vocabulary mask (greedy mode).
    int32_t argmax(const float* logits, std::span<const int32_t> seen, std::span<const int32_t> more = {});

    int32_t sample(const std::vector<float>& probs) { return draw(probs, uniform()); }
    // The first id whose running sum of probs (in id order) exceeds u * sum(probs);
    // ids with zero probability are never drawn.
    static int32_t draw(const std::vector<float>& probs, double u);

    // The generator's random numbers, in [0, 1). peek_uniforms gives the next n
    // without consuming them (for a device that decides how many it used).
    double uniform();
    void peek_uniforms(int64_t n, double* out) const;
    void skip_uniforms(int64_t n);

    // Speculative rule for one draft: accept d when u_accept < min(1, p(d)/q(d));
    // on rejection the replacement is drawn with u_draw from normalise(max(0, p - q)).
    // Returns -1 when accepted, otherwise the replacement id.
    int32_t accept_or_replace(const std::vector<float>& p, const std::vector<float>& q, int32_t draft,
                              double u_accept, double u_draw);

    const SamplingParams& params() const { return m_params; }
    int64_t n_valid() const { return m_n_valid; }
    // Where the answer starts in `seen` (ChoiceSpec::output_from); by default nothing of
    // `seen` is the answer's, only `more`.
    void set_output_from(int64_t i) { m_output_from = i; }
    int64_t output_from() const { return m_output_from; }
    // Ids with (*allowed)[id] == 0 are never chosen (a grammar's mask, n_valid long, at
    // least one id allowed); null: no mask. Applied after the penalties.
    void set_allowed(const std::vector<uint8_t>* allowed) { m_allowed = allowed; }

private:
    void penalise(std::vector<float>& x, std::span<const int32_t> seen, std::span<const int32_t> more);
    void mask(std::vector<float>& x) const;  // -inf where m_allowed says no

    SamplingParams m_params;
    int64_t m_vocab, m_n_valid;
    int64_t m_output_from = INT64_MAX;
    const std::vector<uint8_t>* m_allowed = nullptr;
    std::vector<int32_t> m_counts;  // per id, while the count penalties are applied (zero between)
    std::mt19937_64 m_rng;
    std::vector<float> m_work;
    std::vector<int32_t> m_order;
    std::vector<uint8_t> m_seen_mark;
    std::vector<float> m_row;  // a row's distribution in choose_rows / verify_rows, kept between steps

    friend void choose_rows(Sampler&, const float*, int64_t, int64_t, const ChoiceSpec&, const double*,
                            std::vector<float>*, int32_t*);
    friend VerifyResult verify_rows(Sampler&, const float*, int64_t, const ChoiceSpec&, const std::vector<float>*,
                                    const int32_t*, int64_t, const double*);
};

}  // namespace cetus

namespace cetus {

// Host reference of the choices (the CPU path, and the yardstick for a device's):
// row r of logits [n, vocab] -> ids[r]: the argmax when greedy, otherwise a draw
// with u[r] from the processed distribution, stored in q[r] when q is given.
void choose_rows(Sampler& math, const float* logits, int64_t vocab, int64_t n, const ChoiceSpec& spec,
                 const double* u, std::vector<float>* q, int32_t* ids);
// Speculative verification (sampling) of drafts[0, D) with draft distributions
// q[0, D) against target rows 0 .. D of logits: draft a is accepted with u[a];
// the first rejected draft a is replaced by a draw with u[a + 1]; when all are
// accepted the bonus token is drawn from row D with u[D]. Uses accepted + 2
// random numbers after a rejection, D + 1 otherwise.
VerifyResult verify_rows(Sampler& math, const float* logits, int64_t vocab, const ChoiceSpec& spec,
                         const std::vector<float>* q, const int32_t* drafts, int64_t D, const double* u);
inline int64_t verify_uniforms_used(const VerifyResult& r, int64_t D) {
    return r.accepted < D ? r.accepted + 2 : D + 1;
}

// Log-softmax of raw logits over ids [0, n_valid) (in double): the log-probability
// of id, and in top the top_n most likely ids (most likely first, ties by id).
float token_logprobs(const float* logits, int64_t n_valid, int32_t id, int32_t top_n, std::vector<TokenLogprob>& top);

}  // namespace cetus
