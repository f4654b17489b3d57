// The writer that test_storage_crash kills with SIGKILL. It streams answers into
// a database the way the UI does (user message, streaming assistant message,
// a checkpoint every few milliseconds, finish with statistics and a routing trace)
// and announces each commit on stdout only after the call returned:
//   C <conversation id>            conversation created
//   F <id> <bytes> <fnv1a hash>    message committed in a final state
//   S <id>                         streaming message created (empty)
//   P <id> <bytes> <fnv1a hash>    checkpoint committed with this content
// Usage: storage_crash_writer DB SEED
#include "cetus/storage/store.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>

using namespace cetus::storage;

namespace {

uint64_t fnv1a(const std::string& text) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
    return h;
}

void announce(const std::string& line) {
    const std::string text = line + "\n";
    // One write(2) per line, unbuffered: what reached the pipe stays there after SIGKILL.
    if (::write(STDOUT_FILENO, text.data(), text.size()) != static_cast<ssize_t>(text.size())) std::_Exit(3);
}

void announce_content(char kind, int64_t id, const std::string& content) {
    announce(std::string(1, kind) + " " + std::to_string(id) + " " + std::to_string(content.size()) + " " +
             std::to_string(fnv1a(content)));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: storage_crash_writer DB SEED\n");
        return 2;
    }
    try {
        std::mt19937 rng(static_cast<unsigned>(std::strtoul(argv[2], nullptr, 10)));
        Store store = Store::open(argv[1]);
        announce("READY");
        static const char* words[] = {"expert", "latent", "token", "router", "cache", "draft", "über", "naïve", "🐋", "\n"};
        for (int round = 0;; ++round) {
            const int64_t conversation = store.create_conversation({});
            announce("C " + std::to_string(conversation));
            std::optional<int64_t> parent;
            for (int turn = 0; turn < 4; ++turn) {
                NewMessage question;
                question.conversation_id = conversation;
                question.parent_id = parent;
                question.content = "question " + std::to_string(round) + "." + std::to_string(turn);
                const int64_t user = store.add_message(question);
                announce_content('F', user, question.content);

                NewMessage answer;
                answer.conversation_id = conversation;
                answer.parent_id = user;
                answer.role = Role::Assistant;
                answer.state = MessageState::Streaming;
                const int64_t id = store.add_message(answer);
                announce("S " + std::to_string(id));
                std::string text;
                const int n_pieces = 5 + static_cast<int>(rng() % 20);
                for (int piece = 0; piece < n_pieces; ++piece) {
                    for (int w = 0; w < 8; ++w) text += std::string(words[rng() % 10]) + " ";
                    store.checkpoint_message(id, text);
                    announce_content('P', id, text);
                    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 2500));
                }
                RoutingTrace trace{3, 2, 1, {}, {}};
                for (int i = 0; i < n_pieces * 6; ++i) {
                    trace.expert_ids.push_back(static_cast<uint16_t>(rng() % 64));
                    trace.weights.push_back(static_cast<float>(rng() % 100) / 100.0f);
                }
                {
                    // Final text, statistics and trace land together or not at all.
                    Store::Transaction tx(store);
                    store.finish_message(id, text, MessageState::Complete,
                                         "{\"n_generated_tokens\":" + std::to_string(n_pieces) + "}");
                    store.set_routing_trace(id, trace);
                    tx.commit();
                }
                announce_content('F', id, text);
                parent = id;
            }
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "storage_crash_writer: %s\n", e.what());
        return 1;
    }
}
