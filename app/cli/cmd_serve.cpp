// cetus-cli serve: an OpenAI-compatible HTTP server (GET /v1/models, POST
// /v1/chat/completions and /v1/completions, streaming or not) on one loaded
// engine, Qt-free.
//
// HTTP is cpp-httplib (Debian's libcpp-httplib-dev): its thread pool reads and
// validates requests, then hands them to one worker thread that owns the engine
// and runs them one at a time, in arrival order. Each request's tokens travel
// back through a small per-request queue to its connection thread, which writes
// them out (SSE chunks, or one JSON body). A failed write means the client left:
// the request's cancel flag is set and the engine stops at its next step. While
// a request waits (queued, or in a long prefill) the connection thread writes a
// heartbeat every 0.5 s (an SSE comment, or JSON whitespace before a non-streamed
// body), so a client that disconnects early is noticed too.
#include "cli_util.h"
#include "commands.h"
#include "serve_api.h"

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <sys/socket.h>

namespace cetus::cli {

namespace {

using namespace serve;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr auto kHeartbeat = std::chrono::milliseconds(500);

std::atomic<bool> g_stop_requested{false};
extern "C" void on_stop_signal(int) { g_stop_requested.store(true); }

std::shared_ptr<spdlog::logger> logger() {
    auto l = spdlog::get("cli");
    return l ? l : spdlog::default_logger();
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// One accepted token (or trailing text) on its way from the worker to the connection.
struct Piece {
    std::string text;
    int32_t id = 0;
    bool drafted = false;
    int32_t n_layers = 0, top_k = 0;
    std::vector<int32_t> experts;
    std::vector<float> weights;
    std::optional<GenerationStats> stats;
    std::optional<json> logprob;  // its entry of logprobs.content (logprobs asked for; not the end token)
    std::optional<json> token_logprob;  // the same for every token, the end token too (the cetus extension)
};

struct Job {
    uint64_t number = 0;
    ChatRequest req;
    std::string echo_text;  // a text completion's prompt, sent before its answer (echo)
    std::atomic<bool> cancel{false};
    Clock::time_point enqueued = Clock::now();

    std::mutex m;  // guards the rest
    std::condition_variable cv;
    std::deque<Piece> pieces;
    bool finished = false;
    std::optional<GenerateResult> result;
    std::optional<ApiError> error;
};

ApiError api_error(const Error& e) {
    switch (e.code()) {
    case ErrorCode::ContextOverflow: return {400, e.what(), "invalid_request_error", "messages", "context_length_exceeded"};
    case ErrorCode::BadRequest: return {400, e.what(), "invalid_request_error", {}, {}};
    default: return {500, e.what(), "server_error", {}, error_code_name(e.code())};
    }
}

// The single thread that owns the engine.
class Worker {
public:
    Worker(Engine& engine, size_t max_queue, int token_delay_ms)
        : m_engine(engine), m_max_queue(max_queue), m_token_delay_ms(token_delay_ms) {
        m_thread = std::thread([this] { run(); });
    }
    ~Worker() { stop(); }

    // False when the queue is full or the server is stopping.
    bool submit(std::shared_ptr<Job> job) {
        {
            std::lock_guard lk(m_mutex);
            if (m_stopping || m_queue.size() >= m_max_queue) return false;
            m_queue.push_back(std::move(job));
        }
        m_cv.notify_one();
        return true;
    }
    size_t queued() {
        std::lock_guard lk(m_mutex);
        return m_queue.size() + (m_current ? 1 : 0);
    }
    // Cancels the running and queued requests and refuses new ones.
    void cancel_all() {
        std::lock_guard lk(m_mutex);
        m_stopping = true;
        for (auto& j : m_queue) j->cancel.store(true);
        if (m_current) m_current->cancel.store(true);
        m_cv.notify_one();
    }
    void stop() {
        cancel_all();
        if (m_thread.joinable()) m_thread.join();
    }

private:
    void run() {
        for (;;) {
            std::shared_ptr<Job> job;
            {
                std::unique_lock lk(m_mutex);
                m_cv.wait(lk, [&] { return m_stopping || !m_queue.empty(); });
                if (m_queue.empty()) return;
                job = m_queue.front();
                m_queue.pop_front();
                m_current = job;
            }
            process(*job);
            std::lock_guard lk(m_mutex);
            m_current.reset();
        }
    }

    void process(Job& job) {
        const double waited_ms = ms_since(job.enqueued);
        auto finish = [&](std::optional<GenerateResult> r, std::optional<ApiError> e) {
            {
                std::lock_guard lk(job.m);
                job.result = std::move(r);
                job.error = std::move(e);
                job.finished = true;
            }
            job.cv.notify_all();
        };
        if (job.cancel.load()) {
            logger()->info("request #{} cancelled before it started (client gone or shutdown)", job.number);
            GenerateResult r;
            r.finish = FinishReason::Cancelled;
            finish(std::move(r), std::nullopt);
            return;
        }
        job.req.gen.cancel = &job.cancel;
        const bool routing = job.req.cetus_routing, stats = job.req.cetus_stats;
        const Tokenizer* tokenizer = m_engine.tokenizer();
        const auto started = Clock::now();
        try {
            GenerateResult r = m_engine.generate(job.req.gen, [&](const TokenEvent& ev) {
                if (m_token_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(m_token_delay_ms));
                const bool has_logprob = ev.has_logprob && !ev.end_of_sequence;
                if (ev.text.empty() && !routing && !stats && !has_logprob) return;
                Piece p;
                if (ev.has_logprob) {
                    json entry = token_logprob_json(tokenizer, ev.id, ev.logprob);
                    json top = json::array();
                    for (const TokenLogprob& t : ev.top_logprobs) top.push_back(token_logprob_json(tokenizer, t.id, t.logprob));
                    entry["top_logprobs"] = std::move(top);
                    if (routing || stats) p.token_logprob = entry;
                    if (has_logprob) p.logprob = std::move(entry);
                }
                p.text = std::string(ev.text);
                p.id = ev.id;
                p.drafted = ev.drafted;
                if (routing && ev.id >= 0) {
                    p.n_layers = ev.n_moe_layers;
                    p.top_k = ev.top_k;
                    p.experts.assign(ev.expert_ids.begin(), ev.expert_ids.end());
                    p.weights.assign(ev.expert_weights.begin(), ev.expert_weights.end());
                }
                if (stats && ev.stats) p.stats = *ev.stats;
                {
                    std::lock_guard lk(job.m);
                    job.pieces.push_back(std::move(p));
                }
                job.cv.notify_all();
            });
            if (r.finish == FinishReason::Cancelled)
                logger()->info("request #{} cancelled after {} tokens (client disconnected or shutdown)", job.number,
                               r.stats.generated_tokens);
            else
                logger()->info("request #{}: {} prompt + {} generated tokens, {}, queued {:.0f} ms, ran {:.0f} ms "
                               "({:.1f} tok/s)",
                               job.number, r.stats.prompt_tokens, r.stats.generated_tokens,
                               finish_reason_name(r.finish), waited_ms, ms_since(started), r.stats.decode_tokens_per_s);
            finish(std::move(r), std::nullopt);
        } catch (const Error& e) {
            logger()->warn("request #{} failed: {}", job.number, e.what());
            finish(std::nullopt, api_error(e));
        } catch (const std::exception& e) {
            logger()->error("request #{} failed: {}", job.number, e.what());
            finish(std::nullopt, ApiError{500, e.what(), "server_error", {}, {}});
        }
    }

    Engine& m_engine;
    size_t m_max_queue;
    int m_token_delay_ms;  // tests: a slow model, so that cancellation and queueing can be seen
    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::deque<std::shared_ptr<Job>> m_queue;
    std::shared_ptr<Job> m_current;
    bool m_stopping = false;
    std::thread m_thread;
};

void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status;
    res.set_content(dump(error_json(e)), "application/json");
}

json cetus_piece_json(const Piece& p, bool routing, bool stats) {
    json c = {{"id", p.id}, {"drafted", p.drafted}};
    if (routing && p.id >= 0) {
        c["routing"] = routing_ids_json(p.n_layers, p.top_k, p.experts);
        c["weights"] = routing_weights_json(p.n_layers, p.top_k, p.weights);
    }
    if (stats && p.stats) c["stats"] = stats_json(*p.stats);
    // Every token's, the end-of-sequence token's too (OpenAI's list leaves that one out),
    // so that a client's per-token records line up with the routing.
    if (p.token_logprob) c["logprobs"] = *p.token_logprob;
    return c;
}

json cetus_final_json(const GenerateResult& r) {
    return {{"stats", stats_json(r.stats)},
            {"finish", finish_reason_name(r.finish)},
            {"mtp", r.mtp_used},
            {"lookup", r.lookup_used},
            {"n_moe_layers", r.n_moe_layers},
            {"n_routed_experts", r.n_routed_experts}};
}

// Waits for the next pieces of a job (or its end), at most one heartbeat interval.
// Returns whether the job has finished; moves new pieces into `out`.
bool next_pieces(Job& job, std::deque<Piece>& out) {
    std::unique_lock lk(job.m);
    job.cv.wait_for(lk, kHeartbeat, [&] { return !job.pieces.empty() || job.finished; });
    out.swap(job.pieces);
    return job.finished;
}

// Characters of UTF-8 text, as Python counts them (text_offset of the legacy logprobs).
int64_t characters(const std::string& s) {
    int64_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
}

// The SSE body of a streamed request, written from the connection's thread: chat
// completion chunks, or text completion chunks for /v1/completions.
bool write_stream(Job& job, const ResponseHeader& h, httplib::DataSink& sink) {
    const ChatRequest& cr = job.req;
    const bool text_api = cr.completion;
    int64_t text_offset = characters(job.echo_text);
    auto last_write = Clock::now();
    auto write = [&](const std::string& s) {
        last_write = Clock::now();
        if (sink.write(s.data(), s.size())) return true;
        job.cancel.store(true);  // the client went away: stop the engine
        return false;
    };
    auto event = [&](const json& j) { return write("data: " + dump(j) + "\n\n"); };
    auto chunk = [&](json delta, const char* finish) {
        json c = text_api ? text_chunk_json(h, delta.value("content", std::string()), finish)
                          : chunk_json(h, std::move(delta), finish);
        if (cr.include_usage) c["usage"] = nullptr;
        return c;
    };

    // Log-probability entries of tokens whose text is still pending go with the next chunk
    // that has text (the cetus extension sends a chunk per token, so each has its own).
    const bool per_token = cr.cetus_routing || cr.cetus_stats;
    json pending_logprobs = json::array();
    auto attach_logprobs = [&](json& c) {
        if (pending_logprobs.empty()) return;
        c["choices"][0]["logprobs"] = text_api ? legacy_logprobs_json(pending_logprobs, text_offset)
                                               : json{{"content", std::move(pending_logprobs)}, {"refusal", nullptr}};
        pending_logprobs = json::array();
    };
    if (!text_api && !event(chunk({{"role", "assistant"}, {"content", ""}}, nullptr))) return false;
    if (text_api && !job.echo_text.empty() && !event(chunk({{"content", job.echo_text}}, nullptr))) return false;
    for (;;) {
        std::deque<Piece> batch;
        const bool finished = next_pieces(job, batch);
        for (Piece& p : batch) {
            if (p.logprob) pending_logprobs.push_back(std::move(*p.logprob));
            if (p.text.empty() && !per_token) continue;
            json c = chunk({{"content", p.text}}, nullptr);
            attach_logprobs(c);
            if (per_token) c["cetus"] = cetus_piece_json(p, cr.cetus_routing, cr.cetus_stats);
            if (!event(c)) return false;
        }
        if (finished) break;
        if (batch.empty() && Clock::now() - last_write >= kHeartbeat && !write(": keep-alive\n\n")) return false;
    }

    std::lock_guard lk(job.m);
    if (job.error) {
        event(error_json(*job.error));
    } else if (job.result->finish == FinishReason::Cancelled) {
        event(error_json(ApiError{503, "the request was cancelled: the server is shutting down", "server_error", {},
                                  "shutting_down"}));
    } else {
        const GenerateResult& r = *job.result;
        json last = chunk(json::object(), openai_finish_reason(r.finish));
        attach_logprobs(last);
        if (cr.cetus_stats) last["cetus"] = cetus_final_json(r);
        if (!event(last)) return false;
        if (cr.include_usage && !event(text_api ? text_usage_chunk_json(h, r.stats) : usage_chunk_json(h, r.stats)))
            return false;
    }
    if (!write("data: [DONE]\n\n")) return false;
    sink.done();
    return true;
}

// A non-streamed body: JSON whitespace as heartbeat while waiting, then the completion.
bool write_whole(Job& job, const ResponseHeader& h, httplib::DataSink& sink) {
    const ChatRequest& cr = job.req;
    auto last_write = Clock::now();
    auto write = [&](const std::string& s) {
        last_write = Clock::now();
        if (sink.write(s.data(), s.size())) return true;
        job.cancel.store(true);
        return false;
    };
    json routing = json::array(), logprobs = json::array();
    for (;;) {
        std::deque<Piece> batch;
        const bool finished = next_pieces(job, batch);
        for (Piece& p : batch)
            if (p.logprob) logprobs.push_back(std::move(*p.logprob));
        if (cr.cetus_routing)
            for (const Piece& p : batch)
                if (p.id >= 0)
                    routing.push_back({{"id", p.id},
                                       {"routing", routing_ids_json(p.n_layers, p.top_k, p.experts)},
                                       {"weights", routing_weights_json(p.n_layers, p.top_k, p.weights)}});
        if (finished) break;
        if (Clock::now() - last_write >= kHeartbeat && !write("\n")) return false;
    }
    std::lock_guard lk(job.m);
    json body;
    if (job.error) {
        body = error_json(*job.error);
    } else if (job.result->finish == FinishReason::Cancelled) {
        body = error_json(ApiError{503, "the request was cancelled: the server is shutting down", "server_error", {},
                                   "shutting_down"});
    } else {
        const GenerateResult& r = *job.result;
        if (cr.completion) {
            int64_t offset = characters(job.echo_text);
            body = text_completion_json(h, job.echo_text + r.text, r.finish, r.stats,
                                        cr.gen.logprobs >= 0 ? legacy_logprobs_json(logprobs, offset) : json(nullptr));
        } else {
            body = completion_json(h, r.text, r.finish, r.stats);
            if (cr.gen.logprobs >= 0)
                body["choices"][0]["logprobs"] = {{"content", std::move(logprobs)}, {"refusal", nullptr}};
        }
        if (cr.cetus_routing || cr.cetus_stats) {
            json c = cetus_final_json(r);
            if (cr.cetus_routing) c["tokens"] = std::move(routing);
            body["cetus"] = std::move(c);
        }
    }
    if (!write(dump(body))) return false;
    sink.done();
    return true;
}

// Compares without an early exit, so the key cannot be guessed byte by byte from timing.
bool constant_time_equal(const std::string& a, const std::string& b) {
    if (a.size() != b.size()) return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
    return diff == 0;
}

// The API's model id: the folder's name ("models/v3-tiny/" -> "v3-tiny").
std::string folder_model_id(const std::string& dir) {
    std::filesystem::path p = std::filesystem::path(dir).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    return p.filename().string();
}

// httplib 0.11 listens with a backlog of 5: a burst of new connections overflows it and
// the kernel drops SYNs (the client retries after a second). Re-listening on the bound
// socket raises the backlog.
class HttpServer : public httplib::Server {
public:
    void raise_backlog() {
        if (svr_sock_ != INVALID_SOCKET) ::listen(svr_sock_, SOMAXCONN);
    }
};

struct ServeOptions {
    std::string model, device = "auto", host = "127.0.0.1", api_key, model_name;
    LoadFlags load;
    int port = 8765, threads = 0, max_queue = 64, token_delay_ms = 0;
    int64_t context = 4096;
    size_t max_body = 4u << 20;
};

void run_server(const ServeOptions& o) {
    const std::string dir = model_or_bundled(o.model);
    const std::string model_id = !o.model_name.empty() ? o.model_name : folder_model_id(dir);
    auto engine = load_engine(dir, o.device, o.threads, o.context, o.load);
    if (!engine->tokenizer())
        throw Error(ErrorCode::BadRequest, "serve needs a model folder with tokenizer.json (chat messages are tokenized)");
    const Tokenizer tokenizer = *engine->tokenizer();  // immutable, shared, safe on the connection threads
    const int64_t context = engine->info().context_length;
    const int64_t created = int64_t(std::time(nullptr));

    std::mutex rng_mutex;
    std::mt19937_64 rng{std::random_device{}()};
    auto random64 = [&] {
        std::lock_guard lk(rng_mutex);
        return rng();
    };
    std::atomic<uint64_t> next_number{1};

    Worker worker(*engine, size_t(std::max(1, o.max_queue)), o.token_delay_ms);
    HttpServer svr;
    svr.new_task_queue = [] { return new httplib::ThreadPool(32); };
    svr.set_payload_max_length(o.max_body);
    svr.set_keep_alive_max_count(100);

    svr.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
        if (o.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
        const std::string auth = req.get_header_value("Authorization");
        if (constant_time_equal(auth, "Bearer " + o.api_key)) return httplib::Server::HandlerResponse::Unhandled;
        res.set_header("WWW-Authenticate", "Bearer");
        send_error(res, ApiError{401,
                                 auth.empty() ? "You didn't provide an API key: send it as 'Authorization: Bearer KEY'."
                                              : "Incorrect API key provided.",
                                 "invalid_request_error", {}, "invalid_api_key"});
        return httplib::Server::HandlerResponse::Handled;
    });
    svr.set_error_handler(httplib::Server::HandlerWithResponse([&](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        const int status = res.status;
        if (status == 413)
            send_error(res, ApiError{413, "The request body is larger than the server's limit of " +
                                              std::to_string(o.max_body) + " bytes.",
                                     "invalid_request_error", {}, "request_too_large"});
        else if (status == 404)
            send_error(res, ApiError{404, "Unknown request URL: " + req.method + " " + req.path + ".",
                                     "invalid_request_error", {}, "unknown_url"});
        else
            send_error(res, ApiError{status, "HTTP error " + std::to_string(status) + ".",
                                     status >= 500 ? "server_error" : "invalid_request_error", {}, {}});
        res.status = status;
        return httplib::Server::HandlerResponse::Handled;
    }));
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "internal error";
        try {
            if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
            what = e.what();
        } catch (...) {
        }
        send_error(res, ApiError{500, what, "server_error", {}, {}});
    });
    svr.set_logger([](const httplib::Request& req, const httplib::Response& res) {
        logger()->debug("{} {} -> {}", req.method, req.path, res.status);
    });

    auto method_not_allowed = [](const char* allow) {
        return [allow](const httplib::Request& req, httplib::Response& res) {
            res.set_header("Allow", allow);
            send_error(res, ApiError{405, "Method " + req.method + " is not allowed for " + req.path + " (use " + allow + ").",
                                     "invalid_request_error", {}, "method_not_allowed"});
        };
    };

    svr.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
        res.set_content(dump({{"status", "ok"}, {"model", model_id}, {"queued", worker.queued()}}), "application/json");
    });
    svr.Get("/v1/models", [&](const httplib::Request&, httplib::Response& res) {
        res.set_content(dump(models_json(model_id, created, context)), "application/json");
    });
    svr.Get("/v1/models/(.+)", [&](const httplib::Request& req, httplib::Response& res) {
        if (req.matches[1] != model_id)
            return send_error(res, ApiError{404, "The model '" + std::string(req.matches[1]) + "' does not exist.",
                                            "invalid_request_error", "model", "model_not_found"});
        res.set_content(dump(model_json(model_id, created, context)), "application/json");
    });
    for (const char* p : {"/v1/models", "/v1/models/(.+)"}) {
        svr.Post(p, method_not_allowed("GET"));
        svr.Put(p, method_not_allowed("GET"));
        svr.Delete(p, method_not_allowed("GET"));
        svr.Patch(p, method_not_allowed("GET"));
    }
    for (const char* p : {"/v1/chat/completions", "/v1/completions"}) {
        svr.Get(p, method_not_allowed("POST"));
        svr.Put(p, method_not_allowed("POST"));
        svr.Delete(p, method_not_allowed("POST"));
        svr.Patch(p, method_not_allowed("POST"));
    }

    // A text completion's prompt ids: the text as it is (special tokens as the tokenizer
    // finds them, BOS first when the tokenizer asks for it), or with a suffix, DeepSeek's
    // fill-in-the-middle form: <｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜>.
    auto added_id = [&](std::string_view marker) {
        const std::vector<int32_t> ids = tokenizer.encode(marker, true);
        return ids.size() == 1 && tokenizer.is_special(ids[0]) ? ids[0] : -1;
    };
    const int32_t fim_begin = added_id("<｜fim▁begin｜>"), fim_hole = added_id("<｜fim▁hole｜>"),
                  fim_end = added_id("<｜fim▁end｜>");
    auto completion_ids = [&](const ChatRequest& r, std::vector<int32_t>& ids) -> std::optional<ApiError> {
        if (!r.prompt_text) return std::nullopt;  // ids given
        ids.clear();
        if (tokenizer.add_bos_token() && tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
        if (!r.suffix) {
            const std::vector<int32_t> text = tokenizer.encode(*r.prompt_text, true);
            ids.insert(ids.end(), text.begin(), text.end());
        } else {
            if (fim_begin < 0 || fim_hole < 0 || fim_end < 0)
                return ApiError{400, "'suffix' (fill in the middle) needs the tokenizer's <｜fim▁begin｜>, "
                                     "<｜fim▁hole｜> and <｜fim▁end｜> tokens, which this model's does not have",
                                "invalid_request_error", "suffix", {}};
            const std::vector<int32_t> prefix = tokenizer.encode(*r.prompt_text, false), suffix = tokenizer.encode(*r.suffix, false);
            ids.push_back(fim_begin);
            ids.insert(ids.end(), prefix.begin(), prefix.end());
            ids.push_back(fim_hole);
            ids.insert(ids.end(), suffix.begin(), suffix.end());
            ids.push_back(fim_end);
        }
        if (ids.empty()) return ApiError{400, "'prompt' is empty", "invalid_request_error", "prompt", {}};
        return std::nullopt;
    };

    auto serve_request = [&](const httplib::Request& req, httplib::Response& res, bool text_api) {
        ParseResult parsed = text_api ? parse_completion_request(req.body, model_id, random64())
                                      : parse_chat_request(req.body, model_id, random64());
        if (!parsed.request) return send_error(res, parsed.error);
        auto job = std::make_shared<Job>();
        job->req = std::move(*parsed.request);
        GenerateRequest& gen = job->req.gen;
        if (text_api) {
            if (auto e = completion_ids(job->req, gen.prompt_ids)) return send_error(res, *e);
            for (int32_t id : gen.prompt_ids)
                if (id >= tokenizer.vocab_size() || !tokenizer.has_token(id))
                    return send_error(res, ApiError{400, "'prompt' holds the token id " + std::to_string(id) +
                                                             ", which this model's tokenizer does not have",
                                                    "invalid_request_error", "prompt", {}});
            if (job->req.echo) job->echo_text = job->req.prompt_text ? *job->req.prompt_text : tokenizer.decode(gen.prompt_ids);
        }
        // The engine's own check, made here so that the answer is a 400 before any byte of a stream.
        const int64_t n = text_api ? int64_t(gen.prompt_ids.size())
                                   : int64_t(tokenizer.encode_chat(gen.messages, !gen.continue_final_message,
                                                                   gen.continue_final_message).size());
        if (n >= context)
            return send_error(res, ApiError{400, "This model's maximum context length is " + std::to_string(context) +
                                                     " tokens. However, your " + (text_api ? "prompt" : "messages") +
                                                     " resulted in " + std::to_string(n) +
                                                     " tokens (one position is needed for the answer).",
                                            "invalid_request_error", text_api ? "prompt" : "messages",
                                            "context_length_exceeded"});
        // Without max_tokens: to the end of the context for a chat, OpenAI's 16 for a text completion.
        if (!job->req.max_tokens_given) gen.max_new_tokens = int32_t(std::min<int64_t>(text_api ? 16 : context - n, INT32_MAX));
        job->number = next_number.fetch_add(1);
        if (!worker.submit(job))
            return send_error(res, ApiError{503, "The server is busy (queue full) or shutting down; try again later.",
                                            "server_error", {}, "server_busy"});
        char idbuf[40];
        std::snprintf(idbuf, sizeof idbuf, "%s-%016llx%08llx", text_api ? "cmpl" : "chatcmpl",
                      static_cast<unsigned long long>(random64()), static_cast<unsigned long long>(job->number));
        const ResponseHeader h{idbuf, int64_t(std::time(nullptr)), model_id};
        logger()->debug("request #{}: {} prompt tokens, stream {}", job->number, n, job->req.stream);
        // Released with the response, whatever happened: a request nobody reads any more stops.
        auto release = [job](bool) { job->cancel.store(true); };
        if (job->req.stream) {
            res.set_header("Cache-Control", "no-cache");
            res.set_header("X-Accel-Buffering", "no");
            res.set_chunked_content_provider(
                "text/event-stream", [job, h](size_t, httplib::DataSink& sink) { return write_stream(*job, h, sink); },
                release);
        } else {
            // "; charset=utf-8" keeps httplib from gzip-buffering the body (and its heartbeats).
            res.set_chunked_content_provider(
                "application/json; charset=utf-8",
                [job, h](size_t, httplib::DataSink& sink) { return write_whole(*job, h, sink); }, release);
        }
    };
    svr.Post("/v1/chat/completions",
             [&](const httplib::Request& req, httplib::Response& res) { serve_request(req, res, false); });
    svr.Post("/v1/completions", [&](const httplib::Request& req, httplib::Response& res) { serve_request(req, res, true); });

    int port = o.port;
    if (port == 0) {
        port = svr.bind_to_any_port(o.host);
    } else if (!svr.bind_to_port(o.host, port)) {
        port = -1;
    }
    if (port <= 0)
        throw Error(ErrorCode::Io, "cannot listen on " + o.host + ":" + std::to_string(o.port) +
                                       " (address in use, or not an address of this machine)");
    svr.raise_backlog();
    const bool loopback = o.host == "127.0.0.1" || o.host == "localhost" || o.host == "::1";
    if (!loopback && o.api_key.empty())
        logger()->warn("listening on {} without --api-key: anyone who can reach this port can use the model", o.host);

    std::signal(SIGPIPE, SIG_IGN);
    g_stop_requested.store(false);
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    std::atomic<bool> listening_done{false};
    std::thread monitor([&] {
        while (!g_stop_requested.load() && !listening_done.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        if (g_stop_requested.load()) logger()->info("stopping: cancelling {} request(s), closing connections", worker.queued());
        worker.cancel_all();
        svr.stop();
    });

    std::fprintf(stderr, "cetus-cli serve: listening on http://%s:%d/v1 (model '%s', context %lld)\n",
                 o.host.find(':') != std::string::npos ? ("[" + o.host + "]").c_str() : o.host.c_str(), port,
                 model_id.c_str(), static_cast<long long>(context));
    std::fflush(stderr);
    svr.listen_after_bind();
    listening_done.store(true);
    monitor.join();
    worker.stop();
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    logger()->info("server stopped");
}

}  // namespace

void add_serve_command(CLI::App& app) {
    auto* cmd = app.add_subcommand("serve", "Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions)");
    auto o = std::make_shared<ServeOptions>();
    cmd->add_option("--model", o->model, "Model folder or .gguf file (default: the bundled model)");
    cmd->add_option("--host", o->host, "Address to listen on (default loopback only)");
    cmd->add_option("--port", o->port, "TCP port (0: any free port, printed at start)")->check(CLI::Range(0, 65535));
    cmd->add_option("--api-key", o->api_key, "Require 'Authorization: Bearer KEY' (also from $CETUS_API_KEY)")
        ->envname("CETUS_API_KEY");
    cmd->add_option("--model-name", o->model_name, "Model id in the API (default: the model folder's name)");
    cmd->add_option("--context", o->context, "Context length (tokens)");
    cmd->add_option("--device", o->device, "auto, cpu or cuda");
    add_load_flags(cmd, o->load);
    cmd->add_option("--threads", o->threads, "CPU threads");
    cmd->add_option("--max-queue", o->max_queue, "Requests waiting at most; more get 503")->check(CLI::PositiveNumber);
    cmd->add_option("--max-body", o->max_body, "Largest request body in bytes (413 beyond)");
    cmd->add_option("--debug-token-delay-ms", o->token_delay_ms, "Sleep this long per token (tests)")->group("");
    cmd->callback([o] { run_server(*o); });
}

}  // namespace cetus::cli
