// libFuzzer target for token choice (Sampler: repetition, frequency and presence
// penalties, a grammar's mask, temperature,
// top-k, top-p, min-p, the draw and the speculative accept/replace rule), which
// every request's parameters reach. The bytes give a vocabulary, the parameters
// as raw floats (those Engine::generate refuses, sampling_params_valid, are
// skipped as it skips them), finite logits of any size, a history and the
// uniforms. For valid parameters the distribution must be a distribution over
// the valid ids (finite, >= 0, summing to 1) and every choice a valid id with a
// non-zero probability; anything else, or a sanitizer report, is a finding.
#include "sampler.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

void require(bool ok) {
    if (!ok) __builtin_trap();
}

struct Reader {
    const uint8_t* p;
    size_t n;
    uint8_t byte() {
        if (n == 0) return 0;
        --n;
        return *p++;
    }
    float f32() {
        uint32_t bits = 0;
        for (int i = 0; i < 4; ++i) bits |= uint32_t(byte()) << (8 * i);
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
    }
    double unit() { return double(byte() | byte() << 8) / 65536.0; }
};

void check_distribution(const std::vector<float>& p, int64_t vocab, int64_t n_valid) {
    require(int64_t(p.size()) == vocab);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) {
        require(std::isfinite(p[size_t(i)]) && p[size_t(i)] >= 0);
        if (i >= n_valid) require(p[size_t(i)] == 0);
        sum += p[size_t(i)];
    }
    require(std::fabs(sum - 1.0) < 1e-3);
}

void check_choice(const std::vector<float>& p, int32_t id, int64_t n_valid) {
    require(id >= 0 && id < n_valid && p[size_t(id)] > 0);
}

// A grammar's mask (JSON mode): nothing outside it has probability or is chosen.
void check_masked(const std::vector<float>& p, const std::vector<uint8_t>* allowed) {
    if (!allowed)
        return;
    for (size_t i = 0; i < allowed->size(); ++i)
        if (!(*allowed)[i]) require(p[i] == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Reader in{data, size};
    const int64_t vocab = 1 + in.byte() % 64;
    const int64_t n_valid = 1 + in.byte() % vocab;
    cetus::SamplingParams sp;
    const uint8_t which = in.byte();  // which parameters the input sets (others keep defaults)
    if (which & 1) sp.temperature = in.f32();
    if (which & 2) sp.top_p = in.f32();
    if (which & 4) sp.min_p = in.f32();
    if (which & 8) sp.repetition_penalty = in.f32();
    if (which & 16) sp.top_k = int32_t(in.byte()) - 1;
    if (which & 32) sp.frequency_penalty = in.f32();
    if (which & 64) sp.presence_penalty = in.f32();
    const int64_t output_from = in.byte() % 10;  // where the answer starts in the history
    if (!cetus::sampling_params_valid(sp)) return 0;
    const int scale = int(in.byte() % 80) - 40;  // logits from about 2^-40 to 2^40 in size
    std::vector<float> logits(static_cast<size_t>(vocab));
    for (float& l : logits) l = std::ldexp(float(int16_t(in.byte() | in.byte() << 8)) / 32768.0f, scale);
    std::vector<int32_t> seen(in.byte() % 8), more(in.byte() % 4);
    for (int32_t& id : seen) id = int32_t(in.byte() % (vocab + 4)) - 2;  // a few outside the vocabulary
    for (int32_t& id : more) id = int32_t(in.byte() % (vocab + 4)) - 2;
    // Half the inputs choose under a mask (n_valid long, at least one id allowed).
    std::vector<uint8_t> mask;
    if (const uint8_t m = in.byte(); m & 1) {
        mask.resize(size_t(n_valid));
        for (auto& a : mask) a = in.byte() & 1;
        mask[size_t((m >> 1) % n_valid)] = 1;
    }
    const std::vector<uint8_t>* allowed = mask.empty() ? nullptr : &mask;

    cetus::Sampler s(sp, vocab, n_valid);
    s.set_output_from(output_from);
    s.set_allowed(allowed);
    if (s.greedy()) {
        const int32_t id = s.argmax(logits.data(), seen, more);
        require(id >= 0 && id < n_valid);
        if (allowed) require((*allowed)[size_t(id)] != 0);
        return 0;
    }
    std::vector<float> p, q;
    s.distribution(logits.data(), seen, p, more);
    check_distribution(p, vocab, n_valid);
    check_masked(p, allowed);
    for (double u : {0.0, in.unit(), 0.9999999999}) check_choice(p, cetus::Sampler::draw(p, u), n_valid);

    // The speculative rule with a draft distribution from other logits: an
    // accepted draft (-1) or a replacement with p > 0.
    std::vector<float> other(logits.rbegin(), logits.rend());
    s.distribution(other.data(), {}, q);
    check_distribution(q, vocab, n_valid);
    check_masked(q, allowed);
    const int32_t draft = cetus::Sampler::draw(q, in.unit());
    const int32_t rep = s.accept_or_replace(p, q, draft, in.unit(), in.unit());
    if (rep != -1) check_choice(p, rep, n_valid);
    return 0;
}
