// cetus-cli tokenize / detokenize: ids of a text under a model folder's tokenizer (no BOS,
// no template) and the text of ids. Also the tokenizer benchmark, run_tokenizer_bench(),
// which `cetus-cli bench --tokenizer` (cmd_bench.cpp) calls. DIR may hold only the
// tokenizer files (tokenizer.json, optionally tokenizer_config.json).
#include "cli_util.h"
#include "commands.h"

#include "cetus/error.h"
#include "cetus/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

namespace cetus::cli {

namespace {

std::string read_text_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(ErrorCode::Io, "cannot open " + path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw Error(ErrorCode::Io, "cannot read " + path);
    return text;
}

void write_stdout(const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
}

} // namespace

void add_tokenize_commands(CLI::App& app) {
    struct TokenizeOpts {
        std::string model, text, text_file;
        bool json = false, plain = false;
    };
    auto t = std::make_shared<TokenizeOpts>();
    auto* tok =
        app.add_subcommand("tokenize", "Print the token ids of a text (no BOS, no chat template)");
    tok->add_option("--model", t->model, "Model folder (tokenizer.json is enough)")->required();
    auto* text_opt = tok->add_option("--text", t->text, "Text to tokenize");
    auto* file_opt = tok->add_option("--text-file", t->text_file, "File whose bytes are tokenized");
    text_opt->excludes(file_opt);
    tok->add_flag("--json", t->json, "Print {\"ids\": [...], \"pieces\": [...]}");
    tok->add_flag("--plain", t->plain, "Treat special and added token strings as plain text");
    tok->callback([t, text_opt, file_opt] {
        if (text_opt->count() == 0 && file_opt->count() == 0) {
            throw Error(ErrorCode::BadRequest, "tokenize needs --text or --text-file");
        }
        const Tokenizer tokenizer = Tokenizer::load(t->model);
        const std::string text = file_opt->count() ? read_text_file(t->text_file) : t->text;
        const std::vector<int32_t> ids = tokenizer.encode(text, !t->plain);
        if (t->json) {
            nlohmann::json pieces = nlohmann::json::array();
            for (const int32_t id : ids) pieces.push_back(std::string(tokenizer.token_piece(id)));
            write_stdout(nlohmann::json{{"ids", ids}, {"pieces", pieces}}.dump() + "\n");
            return;
        }
        std::string line;
        for (size_t i = 0; i < ids.size(); ++i) line += (i ? "," : "") + std::to_string(ids[i]);
        write_stdout(line + "\n");
    });

    struct DetokenizeOpts {
        std::string model, ids;
        bool json = false;
    };
    auto d = std::make_shared<DetokenizeOpts>();
    auto* detok = app.add_subcommand("detokenize", "Print the text of token ids");
    detok->add_option("--model", d->model, "Model folder (tokenizer.json is enough)")->required();
    detok->add_option("--ids", d->ids, "Comma-separated token ids, e.g. 1,2,3")->required();
    detok->add_flag("--json", d->json, "Print {\"text\": ...}");
    detok->callback([d] {
        const Tokenizer tokenizer = Tokenizer::load(d->model);
        const std::string text = tokenizer.decode(parse_ids(d->ids));
        write_stdout(d->json ? nlohmann::json{{"text", text}}.dump() + "\n" : text + "\n");
    });
}

int run_tokenizer_bench(const std::string& model_dir, const std::string& text_file, bool json) {
    using clock = std::chrono::steady_clock;
    auto ms_since = [](clock::time_point t0) {
        return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    };
    if (model_dir.empty() || text_file.empty()) {
        throw Error(ErrorCode::BadRequest, "bench --tokenizer needs --model DIR and --text-file F");
    }
    auto t0 = clock::now();
    const Tokenizer tokenizer = Tokenizer::load(model_dir);
    const double load_ms = ms_since(t0);
    const std::string text = read_text_file(text_file);
    if (text.empty()) throw Error(ErrorCode::BadRequest, text_file + " is empty");

    // One discarded warm-up, then the median of the measured runs (style guide, section 10).
    constexpr int k_repeats = 5;
    size_t n_tokens = tokenizer.encode(text, true).size();
    std::vector<double> runs_ms;
    for (int i = 0; i < k_repeats; ++i) {
        t0 = clock::now();
        n_tokens = tokenizer.encode(text, true).size();
        runs_ms.push_back(ms_since(t0));
    }
    std::sort(runs_ms.begin(), runs_ms.end());
    const double median_ms = runs_ms[runs_ms.size() / 2];
    const double mb_per_s = static_cast<double>(text.size()) / 1e6 / (median_ms / 1e3);
    const double tokens_per_s = static_cast<double>(n_tokens) / (median_ms / 1e3);

    if (json) {
        const nlohmann::json j = {{"benchmark", "tokenizer"},
                                  {"implementation", "cetus"},
                                  {"model", model_dir},
                                  {"text_file", text_file},
                                  {"bytes", text.size()},
                                  {"tokens", n_tokens},
                                  {"threads", 1},
                                  {"repeats", k_repeats},
                                  {"load_ms", load_ms},
                                  {"encode_ms_median", median_ms},
                                  {"mb_per_s", mb_per_s},
                                  {"tokens_per_s", tokens_per_s}};
        write_stdout(j.dump(2) + "\n");
    } else {
        std::printf(
            "tokenizer load: %.1f ms\nencode: %zu bytes -> %zu tokens, median %.1f ms of %d runs\n"
            "throughput: %.2f MB/s (1 MB = 10^6 bytes), %.0f tokens/s, one thread\n",
            load_ms, text.size(), n_tokens, median_ms, k_repeats, mb_per_s, tokens_per_s);
    }
    return 0;
}

} // namespace cetus::cli
