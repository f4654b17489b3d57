// cetus-cli chat: a terminal chat over the same SQLite database as the app, so
// conversations made here appear there and the other way round. Each answer is
// checkpointed about once a second while it streams and stored with its
// statistics and routing trace at the end.
#include "cli_util.h"
#include "commands.h"

#include "cetus/storage/store.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <cstdio>
#include <iostream>

namespace cetus::cli {

nlohmann::json summary_json(const GenerateResult& r);  // cmd_generate.cpp

namespace {

std::vector<ChatMessage> active_messages(storage::Store& store, int64_t conversation_id, int64_t& last_id) {
    auto tree = store.open_conversation(conversation_id);
    std::vector<ChatMessage> out;
    if (!tree.conversation.system_prompt.empty()) out.push_back({"system", tree.conversation.system_prompt});
    last_id = 0;
    for (int64_t id : tree.active_path) {
        for (const auto& m : tree.messages)
            if (m.id == id) {
                if (m.role != storage::Role::Tool) out.push_back({storage::role_name(m.role), m.content});
                last_id = m.id;
            }
    }
    return out;
}

// Length in UTF-16 code units (what the app's token ends count) of valid UTF-8 text.
int64_t utf16_length(std::string_view text) {
    int64_t n = 0;
    for (unsigned char c : text) {
        if ((c & 0xC0) != 0x80) ++n;  // a lead byte starts a character...
        if ((c & 0xF8) == 0xF0) ++n;  // ...and a four-byte one takes a surrogate pair
    }
    return n;
}

}  // namespace

void add_chat_command(CLI::App& app) {
    auto* cmd = app.add_subcommand("chat", "Chat in the terminal; the conversation is saved in the app's database");
    struct Opts {
        LoadFlags load;
        std::string model, db, system, device = "auto", mtp = "on";
        int64_t conversation = 0, context = 4096;
        float temperature = 0.7f, top_p = 1.0f;
        int max_tokens = 512, threads = 0, alternatives = 5, draft = 0;
        uint64_t seed = 0;
        bool lookup = false;
    };
    auto o = std::make_shared<Opts>();
    cmd->add_option("--model", o->model, "Model folder or .gguf file (default: the bundled model)");
    cmd->add_option("--db", o->db, "Conversation database (the app's history.db)")->required();
    cmd->add_option("--conversation", o->conversation, "Continue this conversation id (default: a new one)");
    cmd->add_option("--system", o->system, "System prompt of a new conversation");
    cmd->add_option("--temperature", o->temperature, "0 = greedy");
    cmd->add_option("--top-p", o->top_p, "Nucleus sampling threshold");
    cmd->add_option("--seed", o->seed, "Random seed");
    cmd->add_option("--max-tokens", o->max_tokens, "Most tokens per answer");
    cmd->add_option("--mtp", o->mtp, "on or off")->check(CLI::IsMember({"on", "off"}));
    cmd->add_flag("--lookup", o->lookup, "Speculative decoding with drafts looked up in the prompt and answer so far (the ids that followed the latest earlier occurrence of the last 4 to 1 ids; any model, instead of MTP; pays where the answer repeats text, e.g. code being edited; try --draft 4)");
    cmd->add_option("--draft", o->draft, "Draft tokens per step, MTP's or looked up (1 to 8; default 1, with --lookup 4)")->check(CLI::Range(1, 8));
    cmd->add_option("--alternatives", o->alternatives,
                    "Token probabilities kept with each answer, as the app keeps them: each token's and its step's N "
                    "most likely tokens (-1: none)")
        ->check(CLI::Range(-1, int(k_max_top_logprobs)));
    cmd->add_option("--device", o->device, "auto, cpu or cuda");
    add_load_flags(cmd, o->load);
    cmd->add_option("--threads", o->threads, "CPU threads");
    cmd->add_option("--context", o->context, "Context length (tokens)");
    cmd->callback([o] {
        auto engine = load_engine(model_or_bundled(o->model), o->device, o->threads, o->context, o->load);
        storage::Store store = storage::Store::open(o->db);
        int64_t conv = o->conversation;
        if (conv == 0) {
            storage::NewConversation nc;
            nc.model = engine->info().name;
            nc.system_prompt = o->system;
            nc.sampling_json = nlohmann::json{{"temperature", o->temperature}, {"top_p", o->top_p}}.dump();
            conv = store.create_conversation(nc);
        }
        int64_t last = 0;
        std::vector<ChatMessage> history = active_messages(store, conv, last);
        std::fprintf(stderr, "conversation %lld in %s; an empty line or end of input quits\n", (long long)conv,
                     o->db.c_str());
        std::string line;
        while (true) {
            std::fprintf(stderr, "\n> ");
            if (!std::getline(std::cin, line) || line.empty()) break;
            storage::NewMessage user;
            user.conversation_id = conv;
            if (last) user.parent_id = last;
            user.role = storage::Role::User;
            user.content = line;
            const int64_t user_id = store.add_message(user);
            history.push_back({"user", line});
            storage::NewMessage answer;
            answer.conversation_id = conv;
            answer.parent_id = user_id;
            answer.role = storage::Role::Assistant;
            answer.state = storage::MessageState::Streaming;
            const int64_t answer_id = store.add_message(answer);

            GenerateRequest req;
            req.messages = history;
            req.sampling.temperature = o->temperature;
            req.sampling.top_p = o->top_p;
            req.sampling.seed = o->seed;
            req.max_new_tokens = o->max_tokens;
            req.mtp = o->mtp == "on";
            req.lookup = o->lookup;
            req.n_draft = o->draft > 0 ? o->draft : o->lookup ? k_lookup_default_drafts : 1;  // as the app asks
            req.logprobs = o->alternatives;
            // As the app tags a conversation's cache rows (ChatController::cacheTag), so that
            // deleting the conversation there also removes what --prefix-cache kept of it.
            req.cache_tag = std::filesystem::absolute(store.path()).string() + "#" + std::to_string(conv);
            int left_out = 0;
            std::string text;
            storage::RoutingTrace trace;
            trace.first_layer = int(engine->info().first_k_dense_replace);
            // What the app records with an answer, so that its tokens can be clicked there:
            // where each token's text ends (UTF-16 units), and each token's probabilities.
            nlohmann::json ends = nlohmann::json::array();
            int64_t text_units = 0;
            storage::TokenProbabilities probabilities;
            probabilities.top_n = std::max(0, o->alternatives);
            const Tokenizer* tokenizer = engine->tokenizer();
            auto last_save = std::chrono::steady_clock::now();
            GenerateResult r;
            try {
                // A chat longer than the context keeps going without its oldest turns.
                left_out = engine->fit_to_context(req);
                if (left_out > 0)
                    std::fprintf(stderr, "[%d earlier message%s left out to fit the %lld-token context]\n", left_out,
                                 left_out == 1 ? "" : "s", (long long)engine->info().context_length);
                r = engine->generate(req, [&](const TokenEvent& ev) {
                    std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
                    std::fflush(stdout);
                    text += ev.text;
                    text_units += utf16_length(ev.text);
                    if (ev.id >= 0) ends.push_back(text_units);
                    else if (!ends.empty()) ends.back() = text_units;  // text after the last token is its
                    if (ev.id >= 0 && ev.has_logprob && tokenizer) {
                        probabilities.logprobs.push_back(ev.logprob);
                        for (const TokenLogprob& t : ev.top_logprobs) {
                            const int32_t one[1] = {t.id};
                            probabilities.alternatives.push_back(
                                {tokenizer->has_token(t.id) ? tokenizer->decode(one) : std::string(), t.logprob});
                        }
                    }
                    if (!ev.expert_ids.empty()) {
                        trace.n_layers = ev.n_moe_layers;
                        trace.top_k = ev.top_k;
                        std::vector<uint16_t> ids(ev.expert_ids.begin(), ev.expert_ids.end());
                        trace.append_token(ids, ev.expert_weights);
                    }
                    auto now = std::chrono::steady_clock::now();
                    if (now - last_save > std::chrono::seconds(1)) {
                        store.checkpoint_message(answer_id, text);
                        last_save = now;
                    }
                });
            } catch (const Error& e) {
                // What came before the error stays inspectable, as in the app.
                store.finish_message(answer_id, text, storage::MessageState::Error,
                                     nlohmann::json{{"error", e.what()}, {"token_text_ends", ends}}.dump());
                if (trace.n_layers > 0) store.set_routing_trace(answer_id, trace);
                std::fprintf(stderr, "\nerror: %s\n", e.what());
                history.pop_back();
                last = answer_id;
                continue;
            }
            nlohmann::json s = summary_json(r);
            nlohmann::json stats = {{"n_prompt_tokens", r.stats.prompt_tokens},
                                    {"n_generated_tokens", r.stats.generated_tokens},
                                    {"prefill_tokens_per_s", r.stats.prefill_tokens_per_s},
                                    {"decode_tokens_per_s", r.stats.decode_tokens_per_s},
                                    {"n_draft_proposed", r.stats.drafts_proposed},
                                    {"n_draft_accepted", r.stats.drafts_accepted},
                                    {"kv_cache_bytes", r.stats.kv_bytes_used},
                                    {"reused_prefix_tokens", r.stats.reused_prefix_tokens},
                                    {"finish", s["finish_reason"]}};
            if (left_out > 0) stats["n_turns_left_out"] = left_out;  // as the app records it
            if (r.lookup_used) stats["drafts"] = "lookup";
            stats["token_text_ends"] = ends;
            store.finish_message(answer_id, text, storage::MessageState::Complete, stats.dump());  // = r.text
            if (trace.n_layers > 0) store.set_routing_trace(answer_id, trace);
            if (probabilities.n_tokens() > 0 && probabilities.n_tokens() == ends.size() &&
                probabilities.alternatives.size() == probabilities.n_tokens() * size_t(probabilities.top_n))
                store.set_token_probabilities(answer_id, probabilities);
            history.push_back({"assistant", r.text});
            last = answer_id;
            std::fprintf(stderr, "\n[%lld tokens, %.1f tok/s%s]\n", (long long)r.stats.generated_tokens,
                         r.stats.decode_tokens_per_s,
                         r.mtp_used || r.lookup_used
                             ? (std::string(r.mtp_used ? ", MTP " : ", looked-up drafts ") +
                                std::to_string(int(100 * r.stats.acceptance_rate())) + "% accepted")
                                   .c_str()
                             : "");
        }
    });
}

}  // namespace cetus::cli
