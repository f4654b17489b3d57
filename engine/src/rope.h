// Rotary position embedding with YaRN scaling (architecture doc section 4):
// inverse frequencies with the ramp between beta_fast and beta_slow, the
// cos/sin magnitude (attention_factor), and both channel pairings.
#pragma once

#include "config.h"

#include <vector>

namespace cetus {

class Rope {
public:
    explicit Rope(const ModelConfig& c);

    // Rotates one vector of dim = qk_rope_head_dim channels in place for position pos.
    // Interleaved (adjacent pairs, every released checkpoint) or, when the config
    // says rope_interleave=false, rotate-half pairs (j, j + dim/2).
    void apply(float* x, int64_t pos) const;
    // Same, with cos/sin for the position precomputed by angles().
    void apply(float* x, const float* cos_sin) const;
    // cos_sin[2*i] = cos(phi_i) * factor, cos_sin[2*i+1] = sin(phi_i) * factor.
    void angles(int64_t pos, float* cos_sin) const;

    const std::vector<float>& inv_freq() const { return m_inv_freq; }
    float attention_factor() const { return m_attention_factor; }
    int64_t dim() const { return m_dim; }

private:
    int64_t m_dim;
    bool m_interleave;
    float m_attention_factor = 1.0f;
    std::vector<float> m_inv_freq;  // [dim / 2]
};

}  // namespace cetus
