// Sampling parameters of a generation request (plain values, shared with the UI
// and storage). temperature 0 means greedy.
#pragma once

#include <cstdint>

namespace cetus {

struct SamplingParams {
    float temperature = 0.7f;         // 0: greedy (argmax)
    float top_p = 1.0f;               // nucleus; 1 disables
    int32_t top_k = 0;                // 0 disables
    float min_p = 0.0f;               // drop tokens below min_p * p(best); 0 disables
    float repetition_penalty = 1.0f;  // > 1 penalises tokens already in prompt or answer (HF/CTRL rule)
    uint64_t seed = 0;                // same seed, same request, same output
};

}  // namespace cetus
