// YaRN as transformers' _compute_yarn_parameters (truncate=true) and DeepSeek's
// reference compute it; all in fp32 like the reference implementations.
#include "rope.h"

#include <algorithm>
#include <cmath>

namespace cetus {
namespace {

double get_mscale(double scale, double mscale) {
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// Dimension index at which a frequency makes `rotations` turns over the original context.
double correction_dim(double rotations, int64_t dim, double base, double max_pos) {
    return double(dim) * std::log(max_pos / (rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
}

}  // namespace

Rope::Rope(const ModelConfig& c) : m_dim(c.qk_rope_head_dim), m_interleave(c.rope_interleave) {
    const int64_t half = m_dim / 2;
    const float base = float(c.rope_theta);
    m_inv_freq.resize(static_cast<size_t>(half));
    std::vector<float> extra(static_cast<size_t>(half)), inter(static_cast<size_t>(half));
    const auto& rs = c.rope_scaling;
    const float factor = float(rs.yarn ? rs.factor : 1.0);
    for (int64_t i = 0; i < half; ++i) {
        // torch: base ** (arange(0, dim, 2).float() / dim)
        float pos_freq = std::pow(base, float(2 * i) / float(m_dim));
        extra[size_t(i)] = 1.0f / pos_freq;
        inter[size_t(i)] = 1.0f / (factor * pos_freq);
    }
    if (!rs.yarn) {
        m_inv_freq = extra;
        return;
    }
    const double orig = double(rs.original_max_position_embeddings);
    double low = std::floor(correction_dim(rs.beta_fast, m_dim, c.rope_theta, orig));
    double high = std::ceil(correction_dim(rs.beta_slow, m_dim, c.rope_theta, orig));
    low = std::max(low, 0.0);
    high = std::min(high, double(m_dim - 1));
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < half; ++i) {
        float ramp = std::clamp((float(i) - float(low)) / (float(high) - float(low)), 0.0f, 1.0f);
        float keep = 1.0f - ramp;  // extrapolation weight
        m_inv_freq[size_t(i)] = inter[size_t(i)] * (1.0f - keep) + extra[size_t(i)] * keep;
    }
    if (rs.attention_factor) {
        m_attention_factor = float(*rs.attention_factor);
    } else if (rs.mscale != 0.0 && rs.mscale_all_dim != 0.0) {
        m_attention_factor = float(get_mscale(rs.factor, rs.mscale) / get_mscale(rs.factor, rs.mscale_all_dim));
    } else {
        m_attention_factor = float(get_mscale(rs.factor, 1.0));
    }
}

void Rope::angles(int64_t pos, float* cos_sin) const {
    const int64_t half = m_dim / 2;
    for (int64_t i = 0; i < half; ++i) {
        float phi = float(pos) * m_inv_freq[size_t(i)];
        cos_sin[2 * i] = std::cos(phi) * m_attention_factor;
        cos_sin[2 * i + 1] = std::sin(phi) * m_attention_factor;
    }
}

void Rope::apply(float* x, const float* cs) const {
    const int64_t half = m_dim / 2;
    if (m_interleave) {
        for (int64_t i = 0; i < half; ++i) {
            const float a = x[2 * i], b = x[2 * i + 1], c = cs[2 * i], s = cs[2 * i + 1];
            x[2 * i] = a * c - b * s;
            x[2 * i + 1] = a * s + b * c;
        }
    } else {
        for (int64_t i = 0; i < half; ++i) {
            const float a = x[i], b = x[i + half], c = cs[2 * i], s = cs[2 * i + 1];
            x[i] = a * c - b * s;
            x[i + half] = b * c + a * s;
        }
    }
}

void Rope::apply(float* x, int64_t pos) const {
    std::vector<float> cs(static_cast<size_t>(m_dim));
    angles(pos, cs.data());
    apply(x, cs.data());
}

}  // namespace cetus
