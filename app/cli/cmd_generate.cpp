// cetus-cli generate: one chat turn rendered with the model's template, the
// answer streamed to stdout (logs on stderr); --json prints one object per
// token and a summary line.
#include "cli_util.h"
#include "commands.h"

#include <nlohmann/json.hpp>

#ifdef CETUS_HAVE_STORAGE
#include <cetus/storage/attachments.h>
#endif

#include <cstdio>

namespace cetus::cli {

// The summary line: the answer and how it ended, then the statistics (n_tokens
// repeats generated_tokens under the name the summary has always used).
nlohmann::json summary_json(const GenerateResult& r) {
    nlohmann::json j = {{"text", r.text},
                        {"finish_reason", finish_reason_name(r.finish)},
                        {"n_tokens", r.stats.generated_tokens},
                        {"mtp", r.mtp_used},
                        {"lookup", r.lookup_used}};
    j.update(stats_json(r.stats));
    return j;
}

void add_generate_command(CLI::App& app) {
    auto* cmd = app.add_subcommand("generate", "Answer one prompt with the model's chat template, streaming");
    struct Opts {
        LoadFlags load;
        std::string model, prompt, system, device = "auto", mtp = "on", ids, format = "text";
        float temperature = 0.7f, top_p = 1.0f, min_p = 0.0f, repetition_penalty = 1.0f;
        float frequency_penalty = 0.0f, presence_penalty = 0.0f;
        int top_k = 0, max_tokens = 256, draft = 0, threads = 0, logprobs = -1;
        int64_t context = 4096;
        uint64_t seed = 0;
        std::vector<std::string> stop, attach;
        bool json = false, lookup = false;
    };
    auto o = std::make_shared<Opts>();
    cmd->add_option("--model", o->model, "Model folder or .gguf file (default: the bundled model)");
    auto* prompt = cmd->add_option("--prompt", o->prompt, "User message");
    cmd->add_option("--ids", o->ids, "Raw prompt token ids instead of a chat prompt (no template)")->excludes(prompt);
    cmd->add_option("--system", o->system, "System prompt");
#ifdef CETUS_HAVE_STORAGE
    cmd->add_option("--attach", o->attach,
                    "Attach a UTF-8 text file to the message, as the app does (repeatable; up to 1 MiB each)");
#endif
    cmd->add_option("--temperature", o->temperature, "0 = greedy");
    cmd->add_option("--top-p", o->top_p, "Nucleus sampling threshold");
    cmd->add_option("--top-k", o->top_k, "Keep the k most likely tokens (0 = off)");
    cmd->add_option("--min-p", o->min_p, "Drop tokens below min-p times the best (0 = off)");
    cmd->add_option("--repeat-penalty", o->repetition_penalty, "Repetition penalty (1 = off)");
    cmd->add_option("--frequency-penalty", o->frequency_penalty,
                    "OpenAI's frequency penalty on the answer's tokens, -2 .. 2 (0 = off)")
        ->check(CLI::Range(-2.0f, 2.0f));
    cmd->add_option("--presence-penalty", o->presence_penalty,
                    "OpenAI's presence penalty on the answer's tokens, -2 .. 2 (0 = off)")
        ->check(CLI::Range(-2.0f, 2.0f));
    cmd->add_option("--seed", o->seed, "Random seed");
    cmd->add_option("--max-tokens", o->max_tokens, "Most tokens to generate");
    cmd->add_option("--stop", o->stop, "Stop string (repeatable)");
    cmd->add_option("--format", o->format,
                    "text, or json: the answer is one JSON object (each token keeps it one; it ends once closed)")
        ->check(CLI::IsMember({"text", "json"}));
    cmd->add_option("--mtp", o->mtp, "MTP speculative decoding: on or off")->check(CLI::IsMember({"on", "off"}));
    cmd->add_flag("--lookup", o->lookup, "Speculative decoding with drafts looked up in the prompt and answer so far (the ids that followed the latest earlier occurrence of the last 4 to 1 ids; any model, instead of MTP; pays where the answer repeats text, e.g. code being edited; try --draft 4)");
    cmd->add_option("--draft", o->draft, "Draft tokens per step (1 to 8; default 1, with --lookup 4)")->check(CLI::Range(1, 8));
    cmd->add_option("--device", o->device, "auto, cpu or cuda");
    add_load_flags(cmd, o->load);
    cmd->add_option("--threads", o->threads, "CPU threads");
    cmd->add_option("--context", o->context, "Context length (tokens)");
    cmd->add_flag("--json", o->json, "One JSON object per token, then a summary line");
    cmd->add_option("--logprobs", o->logprobs,
                    "With --json: each token's log-probability under the model (raw logits) and the N most likely "
                    "tokens of its step (0: the token's only)")
        ->check(CLI::Range(0, int(k_max_top_logprobs)));
    cmd->callback([o] {
        // The message first: a file that cannot be attached fails before the model loads.
        std::string message = o->prompt;
#ifdef CETUS_HAVE_STORAGE
        if (!o->attach.empty()) {
            if (!o->ids.empty()) throw Error(ErrorCode::BadRequest, "--attach needs a chat prompt, not --ids");
            std::vector<storage::AttachedFile> files;
            try {
                for (const std::string& path : o->attach) files.push_back(storage::read_attachment(path));
            } catch (const storage::AttachmentError& err) {
                throw Error(ErrorCode::Io, err.what());
            }
            message = storage::compose_message(files, o->prompt);
        }
#endif
        auto e = load_engine(model_or_bundled(o->model), o->device, o->threads, o->context, o->load);
        GenerateRequest req;
        if (!o->ids.empty()) {
            req.prompt_ids = parse_ids(o->ids);
        } else {
            if (message.empty()) throw Error(ErrorCode::BadRequest, "generate needs --prompt TEXT (or --attach FILE, or --ids)");
            if (!o->system.empty()) req.messages.push_back({"system", o->system});
            req.messages.push_back({"user", message});
        }
        req.sampling = {o->temperature, o->top_p, o->top_k, o->min_p, o->repetition_penalty, o->seed,
                        o->frequency_penalty, o->presence_penalty};
        req.max_new_tokens = o->max_tokens;
        req.stop = o->stop;
        req.mtp = o->mtp == "on";
        req.lookup = o->lookup;
        if (o->format == "json") req.response_format = ResponseFormat::JsonObject;
        req.n_draft = o->draft > 0 ? o->draft : o->lookup ? k_lookup_default_drafts : 1;
        const bool json = o->json;
        if (json) req.logprobs = o->logprobs;
        const Tokenizer* tok = e->tokenizer();
        GenerateResult r = e->generate(req, [json, tok](const TokenEvent& ev) {
            if (!json) {
                std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
                std::fflush(stdout);
                return;
            }
            nlohmann::json routing = nlohmann::json::array();
            for (int32_t l = 0; l < ev.n_moe_layers && !ev.expert_ids.empty(); ++l) {
                auto ids = nlohmann::json::array(), w = nlohmann::json::array();
                for (int32_t k = 0; k < ev.top_k; ++k) {
                    ids.push_back(ev.expert_ids[size_t(l * ev.top_k + k)]);
                    w.push_back(ev.expert_weights[size_t(l * ev.top_k + k)]);
                }
                routing.push_back({{"experts", ids}, {"weights", w}});
            }
            nlohmann::json j = {{"id", ev.id}, {"text", std::string(ev.text)}, {"drafted", ev.drafted},
                                {"routing", routing}};
            if (ev.has_logprob) {
                j["logprob"] = logprob_value(ev.logprob);
                nlohmann::json top = nlohmann::json::array();
                for (const TokenLogprob& t : ev.top_logprobs) {
                    nlohmann::json x = token_logprob_json(tok, t.id, t.logprob);
                    x["id"] = t.id;
                    top.push_back(std::move(x));
                }
                j["top_logprobs"] = std::move(top);
            }
            std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        });
        if (json) {
            std::printf("%s\n", summary_json(r).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        } else {
            std::printf("\n");
            std::fprintf(stderr, "[%lld tokens, %s; prefill %.1f tok/s, decode %.1f tok/s%s]\n",
                         (long long)r.stats.generated_tokens, finish_reason_name(r.finish),
                         r.stats.prefill_tokens_per_s, r.stats.decode_tokens_per_s,
                         r.mtp_used || r.lookup_used
                             ? (std::string(r.mtp_used ? ", MTP" : ", looked-up drafts") + " acceptance " +
                                std::to_string(int(100 * r.stats.acceptance_rate())) + "%")
                                   .c_str()
                             : (", " + r.mtp_note).c_str());
        }
    });
}

}  // namespace cetus::cli
