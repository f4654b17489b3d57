// Conformance checks over tests/data/golden/<case>/ (model files + golden.safetensors
// written by tests/golden/make_fixtures.py). Tolerances: logits within 1e-4 of the
// largest |logit| (relative), identical argmax, identical router choices. BF16 and
// FP8 cases keep the same bound because their reference ran in fp32 on exactly the
// dequantised weights the file holds: only summation order differs.
#include "cetus/selftest.h"

#include "backend.h"
#include "cuda_loader.h"
#include "json_util.h"
#include "model.h"
#include "safetensors.h"

#include "generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <random>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <utility>
#include <vector>

namespace cetus {

std::unique_ptr<Model> build_random_model(const RandomModelOptions& r);  // random_model.cpp
std::unique_ptr<Model> build_random_model(const RandomModelOptions& r, bool drawn);

namespace {

struct Golden {
    std::unique_ptr<SafetensorsFile> file;
    std::map<std::string, const TensorInfo*> by_name;

    bool has(const std::string& n) const { return by_name.count(n) > 0; }
    const TensorInfo& get(const std::string& n) const {
        auto it = by_name.find(n);
        if (it == by_name.end()) throw Error(ErrorCode::MissingTensor, "golden tensor \"" + n + "\" missing");
        return *it->second;
    }
    std::vector<float> f32(const std::string& n) const {
        const TensorInfo& t = get(n);
        if (t.dtype != Dtype::F32) throw Error(ErrorCode::BadTensor, "golden \"" + n + "\" must be F32");
        std::vector<float> v(static_cast<size_t>(t.n_elements()));
        std::memcpy(v.data(), t.data, t.n_bytes);
        return v;
    }
    // Prompt k's tensors are named "prompt.k.*"; prompts count from 0 while "ids" exist.
    static std::string prompt(int k) { return "prompt." + std::to_string(k) + "."; }
    int n_prompts() const {
        int k = 0;
        while (has(prompt(k) + "ids")) ++k;
        return k;
    }
    std::vector<int32_t> i32(const std::string& n) const {
        const TensorInfo& t = get(n);
        if (t.dtype != Dtype::I32) throw Error(ErrorCode::BadTensor, "golden \"" + n + "\" must be I32");
        std::vector<int32_t> v(static_cast<size_t>(t.n_elements()));
        std::memcpy(v.data(), t.data, t.n_bytes);
        return v;
    }
};

struct Compare {
    double rel = 0.0;  // max |a - b| / max |b|
    size_t worst = 0;
};

Compare compare(const std::vector<float>& a, const std::vector<float>& b) {
    Compare c;
    if (a.size() != b.size()) {
        c.rel = INFINITY;
        return c;
    }
    double scale = 0.0, worst = 0.0;
    for (float x : b) scale = std::max(scale, double(std::fabs(x)));
    for (size_t i = 0; i < a.size(); ++i) {
        double d = std::fabs(double(a[i]) - double(b[i]));
        if (!(d <= worst)) {  // also catches NaN
            worst = std::isnan(d) ? INFINITY : d;
            c.worst = i;
        }
    }
    c.rel = scale > 0 ? worst / scale : worst;
    return c;
}

int64_t argmax_row(const float* row, int64_t n) { return std::max_element(row, row + n) - row; }

class Runner {
public:
    Runner(std::vector<CheckResult>& out, std::string fixture) : m_out(out), m_fixture(std::move(fixture)) {}

    void check(const std::string& name, bool ok, double err, double tol, const std::string& detail) {
        const auto now = std::chrono::steady_clock::now();
        m_out.push_back({m_fixture, name, ok, err, tol, detail, std::chrono::duration<double>(now - m_last).count()});
        m_last = now;
    }
    void close(const std::string& name, const std::vector<float>& got, const std::vector<float>& want, double tol,
               int64_t row_len) {
        Compare c = compare(got, want);
        std::string d;
        if (got.size() != want.size()) d = "size " + std::to_string(got.size()) + " vs " + std::to_string(want.size());
        else if (row_len > 0 && !want.empty())
            d = "worst at [" + std::to_string(c.worst / size_t(row_len)) + ", " + std::to_string(c.worst % size_t(row_len)) +
                "]: " + std::to_string(got[c.worst]) + " vs " + std::to_string(want[c.worst]);
        check(name, c.rel <= tol, c.rel, tol, d);
    }

    // Rows of row_len values each within tol (relative to the largest |want|), but
    // for at most a share max_share of the rows, rounded up (and at least one row).
    void close_rows(const std::string& name, const std::vector<float>& got, const std::vector<float>& want, double tol,
                    int64_t row_len, double max_share) {
        if (got.size() != want.size() || row_len <= 0 || want.size() % size_t(row_len) != 0) {
            close(name, got, want, tol, row_len);
            return;
        }
        double scale = 0.0;
        for (float x : want) scale = std::max(scale, double(std::fabs(x)));
        const size_t rows = want.size() / size_t(row_len);
        size_t beyond = 0;
        for (size_t r = 0; r < rows; ++r) {
            double worst = 0.0;
            for (size_t i = r * size_t(row_len); i < (r + 1) * size_t(row_len); ++i) {
                const double d = std::fabs(double(got[i]) - double(want[i]));
                worst = std::isnan(d) ? INFINITY : std::max(worst, d);
            }
            beyond += (scale > 0 ? worst / scale : worst) > tol ? 1 : 0;
        }
        // At least one row, so that a single flip in a short run is allowed too.
        const size_t allowed = std::max<size_t>(1, size_t(std::ceil(max_share * double(rows))));
        check(name, beyond <= allowed, double(beyond), double(allowed),
              std::to_string(beyond) + " of " + std::to_string(rows) + " rows beyond " + std::to_string(tol));
    }

private:
    std::chrono::steady_clock::time_point m_last = std::chrono::steady_clock::now();
    std::vector<CheckResult>& m_out;
    std::string m_fixture;
};

// A prompt's expert choices against the fixture's, for the MoE layers it records:
// differing ids, slots compared, and both sides' gate weights.
struct RouterComparison {
    int64_t differ = 0, total = 0;
    std::vector<float> got_w, want_w;
};
RouterComparison compare_router(const Golden& g, const std::string& p, const ModelConfig& c, const RoutingRecord& got,
                                int64_t T) {
    RouterComparison rc;
    const int64_t K = c.num_experts_per_tok, n_moe = c.n_moe_layers();
    int64_t moe_index = 0;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
        if (!c.is_moe_layer(l)) continue;
        const std::string rn = p + "router." + std::to_string(l);
        if (g.has(rn)) {
            const auto want = g.i32(rn);
            const auto ww = g.f32(p + "router_weights." + std::to_string(l));
            for (int64_t t = 0; t < T; ++t)
                for (int64_t j = 0; j < K; ++j, ++rc.total) {
                    const size_t gi = size_t((t * n_moe + moe_index) * K + j);
                    rc.differ += got.ids[gi] != want[size_t(t * K + j)] ? 1 : 0;
                    rc.got_w.push_back(got.weights[gi]);
                    rc.want_w.push_back(ww[size_t(t * K + j)]);
                }
        }
        ++moe_index;
    }
    return rc;
}

// The logits of ids fed one token at a time through an emptied cache: [T, V].
std::vector<float> decode_stepwise(Backend& backend, const std::vector<int32_t>& ids) {
    std::vector<float> stepwise;
    backend.clear();
    ForwardOutput step;
    for (size_t t = 0; t < ids.size(); ++t) {
        backend.forward(&ids[t], 1, int64_t(t), ForwardOptions{}, step);
        stepwise.insert(stepwise.end(), step.logits.begin(), step.logits.end());
    }
    return stepwise;
}

// The prompts again with a bf16 latent cache (EngineOptions::kv_cache). Every
// cached value is rounded to bf16 (up to 2^-9 relative), so:
// - against transformers' fp32 logits the bound is k_bf16_cache_reference_tol, but
//   the rounding flips the odd near-tied expert choice (at most
//   k_bf16_cache_flipped_choices of them), and a flipped choice changes that token's
//   output and, through attention, later ones: up to k_bf16_cache_flipped_rows of
//   the rows (at least one) may be beyond the bound;
// - two computations of the same numbers that agree within the fp32 bound (1e-4)
//   with an fp32 cache, such as token-by-token decode and one prefill, store the
//   same values but where their fp32 results for a value straddle a rounding
//   boundary: there one bf16 step (2^-8 relative) apart (their rows are held to
//   that: count_steps). One such step can move later logits by more than fp32
//   noise (up to 2.4e-3 of the largest on the tiny random model), so where the
//   rows differ, the decode's logits are held to those of the CPU's prefill
//   storing the decode's rows (ForwardOptions::follow_cache) instead;
// - on the CPU the cache rows of the first layer (a function of the embeddings
//   alone) are exactly the fp32 cache's rows rounded to nearest even.
// Measured (2026-11-29, CPU): see the README's "BF16 latent cache".
constexpr double k_bf16_cache_reference_tol = 2e-2;
constexpr double k_bf16_cache_flipped_choices = 0.05, k_bf16_cache_flipped_rows = 0.2;

// The main layers' cache rows [0, n) of b as bf16 bits (b's cache is bf16, so
// its fp32 copies are exact), and the first MTP module's rows [0, n_mtp), for the
// CPU to follow.
CacheFollow cache_to_follow(Backend& b, const ModelConfig& c, int64_t n, int64_t n_mtp = 0) {
    CacheFollow f;
    const int64_t mtp_layer = c.num_hidden_layers;
    f.rows.resize(size_t(mtp_layer + (n_mtp > 0 ? 1 : 0)));
    for (int64_t l = 0; l < int64_t(f.rows.size()); ++l)
        for (int64_t pos = 0; pos < (l < mtp_layer ? n : n_mtp); ++pos)
            for (float v : b.cache_row(l, pos)) f.rows[size_t(l)].push_back(f32_to_bf16(v));
    return f;
}

// Values of two bf16 caches' rows (cache_to_follow) that differ by one bf16 step
// (fp32 results that straddled a rounding boundary) and by more, of the total.
struct StepCount {
    int64_t values = 0, one_step = 0, further = 0;
};
StepCount count_steps(const CacheFollow& a, const CacheFollow& b, int64_t width) {
    StepCount n;
    for (size_t l = 0; l < a.rows.size() && l < b.rows.size(); ++l) {
        const auto &x = a.rows[l], &y = b.rows[l];
        if (x.size() != y.size()) {
            n.further += int64_t(std::max(x.size(), y.size()));
            continue;
        }
        for (size_t r0 = 0; r0 < x.size(); r0 += size_t(width)) {
            float scale = 0.0f;
            for (size_t i = r0; i < r0 + size_t(width); ++i) scale = std::max(scale, std::fabs(bf16_to_f32(x[i])));
            for (size_t i = r0; i < r0 + size_t(width); ++i) {
                if (x[i] == y[i]) continue;
                if (within_bf16_step(bf16_to_f32(x[i]), bf16_to_f32(y[i]), scale)) ++n.one_step;
                else ++n.further;
            }
        }
        n.values += int64_t(x.size());
    }
    return n;
}

// At most this share of a bf16 cache's values may be stored one step apart by two
// computations of the same numbers (measured on the emulator: 0.07% to 0.08%
// between the CPU and the CUDA backend; on the CPU 0.44% between MLA's absorbed
// and naive forms, test_cache_follow; 50% if one side rounds toward zero).
constexpr double k_straddle_share = 2e-2;

// The GPU's cache rows the CPU followed (ForwardOptions::follow_cache): every value
// within a bf16 step of the CPU's own fp32 value, and at most k_straddle_share of
// them not the CPU's value rounded to nearest even.
void check_followed_rows(Runner& r, const std::string& what, const CacheFollow& f) {
    const double share = f.values > 0 ? double(f.other_rounding) / double(f.values) : 1.0;
    r.check(what + "cache rows the CPU followed: within a bf16 step of its values", f.further == 0 && share <= k_straddle_share,
            share, k_straddle_share,
            std::to_string(f.other_rounding) + " of " + std::to_string(f.values) + " values one step apart, " +
                std::to_string(f.further) + " further");
}

void run_case_bf16_cache(Runner& r, const Golden& g, EngineOptions options, Engine& f32_engine, double tol) {
    std::unique_ptr<Engine> engine;
    try {
        options.kv_cache = KvCacheType::BF16;
        engine = Engine::load(options);
    } catch (const std::exception& e) {
        r.check("bf16 cache: load", false, 0, 0, e.what());
        return;
    }
    Backend& backend = engine->backend();
    const ModelConfig& c = engine->model().config();
    const int64_t V = c.vocab_size;
    std::unique_ptr<Engine> cpu_engine;  // the CPU's prefill on another pass's rows (loaded when needed)
    r.check("bf16 cache: bytes per token", backend.kv_bytes_per_token() * 2 == f32_engine.backend().kv_bytes_per_token(),
            double(backend.kv_bytes_per_token()), double(f32_engine.backend().kv_bytes_per_token()) / 2, "");
    for (int k = 0; k < g.n_prompts(); ++k) {
        const std::string p = Golden::prompt(k), tag = "prompt " + std::to_string(k) + " bf16 cache: ";
        try {
            const auto ids = g.i32(p + "ids");
            const int64_t T = int64_t(ids.size());
            ForwardOptions fo;
            fo.want_routing = true;
            ForwardOutput prefill;
            backend.clear();
            backend.forward(ids.data(), T, 0, fo, prefill);
            const CacheFollow prefill_rows = cache_to_follow(backend, c, T);
            r.close_rows(tag + "logits vs transformers (fp32)", prefill.logits, g.f32(p + "logits"),
                         std::max(tol, k_bf16_cache_reference_tol), V, k_bf16_cache_flipped_rows);
            // Expert choices against transformers'.
            const RouterComparison rc = compare_router(g, p, c, prefill.routing, T);
            if (rc.total > 0) {
                const double share = double(rc.differ) / double(rc.total);
                r.check(tag + "router expert ids", share <= k_bf16_cache_flipped_choices, share,
                        k_bf16_cache_flipped_choices,
                        std::to_string(rc.differ) + " of " + std::to_string(rc.total) + " choices differ");
            }
            auto* cpu = dynamic_cast<CpuBackend*>(&backend);
            auto* cpu_f32 = dynamic_cast<CpuBackend*>(&f32_engine.backend());
            if (cpu && cpu_f32) {  // (device auto may have put one of them on the GPU)
                ForwardOutput unused;
                cpu_f32->clear();
                cpu_f32->forward(ids.data(), T, 0, ForwardOptions{}, unused);
                const CacheRows got = cpu->cache().layer(0), want = cpu_f32->cache().layer(0);
                int64_t differ = 0;
                for (int64_t i = 0; i < T * got.width; ++i) differ += got.bf16(0)[i] != f32_to_bf16(want.f32(0)[i]);
                r.check(tag + "layer 0 rows == fp32 rows rounded to bf16", differ == 0, double(differ), 0,
                        std::to_string(differ) + " of " + std::to_string(T * got.width) + " values differ");
            }
            // The two store the same values but where their fp32 results straddle a
            // rounding boundary: one step apart, no further (a path that rounded
            // otherwise would show). With the same rows their logits agree to fp32
            // noise (tol); with rows a step apart, the decode's logits agree to fp32
            // noise with those of the CPU's prefill storing the decode's rows, which
            // reads what each decode step read (its own values are held to those rows).
            const std::vector<float> stepwise = decode_stepwise(backend, ids);
            CacheFollow decode_rows = cache_to_follow(backend, c, T);
            const StepCount steps = count_steps(decode_rows, prefill_rows, c.kv_lora_rank + c.qk_rope_head_dim);
            const double share = steps.values > 0 ? double(steps.one_step) / double(steps.values) : 1.0;
            r.check(tag + "decode and prefill cache rows within a bf16 step", steps.further == 0 && share <= k_straddle_share,
                    share, k_straddle_share,
                    std::to_string(steps.one_step) + " of " + std::to_string(steps.values) + " values one step apart, " +
                        std::to_string(steps.further) + " further");
            if (steps.one_step == 0 && steps.further == 0) {
                r.close(tag + "decode through cache vs prefill (same rows)", stepwise, prefill.logits, tol, V);
            } else {
                if (!cpu_engine) {
                    EngineOptions o = options;
                    o.device = Device::Cpu;
                    cpu_engine = Engine::load(o);
                }
                Backend& ref = cpu_engine->backend();
                ForwardOptions f;
                f.follow_cache = &decode_rows;
                ForwardOutput on_rows;
                ref.clear();
                ref.forward(ids.data(), T, 0, f, on_rows);
                check_followed_rows(r, tag + "decode's ", decode_rows);
                r.close(tag + "decode through cache (rows a step apart from prefill's) vs the CPU's prefill on its rows",
                        stepwise, on_rows.logits, tol, V);
            }
        } catch (const std::exception& e) {
            r.check("prompt " + std::to_string(k) + " bf16 cache", false, 0, 0, e.what());
        }
    }
}

void run_case(const std::filesystem::path& dir, Device device, std::vector<CheckResult>& out) {
    const std::string name = dir.filename().string();
    Runner r(out, name);
    double tol = 1e-4;
    std::filesystem::path model_dir = dir;  // a manifest may point at a model kept elsewhere
    EngineOptions options;
    Golden g;
    std::unique_ptr<Engine> engine;
    try {
        auto manifest = dir / "manifest.json";
        if (std::filesystem::exists(manifest)) {
            std::ifstream in(manifest);
            std::stringstream ss;
            ss << in.rdbuf();
            auto j = parse_json_strict(ss.str(), manifest.string());
            if (j.contains("tolerance") && j["tolerance"].is_number()) tol = j["tolerance"].get<double>();
            if (j.contains("model_dir") && j["model_dir"].is_string()) model_dir = dir / j["model_dir"].get<std::string>();
        }
        g.file = std::make_unique<SafetensorsFile>(dir / "golden.safetensors");
        for (const auto& t : g.file->tensors()) g.by_name[t.name] = &t;
        options.model_dir = model_dir;
        options.device = device;
        options.max_context = 512;
        engine = Engine::load(options);
    } catch (const std::exception& e) {
        r.check("load", false, 0, 0, e.what());
        return;
    }
    Model& model = engine->model();
    Backend& backend = engine->backend();
    const ModelConfig& c = model.config();
    const int64_t V = c.vocab_size, H = c.hidden_size;

    for (int k = 0; k < g.n_prompts(); ++k) {
        const std::string p = Golden::prompt(k);
        try {
            const auto ids = g.i32(p + "ids");
            const int64_t T = int64_t(ids.size());
            const std::string tag = "prompt " + std::to_string(k) + " (" + std::to_string(T) + " tokens) ";

            ForwardOptions fo;
            fo.want_hidden = true;
            fo.want_routing = true;
            ForwardOutput prefill;
            backend.clear();
            backend.forward(ids.data(), T, 0, fo, prefill);
            const auto want_logits = g.f32(p + "logits");
            r.close(tag + "logits", prefill.logits, want_logits, tol, V);
            int64_t mismatches = 0, first_bad = -1;
            for (int64_t t = 0; t < T && want_logits.size() == size_t(T * V); ++t)
                if (argmax_row(prefill.logits.data() + t * V, V) != argmax_row(want_logits.data() + t * V, V)) {
                    if (first_bad < 0) first_bad = t;
                    ++mismatches;
                }
            r.check(tag + "argmax", mismatches == 0, double(mismatches), 0,
                    mismatches ? "first mismatch at position " + std::to_string(first_bad) : "");
            if (g.has(p + "hidden")) r.close(tag + "final hidden", prefill.hidden, g.f32(p + "hidden"), tol, H);

            // Router choices per MoE layer: exact ids, close weights.
            const RouterComparison rc = compare_router(g, p, c, prefill.routing, T);
            if (rc.total > 0) {
                r.check(tag + "router expert ids", rc.differ == 0, double(rc.differ), 0,
                        rc.differ ? std::to_string(rc.differ) + " choices differ" : "");
                r.close(tag + "router gate weights", rc.got_w, rc.want_w, tol, 0);
            }

            // Absorbed and naive attention agree (forced both ways on the whole prompt);
            // the CPU has both forms, other backends only the absorbed one.
            if (backend.name() == "cpu") {
                ForwardOptions naive, absorbed;
                naive.mla_form = {0, false};
                absorbed.mla_form.absorb_max_tokens = int64_t(1) << 40;
                ForwardOutput on, oa;
                backend.clear();
                backend.forward(ids.data(), T, 0, naive, on);
                backend.clear();
                backend.forward(ids.data(), T, 0, absorbed, oa);
                r.close(tag + "absorbed vs naive attention", oa.logits, on.logits, tol, V);
            }

            // Token by token through the cache equals the one-shot prefill.
            r.close(tag + "decode through cache vs prefill", decode_stepwise(backend, ids), prefill.logits, tol, V);

            if (g.has(p + "mtp_logits") && model.n_mtp() > 0 && T > 1) {
                MtpOutput mtp;
                backend.mtp_forward(0, prefill.hidden.data(), ids.data() + 1, T - 1, 0, MtpOptions{}, mtp);
                r.close(tag + "MTP logits", mtp.logits, g.f32(p + "mtp_logits"), tol, V);
            }

            if (g.has(p + "greedy")) {
                const auto want = g.i32(p + "greedy");
                backend.clear();
                ForwardOptions last;
                last.all_logits = false;
                ForwardOutput o;
                backend.forward(ids.data(), T, 0, last, o);
                std::vector<int32_t> got;
                for (size_t i = 0; i < want.size() && T + int64_t(i) < backend.capacity(); ++i) {
                    int32_t next = int32_t(argmax_row(o.logits.data(), V));
                    got.push_back(next);
                    backend.forward(&next, 1, T + int64_t(i), last, o);
                }
                size_t diverge = 0;
                while (diverge < got.size() && diverge < want.size() && got[diverge] == want[diverge]) ++diverge;
                r.check(tag + "greedy continuation", got == want, double(want.size() - diverge), 0,
                        got == want ? "" : "diverges at step " + std::to_string(diverge));
            }
        } catch (const std::exception& e) {
            r.check("prompt " + std::to_string(k), false, 0, 0, e.what());
        }
    }
    run_case_bf16_cache(r, g, options, *engine, tol);
}

// Sets an environment variable for a scope (the CUDA backend reads its mode at creation).
class EnvGuard {
public:
    EnvGuard(const char* name, const char* value) : m_name(name) {
        if (const char* old = std::getenv(name)) m_old = old;
        setenv(name, value, 1);
    }
    ~EnvGuard() {
        if (m_old) setenv(m_name, m_old->c_str(), 1);
        else unsetenv(m_name);
    }
    EnvGuard(const EnvGuard&) = delete;
    EnvGuard& operator=(const EnvGuard&) = delete;

private:
    const char* m_name;
    std::optional<std::string> m_old;
};

struct Pass {  // one backend's outputs on the comparison script
    ForwardOutput prefill;
    std::vector<float> decode, mtp;
    std::vector<int32_t> decode_routing;  // [steps, n_moe_layers, top_k]
    RoutingRecord mtp_routing;            // the MTP module's choices, [prompt - 1, 1, top_k]
};

// follow (CPU backend only): the pass whose expert choices every MoE layer and the
// MTP module take (ForwardOptions and MtpOptions::follow_routing), so that the
// comparison of a bf16 pass is not dominated by the few near-tied choices its
// rounding flips; follow_cache (CPU
// backend, bf16 caches): the cache rows of the main layers and of the MTP module
// to store instead of its own (ForwardOptions and MtpOptions::follow_cache).
Pass run_script(Backend& b, const Model& model, const std::vector<int32_t>& prompt, const std::vector<int32_t>& steps,
                const std::vector<float>* mtp_hidden, const Pass* follow = nullptr,
                CacheFollow* follow_cache = nullptr, bool all_prefill_logits = true) {
    Pass p;
    ForwardOptions fo;
    fo.all_logits = all_prefill_logits;  // false: the prompt's last row only (a check of the steps alone)
    fo.want_hidden = true;
    fo.want_routing = true;
    fo.follow_cache = follow_cache;
    const size_t slots = size_t(model.config().n_moe_layers() * model.config().num_experts_per_tok);
    if (follow) {
        if (follow->prefill.routing.ids.size() != prompt.size() * slots ||
            follow->decode_routing.size() != steps.size() * slots)
            throw Error(ErrorCode::BadRequest, "selftest: the routing to follow does not cover the script");
        fo.follow_routing = follow->prefill.routing.ids.data();
    }
    b.clear();
    b.forward(prompt.data(), int64_t(prompt.size()), 0, fo, p.prefill);
    ForwardOutput o;
    for (size_t i = 0; i < steps.size(); ++i) {
        ForwardOptions so;
        so.want_routing = true;
        so.follow_cache = follow_cache;
        if (follow) so.follow_routing = follow->decode_routing.data() + i * slots;
        b.forward(&steps[i], 1, int64_t(prompt.size() + i), so, o);
        p.decode.insert(p.decode.end(), o.logits.begin(), o.logits.end());
        p.decode_routing.insert(p.decode_routing.end(), o.routing.ids.begin(), o.routing.ids.end());
    }
    // The MTP module from given main-model states (the reference's, to compare the
    // module alone) or from this backend's own.
    if (model.n_mtp() > 0) {
        const float* h = mtp_hidden ? mtp_hidden->data() : p.prefill.hidden.data();
        MtpOptions mopt;
        mopt.want_routing = true;
        mopt.follow_cache = follow_cache;
        if (follow && !follow->mtp_routing.ids.empty()) {
            if (follow->mtp_routing.ids.size() != (prompt.size() - 1) * size_t(model.config().num_experts_per_tok))
                throw Error(ErrorCode::BadRequest, "selftest: the MTP routing to follow does not cover the prompt");
            mopt.follow_routing = follow->mtp_routing.ids.data();
        }
        MtpOutput mo;
        b.mtp_forward(0, h, prompt.data() + 1, int64_t(prompt.size()) - 1, 0, mopt, mo);
        p.mtp = std::move(mo.logits);
        p.mtp_routing = std::move(mo.routing);
    }
    return p;
}

// With lookup: drafts looked up in the context (up to 4 a step) instead of MTP's.
std::vector<int32_t> greedy(const Model& model, Backend& b, const std::vector<int32_t>& prompt, bool mtp,
                            bool lookup = false) {
    Generator g(model, b, nullptr);
    GenerateRequest req;
    req.prompt_ids = prompt;
    req.sampling.temperature = 0.0f;
    req.max_new_tokens = 24;
    req.mtp = mtp;
    req.lookup = lookup;
    req.n_draft = lookup ? 4 : 2;
    return g.run(req, {}).ids;
}

// The backend under comparison: the CUDA backend, or with
// CETUS_SELFTEST_CUDA_STANDIN=cpu a second CPU backend, so the comparison harness
// itself can be checked on machines without a GPU (every check must then pass).
bool cpu_stands_in() {
    const char* e = std::getenv("CETUS_SELFTEST_CUDA_STANDIN");
    return e && std::string(e) == "cpu";
}

bool host_sampling_asked() {
    const char* e = std::getenv("CETUS_CUDA_SAMPLING");
    return e && std::string(e) == "host";
}

// Sampling on the device unless CETUS_CUDA_SAMPLING=host (read at creation;
// the stand-in emulates the device's choices on the host).
std::unique_ptr<Backend> compared_backend(const Model& model, int64_t capacity, KvCacheType kv) {
    if (cpu_stands_in()) {
        auto b = std::make_unique<CpuBackend>(model, capacity, kv);
        b->set_device_sampling(!host_sampling_asked());
        return b;
    }
    return create_cuda_backend(model, capacity, kv, {});
}

// compared_backend with CETUS_CUDA_EXACT=exact and further settings in the
// environment while it is created (the backend reads them then).
using EnvSettings = std::vector<std::pair<const char*, const char*>>;
std::unique_ptr<Backend> compared_backend(const Model& model, int64_t capacity, KvCacheType kv, const char* exact,
                                          const EnvSettings& more) {
    std::vector<std::unique_ptr<EnvGuard>> guards;
    guards.push_back(std::make_unique<EnvGuard>("CETUS_CUDA_EXACT", exact));
    for (const auto& [name, value] : more) guards.push_back(std::make_unique<EnvGuard>(name, value));
    return compared_backend(model, capacity, kv);
}

// With logprobs: also asks for each token's log-probability and five alternatives, kept
// there in order (the token's, then the alternatives').
// With count_penalties (frequency and presence), a device that samples leaves the
// choices to the host: its rows come back as a CPU's do.
std::vector<int32_t> sampled(const Model& model, Backend& b, const std::vector<int32_t>& prompt, uint64_t seed,
                             std::vector<float>* logprobs = nullptr, bool count_penalties = false) {
    Generator g(model, b, nullptr);
    GenerateRequest req;
    req.prompt_ids = prompt;
    req.sampling.temperature = 0.9f;
    req.sampling.top_p = 0.95f;
    req.sampling.repetition_penalty = 1.1f;
    req.sampling.seed = seed;
    if (count_penalties) {
        req.sampling.frequency_penalty = 0.7f;
        req.sampling.presence_penalty = -0.4f;
    }
    req.max_new_tokens = 24;
    req.mtp = true;
    req.n_draft = 3;
    if (!logprobs) return g.run(req, {}).ids;
    req.logprobs = 5;
    return g.run(req, [&](const TokenEvent& ev) {
                if (!ev.has_logprob) return;
                logprobs->push_back(ev.logprob);
                for (const TokenLogprob& t : ev.top_logprobs) logprobs->push_back(t.logprob);
            }).ids;
}

// Sampled generation with drafts looked up in the context (each draft's q all on its id:
// Backend::certain_draft on a device that samples, the host's own q otherwise).
GenerateResult sampled_lookup(const Model& model, Backend& b, const std::vector<int32_t>& prompt, uint64_t seed) {
    Generator g(model, b, nullptr);
    GenerateRequest req;
    req.prompt_ids = prompt;
    req.sampling.temperature = 0.2f;  // near the argmax: the answer soon repeats itself, as greedy ones do
    req.sampling.top_k = 8;
    req.sampling.seed = seed;
    req.max_new_tokens = 48;
    req.mtp = false;
    req.lookup = true;
    req.n_draft = 4;
    return g.run(req, {});
}

// The device's token choices against the host reference (choose_rows,
// verify_rows) on the very rows it holds, copied back: the same inputs, so only
// float rounding of the processed distributions can move a draw across a
// boundary (about one draw in a million); the bound allows a few.
void compare_choices(Runner& r, const std::string& tag, Backend& b, const Model& model,
                     const std::vector<int32_t>& prompt, const std::vector<int32_t>& steps) {
    const int64_t V = model.config().vocab_size, D = int64_t(steps.size()) - 1;
    ForwardOptions fo;
    fo.want_hidden = false;
    fo.all_logits = false;  // the prompt's rows are not compared, only the steps' below
    ForwardOutput o;
    b.clear();
    b.forward(prompt.data(), int64_t(prompt.size()), 0, fo, o);
    fo.all_logits = true;
    fo.argmax_n_valid = V - 3;  // the fused greedy argmax of the step, checked below
    b.forward(steps.data(), D + 1, int64_t(prompt.size()), fo, o);  // rows 0 .. D stay on the device
    int64_t fused_differ = o.argmax.size() == size_t(D + 1) ? 0 : D + 1;
    for (int64_t i = 0; i <= D && fused_differ == 0; ++i) {
        const float* row = o.logits.data() + i * V;
        fused_differ += o.argmax[size_t(i)] != int32_t(std::max_element(row, row + V - 3) - row);
    }
    r.check(tag + "fused greedy argmax of a verify batch == host", fused_differ == 0, double(fused_differ), 0,
            std::to_string(o.argmax.size()) + " ids for " + std::to_string(D + 1) + " rows");
    std::mt19937_64 rng(1234);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    struct Params {
        const char* name;
        float t, top_p, min_p, penalty;
        int32_t top_k;
    };
    const Params sets[] = {{"greedy", 0.0f, 1.0f, 0.0f, 1.0f, 0},    {"greedy, penalty 1.3", 0.0f, 1.0f, 0.0f, 1.3f, 0},
                           {"temperature 0.8", 0.8f, 1.0f, 0.0f, 1.0f, 0}, {"top-k 20", 1.0f, 1.0f, 0.0f, 1.0f, 20},
                           {"top-p 0.9", 0.7f, 0.9f, 0.0f, 1.0f, 0},     {"min-p 0.05", 1.0f, 1.0f, 0.05f, 1.0f, 0},
                           {"all + penalty", 1.1f, 0.8f, 0.02f, 1.2f, 50},
                           // Seen positive logits overflow and are held at the largest float.
                           {"penalty 1e-40", 0.9f, 1.0f, 0.0f, 1e-40f, 0}};
    int64_t draws = 0, differ = 0;
    std::string first;
    for (const Params& ps : sets) {
        ChoiceSpec spec;
        spec.params.temperature = ps.t;
        spec.params.top_p = ps.top_p;
        spec.params.min_p = ps.min_p;
        spec.params.repetition_penalty = ps.penalty;
        spec.params.top_k = ps.top_k;
        spec.n_valid = V - 3;  // the last ids lie past a tokenizer's vocabulary: never chosen
        spec.history = prompt;
        spec.tail = steps;
        spec.tail_first = 1;
        Sampler host(spec.params, V, spec.n_valid);
        for (int rep = 0; rep < (ps.t > 0 ? 40 : 1); ++rep) {
            std::vector<double> u(size_t(D + 1));
            for (double& x : u) x = unit(rng);
            std::vector<int32_t> got(size_t(D + 1)), want(size_t(D + 1));
            b.choose(0, D + 1, spec, u.data(), -1, got.data());
            choose_rows(host, o.logits.data(), V, D + 1, spec, u.data(), nullptr, want.data());
            for (int64_t i = 0; i <= D; ++i) {
                ++draws;
                if (got[size_t(i)] != want[size_t(i)]) {
                    ++differ;
                    if (first.empty())
                        first = std::string(ps.name) + " row " + std::to_string(i) + ": " +
                                std::to_string(got[size_t(i)]) + " vs " + std::to_string(want[size_t(i)]);
                }
            }
        }
    }
    r.check(tag + "device token choices == host (8 sampling settings)", differ <= std::max<int64_t>(1, draws / 500),
            double(differ), double(std::max<int64_t>(1, draws / 500)),
            std::to_string(differ) + " of " + std::to_string(draws) + " differ" + (first.empty() ? "" : "; " + first));

    // Speculative verification: drafts and their q from rows 0 .. D - 1 under one
    // setting, targets from rows 0 .. D under another.
    ChoiceSpec qs, ps;
    qs.params.temperature = 1.3f;
    qs.n_valid = ps.n_valid = V;
    qs.history = ps.history = prompt;
    qs.tail = ps.tail = steps;
    qs.tail_first = ps.tail_first = 1;
    ps.params.temperature = 0.7f;
    ps.params.top_p = 0.9f;
    ps.params.repetition_penalty = 1.2f;
    Sampler qh(qs.params, V, V), ph(ps.params, V, V);
    int64_t trials = 0, mismatched = 0, rejected = 0;
    std::string detail;
    for (int rep = 0; rep < 60; ++rep) {
        std::vector<double> u(size_t(D + 1));
        for (double& x : u) x = unit(rng);
        std::vector<int32_t> drafts(static_cast<size_t>(D)), host_drafts(static_cast<size_t>(D));
        std::vector<std::vector<float>> q(static_cast<size_t>(D));
        b.choose(0, D, qs, u.data(), 0, drafts.data());
        choose_rows(qh, o.logits.data(), V, D, qs, u.data(), q.data(), host_drafts.data());
        for (double& x : u) x = unit(rng);
        const VerifyResult got = b.verify(ps, drafts.data(), D, u.data());
        const VerifyResult want = verify_rows(ph, o.logits.data(), V, ps, q.data(), drafts.data(), D, u.data());
        ++trials;
        rejected += want.accepted < D;
        if (got.accepted != want.accepted || got.next != want.next) {
            ++mismatched;
            if (detail.empty())
                detail = "accepted " + std::to_string(got.accepted) + " next " + std::to_string(got.next) + " vs " +
                         std::to_string(want.accepted) + " / " + std::to_string(want.next);
        }
    }
    r.check(tag + "device speculative verify == host", mismatched <= 1, double(mismatched), 1,
            std::to_string(mismatched) + " of " + std::to_string(trials) + " differ, " + std::to_string(rejected) +
                " with a rejection" + (detail.empty() ? "" : "; " + detail));
}

// What the two backends stored in the first layer's cache rows for the prompt (a
// function of each token alone): fp32 rows within 1e-5 of the largest value; bf16
// rows hold bf16 values only (widened exactly), each equal to the CPU's or within
// one bf16 step of it (2^-7 of the larger magnitude: the two fp32 results straddle
// a rounding boundary) plus the fp32 bound (a value near zero may differ in sign),
// so a backend that kept fp32 values in a bf16 cache, or rounded them otherwise, fails.
// Rows 0 .. n - 1 of the first layer's cache, one after another.
std::vector<float> first_layer_rows(Backend& b, int64_t n) {
    std::vector<float> rows;
    for (int64_t pos = 0; pos < n; ++pos) {
        const auto row = b.cache_row(0, pos);
        rows.insert(rows.end(), row.begin(), row.end());
    }
    return rows;
}

// want: the CPU's first_layer_rows for the prompt.
void check_first_layer_rows(Runner& r, const std::string& tag, Backend& gpu, const std::vector<float>& want,
                            int64_t n) {
    const std::vector<float> got = first_layer_rows(gpu, n);
    if (gpu.kv_cache_type() == KvCacheType::F32) {
        r.close(tag + "first layer's cache rows", got, want, 1e-5, 0);
        return;
    }
    float scale = 0.0f;
    for (float w : want) scale = std::max(scale, std::fabs(w));
    int64_t not_bf16 = 0, one_step = 0, further = got.size() == want.size() ? 0 : int64_t(want.size());
    for (size_t i = 0; i < got.size() && got.size() == want.size(); ++i) {
        not_bf16 += bf16_to_f32(f32_to_bf16(got[i])) != got[i] ? 1 : 0;
        if (!within_bf16_step(got[i], want[i], scale)) ++further;
        else if (got[i] != want[i]) ++one_step;
    }
    r.check(tag + "first layer's cache rows: bf16 values, within a step of the CPU's", not_bf16 == 0 && further == 0,
            double(not_bf16 + further), 0,
            std::to_string(not_bf16) + " not bf16, " + std::to_string(one_step) + " within a step, " +
                std::to_string(further) + " further of " + std::to_string(want.size()));
}

// Both backends keep their latent cache in kv (a bf16 cache: each side rounds the
// rows it writes, so the same bounds hold; a row whose fp32 values straddle a
// rounding boundary on the two sides differs by one bf16 step in that element).
void compare_backends(const RandomModelOptions& ro, KvCacheType kv, const std::string& modes, bool int8,
                      std::vector<CheckResult>& out) {
    const std::string name = "cuda-vs-cpu " + ro.preset + (ro.n_layers ? " " + std::to_string(ro.n_layers) + "L" : "") +
                             (ro.intermediate_size ? " mlp" + std::to_string(ro.intermediate_size) : "") +
                             " " + ro.dtype +
                             (kv == KvCacheType::F32 ? "" : " kv-" + std::string(kv_cache_type_name(kv))) +
                             (int8 ? " int8" : "");
    Runner r(out, name);
    std::unique_ptr<Model> model;
    try {
        model = build_random_model(ro);
    } catch (const std::exception& e) {
        r.check("build random model", false, 0, 0, e.what());
        return;
    }
    // Int8 activations: both backends take them (the CPU's products read the marks as they
    // run, the CUDA backend's upload as it starts).
    model->use_int8_activations(int8);
    const ModelConfig& c = model->config();
    // Small models also run a prompt longer than the backends' 256-token chunks.
    const bool long_prompt = c.hidden_size <= 256;
    const int64_t V = c.vocab_size, H = c.hidden_size, cap = long_prompt ? 1216 : 96;
    std::mt19937_64 rng(ro.seed + 11);
    std::uniform_int_distribution<int32_t> dist(0, int32_t(V - 1));
    std::vector<int32_t> prompt(40), steps(8);  // 40 > 16: the fast mode's prefill takes the cuBLAS path
    for (auto& t : prompt) t = dist(rng);
    for (auto& t : steps) t = dist(rng);

    CpuBackend cpu(*model, cap, kv);
    const Pass ref = run_script(cpu, *model, prompt, steps, nullptr);
    const std::vector<float> cpu_rows = first_layer_rows(cpu, int64_t(prompt.size()));  // the prompt's
    // Whole generations and the prefix store's copies with a bf16 cache run on the
    // small model only: on V2-Lite's shapes they take the same kernels as its
    // fp32-cache run and the decode steps compared below (and about a quarter of
    // its time on the CUDA emulator).
    const bool whole_runs = kv == KvCacheType::F32 || long_prompt;
    const std::vector<int32_t> cpu_greedy = whole_runs ? greedy(*model, cpu, prompt, false) : std::vector<int32_t>{};

    // exact: fp32 products, the CPU's own pass within 1e-4 and the same expert choices.
    // fast: bf16 activations in the products of more than 16 tokens (and FP8 weights
    // expanded to bf16, which rounds their block scales in), each element rounded by
    // up to 2^-9 relative. That flips the odd near-tied expert choice, and one flipped
    // choice changes that token's output and, through attention, every later one: so
    // the reference is the CPU following the GPU's choices (follow_routing), and the
    // GPU's choices may differ from the CPU's own on those same states in at most 5% of
    // the slots. Measured on the emulator, whose bf16 products round their operands as
    // the GPU's do (TF32 operands rounded to nearest, no FMAs contracted), tiny, 40-
    // and 300-token prompts: logits within 1.7% of the largest (BF16) and 3.6% (FP8),
    // at most 0.8% and 1.9% of the choices differ; the bounds are 3% and 5%. The MTP
    // module follows the GPU's choices too (MtpOptions::follow_routing), so its logits
    // are held to the same bound on every row, and its own choices to twice the share
    // (check_routing below). (Before it followed, up to 5% of its rows had to be
    // allowed beyond the bound: 0 to 2 of tiny's 39 rows in FP8 on the emulator.)
    struct Mode {
        const char* name;
        const char* env;
        double tol, router_share;
        bool follow, follow_cache;
    };
    // A bf16 cache (the exact mode: below). In the fast mode the GPU's cached values
    // already differ from the CPU's by the activations' rounding, and rounding them
    // to bf16 adds up to 2^-9 more each, so the bounds are 1.5 times as wide
    // (measured on the emulator, tiny: 2.0% BF16, 4.9% FP8 of the largest logit).
    const bool bf16_cache = kv != KvCacheType::F32;
    // GGUF blocks (q4_k_m) are expanded to bf16 for the prefill products, each weight
    // rounded as FP8's are with their scales: FP8's bound (measured on the emulator,
    // tiny-gguf: 3.4% of the largest logit).
    const bool rounded_weights = ro.dtype == "fp8" || ro.dtype == "q4_k_m";
    const double fast_tol = (rounded_weights ? 5e-2 : 3e-2) * (bf16_cache ? 1.5 : 1.0);
    // With a bf16 cache the exact mode's CPU side follows the GPU's cached rows
    // (follow_cache): the two backends' fp32 sums differ in order (and on a GPU in
    // contracted FMAs), so the odd cached value straddles a rounding boundary and
    // is stored one bf16 step apart, and one such step in one value moved the tiny
    // model's 300-token logits by up to 2.4e-3 of the largest (BF16 weights; 99% of
    // 1000 random single steps within 1.2e-3, median 5.8e-5; FP8 weights: max 3.9e-3,
    // and 4% of the steps flipped an expert choice). Not followed, the bound had to
    // be 2e-3 and could still be crossed without a fault (measured 1.26e-3 against
    // the CPU built at -O1, 1.5e-4 at -O2, identical emulated kernels). Followed,
    // both sides read the same cached values, the fp32 bound (1e-4) holds (measured
    // on the emulator, tiny: 1.1e-6 to 3.1e-6), and every value the GPU stored is
    // held to the CPU's own: within one bf16 step, and at most 2% of them not the
    // CPU's value rounded to nearest even (measured 0.07% to 0.08%; rounding toward
    // zero instead gives 50%). The MTP module's layer follows the GPU's rows too
    // (both sides run it from the CPU's own main-model states), so its logits are
    // held to the same bound, on every row.
    const double exact_tol = 1e-4;
    // Int8 activations (tiny-gguf --int8-activations): both backends quantise the same
    // activations to the same codes and take the same integer sums, but a value whose
    // product with 127 / amax lies at a rounding boundary can take a neighbouring code on
    // the other side (the fp32 sums before it differ in order), a step of amax / 127, and
    // such steps grow through the random model's layers; and where the CPU's prefill takes
    // attention's expanded form (long prompts) it quantises the latent rows, where the
    // GPU's absorbed form quantises attention's output instead. So both modes follow the
    // GPU's expert choices (its own may differ from the CPU's on the same states in up to
    // 8 % of the slots) and are held to 15 % of the largest logit. Measured on the emulator
    // (tiny-gguf): exact mode 0.9 % (40-token prompt, no choice differing, greedy
    // generation the CPU's) to 9.8 % (300-token prompt, 4.0 % of the choices differing);
    // fast mode (whose prefill products are the bf16 ones, not int8) 4 % to 8.5 %, 4.0 %.
    const double int8_tol = 0.15, int8_router_share = 0.08;
    // Its expert choices are held to the CPU's as with an fp32 cache: none may
    // differ. (Before the cache was followed, the straddles flipped 1 of 3600 of
    // tiny FP8's choices on the emulator, so the choices were followed too; since,
    // none in either weight type. The decode attention's tensor-core products take
    // the queries and probabilities in three bf16 parts in exact mode, below fp32's
    // own rounding.)
    const double exact_share = int8 ? int8_router_share : 0.0, fast_share = int8 ? int8_router_share : 0.05;
    for (const Mode m : {Mode{"exact", "1", int8 ? int8_tol : exact_tol, exact_share, int8, bf16_cache},
                         Mode{"fast", "0", int8 ? int8_tol : fast_tol, fast_share, true, false}}) {
        if (modes != "both" && modes != m.name) continue;
        const std::string tag = std::string(m.name) + ": ";
        try {
            std::unique_ptr<Backend> gpu = compared_backend(*model, cap, kv, m.env, {});
            // The CPU's pass to compare a GPU pass with. The GPU ran the MTP module from
            // own's main-model states (own: the CPU's own pass), so the CPU's does too:
            // not following the cache, its MTP logits are own's. With follow_cache, call
            // it right after the GPU's pass, whose rows are still in its cache.
            auto reference = [&](const std::string& what, const std::vector<int32_t>& p,
                                 const std::vector<int32_t>& s, const Pass& own, const Pass& on_gpu) -> Pass {
                if (!m.follow && !m.follow_cache) return own;
                if (!m.follow_cache) return run_script(cpu, *model, p, s, &own.prefill.hidden, &on_gpu);
                const int64_t n_mtp = model->n_mtp() > 0 ? int64_t(p.size()) - 1 : 0;
                CacheFollow f = cache_to_follow(*gpu, c, int64_t(p.size() + s.size()), n_mtp);
                Pass w = run_script(cpu, *model, p, s, &own.prefill.hidden, m.follow ? &on_gpu : nullptr, &f);
                check_followed_rows(r, tag + what, f);
                return w;
            };
            Pass got = run_script(*gpu, *model, prompt, steps, &ref.prefill.hidden);
            // (Before anything else overwrites the rows; the fast mode's products round
            // the activations, so only the exact mode's rows can be held to this.)
            if (std::string(m.name) == "exact") check_first_layer_rows(r, tag, *gpu, cpu_rows, int64_t(prompt.size()));
            const Pass want = reference("", prompt, steps, ref, got);
            r.close(tag + "prefill logits", got.prefill.logits, want.prefill.logits, m.tol, V);
            r.close(tag + "prefill final hidden", got.prefill.hidden, want.prefill.hidden, m.tol, H);
            r.close(tag + "decode logits (8 steps)", got.decode, want.decode, m.tol, V);
            if (model->n_mtp() > 0) r.close(tag + "MTP logits", got.mtp, want.mtp, m.tol, V);
            // The GPU's expert choices against the CPU's own (on the same states when it follows).
            // The MTP module's choices (one layer, 156 of them for the 40-token prompt) may
            // differ twice as often in the fast mode: measured on the emulator up to 3.8%
            // (6 of 156, tiny FP8), where the main layers' 480 differed in at most 1.9%.
            auto check_routing = [&](const std::string& what, const RoutingRecord& g, const RoutingRecord& w,
                                     double bound_scale = 1.0) {
                if (w.ids.empty()) return;
                int64_t differ = g.ids.size() == w.ids.size() ? 0 : int64_t(w.ids.size());
                for (size_t i = 0; i < w.ids.size() && g.ids.size() == w.ids.size(); ++i) differ += g.ids[i] != w.ids[i];
                const double share = double(differ) / double(w.ids.size()), bound = m.router_share * bound_scale;
                r.check(tag + what + "router expert ids", share <= bound, share, bound,
                        std::to_string(differ) + " of " + std::to_string(w.ids.size()) + " choices differ");
                if (differ == 0) r.close(tag + what + "router gate weights", g.weights, w.weights, m.tol, 0);
            };
            check_routing("", got.prefill.routing, want.prefill.routing);
            if (model->n_mtp() > 0) check_routing("MTP module's ", got.mtp_routing, want.mtp_routing, 2.0);
            if (long_prompt) {
                // 300 tokens: two chunks on the GPU (256 + 44), positions past the first chunk.
                std::vector<int32_t> lp(300), ls(4);
                for (auto& t : lp) t = dist(rng);
                for (auto& t : ls) t = dist(rng);
                const Pass lr = run_script(cpu, *model, lp, ls, nullptr);
                const Pass lg = run_script(*gpu, *model, lp, ls, &lr.prefill.hidden);
                const Pass lw = reference("300-token prompt ", lp, ls, lr, lg);
                r.close(tag + "300-token prompt logits", lg.prefill.logits, lw.prefill.logits, m.tol, V);
                check_routing("300-token prompt ", lg.prefill.routing, lw.prefill.routing);
                r.close(tag + "300-token prompt, then decode", lg.decode, lw.decode, m.tol, V);
                if (model->n_mtp() > 0) {
                    r.close(tag + "300-token prompt MTP logits", lg.mtp, lw.mtp, m.tol, V);
                    check_routing("300-token prompt MTP module's ", lg.mtp_routing, lw.mtp_routing, 2.0);
                }
                // The generator's prefill: the last row's logits only, so the GPU takes
                // the whole prompt in one pass of up to 1024 tokens (prefill_chunk()).
                ForwardOptions last;
                last.all_logits = false;
                last.want_hidden = true;
                last.want_routing = m.follow;
                ForwardOutput one;
                gpu->clear();
                gpu->forward(lp.data(), int64_t(lp.size()), 0, last, one);
                ForwardOutput one_ref;
                if (m.follow || m.follow_cache) {
                    ForwardOptions f = last;
                    if (m.follow) f.follow_routing = one.routing.ids.data();
                    CacheFollow rows;
                    if (m.follow_cache) {
                        rows = cache_to_follow(*gpu, c, int64_t(lp.size()));
                        f.follow_cache = &rows;
                    }
                    cpu.clear();
                    cpu.forward(lp.data(), int64_t(lp.size()), 0, f, one_ref);
                    if (m.follow_cache) check_followed_rows(r, tag + "300-token prompt as one pass: ", rows);
                } else {
                    one_ref.logits.assign(lr.prefill.logits.end() - V, lr.prefill.logits.end());
                    one_ref.hidden = lr.prefill.hidden;
                }
                r.close(tag + "300-token prompt as one pass (" + std::to_string(gpu->prefill_chunk()) +
                            "-token passes): last logits",
                        one.logits, one_ref.logits, m.tol, V);
                r.close(tag + "300-token prompt as one pass: final hidden", one.hidden, one_ref.hidden, m.tol, H);
                if (std::string(m.name) == "fast") {
                    // Prefill attention's score batch cut to about one row of the cache: one head
                    // and a few queries per batch, positions past the first pass (the other runs
                    // hold all heads).
                    auto blocked = compared_backend(*model, cap, kv, m.env, {{"CETUS_CUDA_ATTENTION_BATCH", "1000"}});
                    const Pass lb = run_script(*blocked, *model, lp, ls, &lr.prefill.hidden);
                    blocked.reset();
                    r.close(tag + "300-token prompt, attention in blocks of a few queries", lb.prefill.logits,
                            reference("", lp, ls, lr, lb).prefill.logits, m.tol, V);
                    // Prefill attention in the absorbed form throughout (the default takes
                    // the cheaper form per chunk: for the tiny model the expanded one but for
                    // the second chunk with an fp32 cache). Not for FP8 weights with a bf16
                    // cache, whose chaos puts it within a hair of this bound (7.49 % of the
                    // largest logit against 7.5 % on the emulator; the expanded form 6.3 %);
                    // prefill_check.cpp holds the form itself to its own bound.
                    if (!bf16_cache || ro.dtype != "fp8") {
                        auto absorbed =
                            compared_backend(*model, cap, kv, m.env, {{"CETUS_CUDA_PREFILL_FORM", "absorbed"}});
                        const Pass la = run_script(*absorbed, *model, lp, ls, &lr.prefill.hidden);
                        absorbed.reset();
                        r.close(tag + "300-token prompt, prefill attention in the absorbed form", la.prefill.logits,
                                reference("", lp, ls, lr, la).prefill.logits, m.tol, V);
                    }
                    // 1200 cached rows: a decode step's attention in 38 splits of a tile each
                    // (more than the 32 of a small GPU's plan), all merged. (Past the tiny
                    // model's 512 positions: its random weights mean nothing there either.)
                    std::vector<int32_t> xp(1200), xs(3);
                    for (auto& t : xp) t = dist(rng);
                    for (auto& t : xs) t = dist(rng);
                    const Pass xr = run_script(cpu, *model, xp, xs, nullptr);
                    const Pass xg = run_script(*gpu, *model, xp, xs, &xr.prefill.hidden);
                    r.close(tag + "1200-token prompt, then decode", xg.decode, reference("", xp, xs, xr, xg).decode, m.tol,
                            V);
                }
            }
            if (std::string(m.name) == "fast" && whole_runs && model->n_mtp() > 0) {
                // The fast mode's tokens are not the CPU's, but MTP must not change them: a
                // verify batch (3 tokens: 2 drafts) gives each token the bits of a decode step.
                const auto g_off = greedy(*model, *gpu, prompt, false), g_on = greedy(*model, *gpu, prompt, true);
                r.check(tag + "greedy MTP on == off", g_on == g_off, 0, 0,
                        std::to_string(g_on.size()) + " vs " + std::to_string(g_off.size()) + " tokens");
            }
            if (std::string(m.name) == "fast" && whole_runs && long_prompt) {
                // Drafts looked up in the context (verify batches of up to 5 tokens that no MTP
                // module made, any model): the same tokens. The prompt and its first half again,
                // so that the context repeats. (Small models only: the path does not depend on
                // the shapes, and V2-Lite's layers take minutes on the CUDA emulator.)
                std::vector<int32_t> twice = prompt;
                twice.insert(twice.end(), prompt.begin(), prompt.begin() + int64_t(prompt.size()) / 2);
                const auto l_off = greedy(*model, *gpu, twice, false), l_on = greedy(*model, *gpu, twice, false, true);
                r.check(tag + "greedy looked-up drafts on == off", l_on == l_off, 0, 0,
                        std::to_string(l_on.size()) + " vs " + std::to_string(l_off.size()) + " tokens");
            }
            if (std::string(m.name) == "exact") {
                // Decode steps replay CUDA graphs (step 1 runs directly, step 2 is
                // captured, 3-8 replay): the same bits as launching kernel by kernel.
                // Only the steps are compared, so the prompt's pass leaves out all rows'
                // logits but the last (on V2-Lite's 102400-token head, most of its time).
                auto direct = compared_backend(*model, cap, kv, m.env, {{"CETUS_CUDA_GRAPHS", "0"}});
                const Pass d = run_script(*direct, *model, prompt, steps, &ref.prefill.hidden, nullptr, nullptr, false);
                direct.reset();
                r.check(tag + "CUDA graphs == direct launches (bit for bit)", d.decode == got.decode && d.mtp == got.mtp,
                        0, 0, d.decode != got.decode ? "decode logits differ" : d.mtp != got.mtp ? "MTP logits differ" : "");
                if (long_prompt) {
                    // The model as Engine::create_random builds it for a GPU: recipes only,
                    // drawn on the device (random_draws.h). The same bytes as the host's, so
                    // the same logits, bit for bit. (The small models only: V2-Lite's layers
                    // draw with the same kernels, and take minutes on the emulator. A CPU
                    // standing in for the GPU gets the host's bytes.)
                    std::unique_ptr<Model> drawn_model = build_random_model(ro, !cpu_stands_in());
                    drawn_model->use_int8_activations(int8);
                    auto drawn = compared_backend(*drawn_model, cap, kv, m.env, {});
                    const Pass dp = run_script(*drawn, *drawn_model, prompt, steps, &ref.prefill.hidden);
                    drawn.reset();
                    const bool same_prefill = dp.prefill.logits == got.prefill.logits;
                    r.check(tag + "weights drawn on the device == built on the host (logits bit for bit)",
                            same_prefill && dp.decode == got.decode && dp.mtp == got.mtp, 0, 0,
                            !same_prefill ? "prefill logits differ" : dp.decode != got.decode ? "decode logits differ"
                            : dp.mtp != got.mtp ? "MTP logits differ" : "");
                }
                if (whole_runs) {
                    const auto g_off = greedy(*model, *gpu, prompt, false);
                    // (Not with int8 activations: a logit 1 % from the CPU's may take another
                    // token where two are that close; the emulator's tiny run gave the CPU's 24.)
                    if (!int8)
                        r.check(tag + "greedy generation == CPU", g_off == cpu_greedy, 0, 0,
                                std::to_string(g_off.size()) + " vs " + std::to_string(cpu_greedy.size()) + " tokens");
                    if (model->n_mtp() > 0) {
                        const auto g_on = greedy(*model, *gpu, prompt, true);
                        r.check(tag + "greedy MTP on == off", g_on == g_off, 0, 0, "");
                    }
                    // The prefix store's copies (save_rows, load_rows): a prompt's rows saved,
                    // overwritten by another prompt and loaded back are the same bytes, and the
                    // next step from them gives the same logits, bit for bit.
                    const int64_t n = int64_t(prompt.size());
                    std::vector<int32_t> other(prompt.size());
                    for (auto& t : other) t = dist(rng);
                    ForwardOptions fo;
                    fo.all_logits = false;  // the prompts' rows of logits are not compared
                    ForwardOutput o;
                    gpu->clear();
                    gpu->forward(prompt.data(), n, 0, fo, o);
                    std::vector<uint8_t> saved(size_t(n) * gpu->kv_bytes_per_token()), again(saved.size());
                    gpu->save_rows(n, saved.data());
                    gpu->forward(&steps[0], 1, n, fo, o);
                    const std::vector<float> before = o.logits;
                    gpu->clear();
                    gpu->forward(other.data(), n, 0, fo, o);
                    gpu->load_rows(n, saved.data());
                    gpu->save_rows(n, again.data());
                    gpu->forward(&steps[0], 1, n, fo, o);
                    r.check(tag + "cache rows saved and loaded back (prefix store) == as held, next step bit for bit",
                            again == saved && o.logits == before && gpu->n_tokens() == n + 1, 0, 0,
                            again != saved ? "loaded rows differ" : o.logits != before ? "next step's logits differ" : "");
                }
                // Token choices read the logits only, never the cache: the fp32-cache run
                // of the same shapes covers them, so a bf16-cache run (most of whose time
                // they took on the CUDA emulator) leaves them out.
                if (!bf16_cache) {
                    if (gpu->samples_on_device()) {
                        std::vector<int32_t> batch(5);
                        for (auto& t : batch) t = dist(rng);
                        compare_choices(r, tag, *gpu, *model, prompt, batch);
                        // Whole sampled generations take the same path whatever the weights'
                        // type (only the logits differ): BF16 weights only, which halves the
                        // tiny comparison's time on the CUDA emulator.
                        if (model->n_mtp() > 0 && ro.dtype == "bf16") {
                            // Sampled generation with drafts, choices on the device vs on the host.
                            auto host_choices =
                                compared_backend(*model, cap, kv, m.env, {{"CETUS_CUDA_SAMPLING", "host"}});
                            int same = 0;
                            for (uint64_t seed : {1u, 2u, 3u})
                                same += sampled(*model, *gpu, prompt, seed) ==
                                        sampled(*model, *host_choices, prompt, seed);
                            r.check(tag + "sampled generation with MTP, device == host choices (3 seeds)", same == 3,
                                    3 - same, 0, std::to_string(same) + " of 3 identical");
                            // Drafts looked up in the context: their q set in the device's slots
                            // (certain_draft) against the host's. A prompt that repeats itself.
                            // On small models only, as below.
                            if (long_prompt) {
                                std::vector<int32_t> twice = prompt;
                                twice.insert(twice.end(), prompt.begin(), prompt.end());
                                int same_lookup = 0;
                                int64_t proposed = 0, accepted = 0;
                                for (uint64_t seed : {1u, 2u, 3u}) {
                                    const GenerateResult on_device = sampled_lookup(*model, *gpu, twice, seed);
                                    same_lookup += on_device.ids == sampled_lookup(*model, *host_choices, twice, seed).ids;
                                    proposed += on_device.stats.drafts_proposed;
                                    accepted += on_device.stats.drafts_accepted;
                                }
                                r.check(tag + "sampled generation with looked-up drafts, device == host choices (3 seeds)",
                                        same_lookup == 3 && proposed > 0, 3 - same_lookup, 0,
                                        std::to_string(same_lookup) + " of 3 identical, " + std::to_string(accepted) +
                                            " of " + std::to_string(proposed) + " drafts accepted");
                            }
                            // Frequency and presence penalties (and JSON mode, the same path): the
                            // generator chooses on the host on either backend, from the same logits.
                            // On small models only: the path does not depend on the shapes.
                            if (long_prompt) {
                                same = 0;
                                for (uint64_t seed : {1u, 2u})
                                    same += sampled(*model, *gpu, prompt, seed, nullptr, true) ==
                                            sampled(*model, *host_choices, prompt, seed, nullptr, true);
                                r.check(tag + "sampled generation with count penalties (host choices on a device "
                                              "that samples) == host choices (2 seeds)",
                                        same == 2, 2 - same, 0, std::to_string(same) + " of 2 identical");
                            }
                            // Log-probabilities asked for: the step's logits also come to the
                            // host, the device's choices stay the same, and the figures are
                            // those of the host-choices run (the same logits, copied).
                            std::vector<float> lp_device, lp_host;
                            const bool ids_same = sampled(*model, *gpu, prompt, 1, &lp_device) == sampled(*model, *gpu, prompt, 1);
                            sampled(*model, *host_choices, prompt, 1, &lp_host);
                            double worst = lp_device.size() == lp_host.size() && !lp_device.empty() ? 0.0 : 1e30;
                            for (size_t i = 0; i < lp_device.size() && i < lp_host.size(); ++i)
                                worst = std::max(worst, std::abs(double(lp_device[i]) - double(lp_host[i])));
                            r.check(tag + "sampled generation with log-probabilities == without, figures == host choices'",
                                    ids_same && worst <= 1e-5, worst, 1e-5,
                                    std::string(ids_same ? "" : "the tokens changed; ") + std::to_string(lp_device.size()) +
                                        " figures against " + std::to_string(lp_host.size()));
                        }
                    } else if (!host_sampling_asked()) {
                        // Not asked for (CETUS_CUDA_SAMPLING=host, the GPU check's bisect switch): nothing to compare.
                        r.check(tag + "token choices on the device", false, 0, 0,
                                "the backend does not sample on the device");
                    }
                }
            }
        } catch (const std::exception& e) {
            r.check(tag + "run", false, 0, 0, e.what());
        }
    }
}

}  // namespace

std::vector<CheckResult> run_selftest(const SelftestOptions& o) {
    std::vector<CheckResult> out;
    const bool cuda = o.device == Device::Cuda;
    // With the CPU standing in for the GPU only the comparison harness runs: the
    // fixtures need the real device.
    if (!(cuda && (cpu_stands_in() || o.compare_only))) {
        std::vector<std::filesystem::path> cases;
        std::error_code ec;
        for (const auto& e : std::filesystem::directory_iterator(o.fixtures_dir, ec))
            if (e.is_directory() && std::filesystem::exists(e.path() / "golden.safetensors"))
                if (o.only.empty() || e.path().filename() == o.only) cases.push_back(e.path());
        std::sort(cases.begin(), cases.end());
        if (cases.empty())
            out.push_back({"", "fixtures", false, 0, 0, "no fixture cases in " + o.fixtures_dir.string()});
        if (cuda) {
            const CudaProbe probe = probe_cuda();
            if (!probe.usable) {
                out.push_back({"", "cuda device", false, 0, 0, probe.text});
                return out;
            }
        }
        // The CUDA backend runs the fixtures in its exact mode, under the CPU's bounds.
        std::optional<EnvGuard> exact;
        if (cuda) exact.emplace("CETUS_CUDA_EXACT", "1");
        for (const auto& dir : cases) run_case(dir, o.device, out);
    }
    if (cuda && o.compare_only && !cpu_stands_in()) {
        const CudaProbe probe = probe_cuda();
        if (!probe.usable) {
            out.push_back({"", "cuda device", false, 0, 0, probe.text});
            return out;
        }
    }
    if (o.device == Device::Cuda && o.compare != "none" && o.only.empty()) {
        const RandomModelOptions medium{"medium-cpu", "bf16", 0, 3}, v2_lite{"v2-lite", "bf16", 2, 4},
            v3_layer{"v3-layers", "fp8", 1, 5};
        std::vector<RandomModelOptions> shapes;
        // (the first layer's MLP twice the preset's width, so that its down projection is
        // Q6_K rows of two blocks, which the upload rearranges: kernels.h, ggml_device_row)
        const RandomModelOptions tiny_gguf{"tiny", "q4_k_m", 0, 7, 512};
        if (o.compare == "medium-cpu") shapes = {medium};
        else if (o.compare == "tiny-gguf") shapes = {tiny_gguf};
        else if (o.compare == "v2-lite") shapes = {v2_lite};
        else if (o.compare == "v3-layer") shapes = {v3_layer};
        else shapes = {{"tiny", "bf16", 0, 1}, {"tiny", "fp8", 0, 2}};
        if (o.compare == "small" || o.compare == "full")
            shapes.insert(shapes.end(), {tiny_gguf, medium, v2_lite, v3_layer});
        if (o.compare == "full") shapes.push_back({"v3-layers", "fp8", 4, 6});
        if (o.modes != "both" && o.modes != "exact" && o.modes != "fast") {
            out.push_back({"", "comparison modes", false, 0, 0, "unknown modes '" + o.modes + "' (exact, fast or both)"});
            return out;
        }
        for (const auto& s : shapes) compare_backends(s, o.kv_cache, o.modes, o.int8_activations, out);
    }
    return out;
}

}  // namespace cetus
