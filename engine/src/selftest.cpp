// Conformance checks over tests/data/golden/<case>/ (model files + golden.safetensors
// written by tests/golden/make_fixtures.py). Tolerances: logits within 1e-4 of the
// largest |logit| (relative), identical argmax, identical router choices. BF16 and
// FP8 cases keep the same bound because their reference ran in fp32 on exactly the
// dequantised weights the file holds: only summation order differs.
#include "cetus/selftest.h"

#include "json_util.h"
#include "kv_cache.h"
#include "model.h"
#include "safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

namespace cetus {
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
        m_out.push_back({m_fixture, name, ok, err, tol, detail});
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

private:
    std::vector<CheckResult>& m_out;
    std::string m_fixture;
};

void run_case(const std::filesystem::path& dir, Device device, std::vector<CheckResult>& out) {
    const std::string name = dir.filename().string();
    Runner r(out, name);
    double tol = 1e-4;
    std::filesystem::path model_dir = dir;  // a manifest may point at a model kept elsewhere
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
        EngineOptions o;
        o.model_dir = model_dir;
        o.device = device;
        o.max_context = 512;
        engine = Engine::load(o);
    } catch (const std::exception& e) {
        r.check("load", false, 0, 0, e.what());
        return;
    }
    Model& model = engine->model();
    KvCache& cache = engine->cache();
    const ModelConfig& c = model.config();
    const int64_t V = c.vocab_size, H = c.hidden_size;

    for (int k = 0;; ++k) {
        const std::string p = "prompt." + std::to_string(k) + ".";
        if (!g.has(p + "ids")) break;
        try {
            const auto ids = g.i32(p + "ids");
            const int64_t T = int64_t(ids.size());
            const std::string tag = "prompt " + std::to_string(k) + " (" + std::to_string(T) + " tokens) ";

            ForwardOptions fo;
            fo.want_hidden = true;
            fo.want_routing = true;
            ForwardOutput prefill;
            cache.clear();
            model.forward(ids.data(), T, 0, cache, fo, prefill);
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
            const int64_t K = c.num_experts_per_tok, n_moe = c.n_moe_layers();
            int64_t moe_index = 0, id_mismatch = 0;
            std::vector<float> got_w, want_w;
            for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
                if (!c.is_moe_layer(l)) continue;
                const std::string rn = p + "router." + std::to_string(l);
                if (g.has(rn)) {
                    auto want = g.i32(rn);
                    auto ww = g.f32(p + "router_weights." + std::to_string(l));
                    for (int64_t t = 0; t < T; ++t)
                        for (int64_t j = 0; j < K; ++j) {
                            size_t gi = size_t((t * n_moe + moe_index) * K + j);
                            if (prefill.routing.ids[gi] != want[size_t(t * K + j)]) ++id_mismatch;
                            got_w.push_back(prefill.routing.weights[gi]);
                            want_w.push_back(ww[size_t(t * K + j)]);
                        }
                }
                ++moe_index;
            }
            if (!want_w.empty()) {
                r.check(tag + "router expert ids", id_mismatch == 0, double(id_mismatch), 0,
                        id_mismatch ? std::to_string(id_mismatch) + " choices differ" : "");
                r.close(tag + "router gate weights", got_w, want_w, tol, 0);
            }

            // Absorbed and naive attention agree (forced both ways on the whole prompt).
            ForwardOptions naive, absorbed;
            naive.absorb_max_tokens = 0;
            absorbed.absorb_max_tokens = 1 << 30;
            ForwardOutput on, oa;
            cache.clear();
            model.forward(ids.data(), T, 0, cache, naive, on);
            cache.clear();
            model.forward(ids.data(), T, 0, cache, absorbed, oa);
            r.close(tag + "absorbed vs naive attention", oa.logits, on.logits, tol, V);

            // Token by token through the cache equals the one-shot prefill.
            std::vector<float> stepwise;
            cache.clear();
            ForwardOutput step;
            for (int64_t t = 0; t < T; ++t) {
                model.forward(&ids[size_t(t)], 1, t, cache, ForwardOptions{}, step);
                stepwise.insert(stepwise.end(), step.logits.begin(), step.logits.end());
            }
            r.close(tag + "decode through cache vs prefill", stepwise, prefill.logits, tol, V);

            if (g.has(p + "mtp_logits") && model.n_mtp() > 0 && T > 1) {
                std::vector<float> mtp;
                cache.n_mtp_tokens = 0;
                model.mtp_forward(0, prefill.hidden.data(), ids.data() + 1, T - 1, 0, cache, mtp, nullptr);
                r.close(tag + "MTP logits", mtp, g.f32(p + "mtp_logits"), tol, V);
            }

            if (g.has(p + "greedy")) {
                const auto want = g.i32(p + "greedy");
                cache.clear();
                ForwardOptions last;
                last.all_logits = false;
                ForwardOutput o;
                model.forward(ids.data(), T, 0, cache, last, o);
                std::vector<int32_t> got;
                for (size_t i = 0; i < want.size() && T + int64_t(i) < cache.capacity(); ++i) {
                    int32_t next = int32_t(argmax_row(o.logits.data(), V));
                    got.push_back(next);
                    model.forward(&next, 1, T + int64_t(i), cache, last, o);
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
}

}  // namespace

std::vector<CheckResult> run_selftest(const SelftestOptions& o) {
    std::vector<CheckResult> out;
    std::vector<std::filesystem::path> cases;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(o.fixtures_dir, ec))
        if (e.is_directory() && std::filesystem::exists(e.path() / "golden.safetensors"))
            if (o.only.empty() || e.path().filename() == o.only) cases.push_back(e.path());
    std::sort(cases.begin(), cases.end());
    if (cases.empty())
        out.push_back({"", "fixtures", false, 0, 0, "no fixture cases in " + o.fixtures_dir.string()});
    for (const auto& dir : cases) run_case(dir, o.device, out);
    return out;
}

}  // namespace cetus
