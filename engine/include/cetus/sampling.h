// Sampling parameters of a generation request (plain values, shared with the UI
// and storage). temperature 0 means greedy.
#pragma once

#include <cmath>
#include <cstdint>

namespace cetus {

struct SamplingParams {
    float temperature = 0.7f;         // 0: greedy (argmax)
    float top_p = 1.0f;               // nucleus; 1 disables
    int32_t top_k = 0;                // 0 disables
    float min_p = 0.0f;               // drop tokens below min_p * p(best); 0 disables
    float repetition_penalty = 1.0f;  // > 1 penalises tokens already in prompt or answer (HF/CTRL rule)
    uint64_t seed = 0;                // same seed, same request, same output
    // OpenAI's additive penalties, on the answer's tokens only (not the prompt's), before
    // the temperature: logit -= frequency_penalty * count + presence_penalty * (count > 0).
    // -2 .. 2; 0 disables.
    float frequency_penalty = 0.0f;
    float presence_penalty = 0.0f;
};

// Whether the answer's own token counts change the logits (frequency or presence penalty).
inline bool has_count_penalties(const SamplingParams& p) noexcept {
    return p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
}

// Tokens are chosen by argmax at temperature 0, and at temperatures so small
// (below about 2.9e-39, float's subnormals) that 1 / temperature overflows: the
// scaled logits would be infinite and the softmax undefined, where its limit is
// the argmax.
inline bool is_greedy(const SamplingParams& p) noexcept {
    return !(p.temperature > 0.0f) || std::isinf(1.0f / p.temperature);
}

// Whether every field is in the range Engine::generate accepts: finite values
// with temperature >= 0, 0 < top_p <= 1, 0 <= min_p <= 1, top_k >= 0,
// repetition_penalty > 0 and frequency and presence penalties in -2 .. 2 (NaN fails
// every test).
inline bool sampling_params_valid(const SamplingParams& p) noexcept {
    return p.temperature >= 0.0f && std::isfinite(p.temperature) && p.top_p > 0.0f && p.top_p <= 1.0f &&
           p.min_p >= 0.0f && p.min_p <= 1.0f && p.top_k >= 0 && p.repetition_penalty > 0.0f &&
           std::isfinite(p.repetition_penalty) && p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f &&
           p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f;
}

}  // namespace cetus
