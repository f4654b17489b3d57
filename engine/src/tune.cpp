// The step tuner: see tune.h.
#include "tune.h"

#include "log.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

namespace cetus {
namespace {

using Setting = std::vector<int>;  // a value per switch, in step_switches() order

double median(std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

class Tuner {
public:
    Tuner(Backend& b, int64_t vocab, const TuneOptions& o) : m_b(b), m_o(o), m_switches(b.step_switches()) {
        for (const Backend::StepSwitch& w : m_switches) m_built.push_back(w.value);
        m_now = m_built;
        m_context = std::clamp<int64_t>(o.context, 1, std::max<int64_t>(b.capacity() - 1, 1));
        m_ids.resize(size_t(m_context + 1));
        for (size_t j = 0; j < m_ids.size(); ++j) m_ids[j] = int32_t(int64_t(j * 7919 + 13) % std::max<int64_t>(vocab, 1));
        // The generator's greedy decode step (its logits stay where they are, the argmax
        // taken with them, the routing traced), and the same step's logits for the check.
        m_step.all_logits = false;
        m_step.want_routing = true;
        if (b.samples_on_device()) {
            m_step.logits_to_host = false;
            m_step.argmax_n_valid = vocab;
        }
        m_check.all_logits = false;
        m_check.logits_to_host = true;
    }

    bool empty() const { return m_switches.empty(); }
    int64_t context() const { return m_context; }

    std::string text(const Setting& s) const {
        std::string out;
        for (size_t i = 0; i < s.size(); ++i) {
            if (s[i] == m_built[i]) continue;
            if (!out.empty()) out += ", ";
            out += m_switches[i].name + "=" + std::to_string(s[i]);
        }
        return out.empty() ? "as built" : out;
    }

    void apply(const Setting& s) {
        for (size_t i = 0; i < s.size(); ++i) {
            if (s[i] == m_now[i]) continue;
            m_b.set_step_switch(m_switches[i].name, s[i]);
            m_now[i] = s[i];
        }
    }

    // The settings with one switch away from as built, each at each of its other values.
    std::vector<Setting> alone() const {
        std::vector<Setting> out;
        for (size_t i = 0; i < m_switches.size(); ++i)
            for (int v : m_switches[i].values)
                if (v != m_built[i]) {
                    Setting s = m_built;
                    s[i] = v;
                    out.push_back(std::move(s));
                }
        return out;
    }

    void prefill() {
        m_b.truncate(0);
        ForwardOptions o;
        o.all_logits = false;
        ForwardOutput out;
        m_b.forward(m_ids.data(), m_context, 0, o, out);
    }

    // The step's logits with setting s, from the second of two calls: the CUDA backend
    // captures its graph at the second call of a shape and launches that graph, which
    // is what the timed steps and the generator replay.
    std::vector<float> logits(const Setting& s) {
        apply(s);
        for (int k = 0; k < 2; ++k) m_b.forward(&m_ids[size_t(m_context)], 1, m_context, m_check, m_out);
        return m_out.logits;
    }

    // Largest |a - ref| over the largest |ref|; infinite for a value that is not finite.
    static double error(const std::vector<float>& a, const std::vector<float>& ref) {
        if (a.size() != ref.size() || ref.empty()) return INFINITY;
        double top = 0.0, worst = 0.0;
        for (size_t i = 0; i < a.size(); ++i) {
            if (!std::isfinite(a[i]) || !std::isfinite(ref[i])) return INFINITY;
            top = std::max(top, double(std::fabs(ref[i])));
            worst = std::max(worst, double(std::fabs(a[i] - ref[i])));
        }
        return top > 0.0 ? worst / top : worst;
    }

    // Each setting's median milliseconds a step, timed round after round.
    std::vector<double> time(const std::vector<Setting>& settings) {
        const int rounds = std::max(m_o.rounds, 1), steps = std::max(m_o.steps, 1);
        for (const Setting& s : settings) {  // untimed: the CUDA backend captures its graph at the second
            apply(s);
            for (int k = 0; k < 2; ++k) step();
        }
        std::vector<std::vector<double>> ms(settings.size());
        for (int r = 0; r < rounds; ++r) {
            for (size_t i = 0; i < settings.size(); ++i) {
                apply(settings[i]);
                const double t0 = now();
                for (int k = 0; k < steps; ++k) step();
                ms[i].push_back((now() - t0) * 1e3 / steps);
            }
        }
        std::vector<double> out;
        for (auto& v : ms) out.push_back(median(std::move(v)));
        return out;
    }

    const Setting& built() const { return m_built; }

private:
    void step() { m_b.forward(&m_ids[size_t(m_context)], 1, m_context, m_step, m_out); }
    double now() const {
        if (m_o.clock) return m_o.clock();
        return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    }

    Backend& m_b;
    const TuneOptions& m_o;
    std::vector<Backend::StepSwitch> m_switches;
    Setting m_built, m_now;
    int64_t m_context = 0;
    std::vector<int32_t> m_ids;
    ForwardOptions m_step, m_check;
    ForwardOutput m_out;
};

}  // namespace

StepTuning tune_steps(Backend& backend, int64_t vocab_size, const TuneOptions& o) {
    const auto t_start = std::chrono::steady_clock::now();
    StepTuning r;
    Tuner t(backend, vocab_size, o);
    if (t.empty()) {
        r.note = backend.name() + " backend: no alternative decode steps to time";
        return r;
    }
    if (backend.capacity() < 2 || vocab_size < 1) {
        r.note = "a context of " + std::to_string(backend.capacity()) + " tokens leaves no room for a decode step";
        return r;
    }
    r.ran = true;
    r.context = t.context();
    r.rounds = std::max(o.rounds, 1);
    r.steps = std::max(o.steps, 1);
    try {
        t.prefill();
        const std::vector<float> ref = t.logits(t.built());
        // Every setting checked; the valid ones timed together.
        std::vector<Setting> settings{t.built()};
        for (Setting& s : t.alone()) settings.push_back(std::move(s));
        std::vector<Setting> valid;
        std::vector<size_t> where;  // r.trials index of each valid setting
        const auto check = [&](const Setting& s) {
            StepTrial trial;
            trial.setting = t.text(s);
            trial.logit_error = s == t.built() ? 0.0 : Tuner::error(t.logits(s), ref);
            trial.valid = trial.logit_error <= o.max_logit_error;
            r.trials.push_back(trial);
            return trial.valid;
        };
        for (const Setting& s : settings)
            if (check(s)) {
                valid.push_back(s);
                where.push_back(r.trials.size() - 1);
            }
        std::vector<double> ms = t.time(valid);
        for (size_t i = 0; i < valid.size(); ++i) r.trials[where[i]].step_ms = ms[i];
        // The switches that gained alone (by half the margin), each at its best value, together.
        const double built_ms = ms[0];
        Setting together = t.built();
        std::vector<double> together_ms(together.size(), built_ms);
        size_t best_alone = 0;
        for (size_t i = 1; i < valid.size(); ++i) {
            if (ms[i] < ms[best_alone]) best_alone = i;
            size_t k = 0;  // the one switch it changes
            while (valid[i][k] == t.built()[k]) ++k;
            if (built_ms >= ms[i] * (1.0 + 0.5 * o.min_gain) && ms[i] < together_ms[k]) {
                together[k] = valid[i][k];
                together_ms[k] = ms[i];
            }
        }
        int gained = 0;
        for (size_t k = 0; k < together.size(); ++k) gained += together[k] != t.built()[k];
        std::vector<Setting> last = valid;  // the settings the choice is made among
        std::vector<double> last_ms = ms;
        if (gained >= 2 && check(together)) {
            const size_t at = r.trials.size() - 1;
            last = {t.built(), valid[best_alone], together};
            last_ms = t.time(last);
            r.trials[at].step_ms = last_ms[2];
            r.note = fmt::format("the switches that gained alone timed together in {} more rounds beside the "
                                 "built setting ({:.3f} ms) and {} ({:.3f} ms); ",
                                 r.rounds, last_ms[0], t.text(valid[best_alone]), last_ms[1]);
        }
        size_t best = 0;
        for (size_t i = 1; i < last.size(); ++i)
            if (last_ms[i] < last_ms[best]) best = i;
        if (last_ms[0] < last_ms[best] * (1.0 + o.min_gain)) best = 0;
        t.apply(last[best]);
        r.chosen = t.text(last[best]);
        r.built_ms = last_ms[0];
        r.chosen_ms = last_ms[best];
        r.note += best == 0 ? "kept as built: nothing was " + std::to_string(int(std::lround(o.min_gain * 100))) +
                                  " % faster"
                            : "chosen: " + r.chosen;
        backend.forget_prepared_steps();
        backend.truncate(0);
    } catch (...) {
        try {  // (a device fault may refuse this too; the original error says what happened)
            t.apply(t.built());
            backend.forget_prepared_steps();
            backend.truncate(0);
        } catch (...) {
        }
        throw;
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    return r;
}

}  // namespace cetus
