// cetus-cli cache: the prefix cache folder that --prefix-cache (and the app's
// conversation caches) keep: what is there, and removing it.
#include "cli_util.h"
#include "commands.h"

#include "cetus/engine.h"
#include "cetus/error.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <ctime>

namespace cetus::cli {

void add_cache_command(CLI::App& app) {
    struct Opts {
        std::string dir, tag;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("cache", "The prefix cache folder of --prefix-cache: list, clear, forget");
    cmd->add_option("--dir", o->dir, "The folder (--prefix-cache DIR; the app's is in its cache folder)")->required();
    cmd->require_subcommand(1);
    auto* list = cmd->add_subcommand("list", "Each file: model, backend, cache, tokens, size, last use, tag");
    list->add_flag("--json", o->json, "JSON: an array of objects");
    list->callback([o] {
        const std::vector<PrefixFileInfo> files = Engine::list_prefix_files(o->dir);
        if (o->json) {
            nlohmann::json a = nlohmann::json::array();
            for (const auto& f : files) {
                nlohmann::json j = {{"path", f.path.string()}, {"model", f.model},   {"backend", f.backend},
                                    {"cache", f.cache_type},   {"tag", f.tag},       {"tokens", f.tokens},
                                    {"bytes", f.bytes},        {"last_used_s", f.last_used_s}};
                if (!f.problem.empty()) j["problem"] = f.problem;
                a.push_back(std::move(j));
            }
            std::printf("%s\n", a.dump(2).c_str());
            return;
        }
        uint64_t total = 0;
        for (const auto& f : files) {
            total += f.bytes;
            char when[32] = "?";
            const std::time_t t = std::time_t(f.last_used_s);
            if (std::tm tm{}; localtime_r(&t, &tm)) std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
            if (!f.problem.empty()) {
                std::printf("%s  %.1f MiB  %s: cannot be read: %s\n", when, double(f.bytes) / double(1 << 20),
                            f.path.filename().string().c_str(), f.problem.c_str());
                continue;
            }
            std::printf("%s  %.1f MiB  %lld tokens  %s  [%s; %s]%s%s\n", when, double(f.bytes) / double(1 << 20),
                        static_cast<long long>(f.tokens), f.model.c_str(), f.backend.c_str(), f.cache_type.c_str(),
                        f.tag.empty() ? "" : "  tag ", f.tag.c_str());
        }
        std::printf("%zu file%s, %.1f MiB, least recently used first\n", files.size(), files.size() == 1 ? "" : "s",
                    double(total) / double(1 << 20));
    });
    auto* clear = cmd->add_subcommand("clear", "Remove every prefix file of the folder (nothing else)");
    clear->callback([o] {
        const size_t n = Engine::list_prefix_files(o->dir).size();
        Engine::remove_prefix_files(o->dir);
        std::printf("removed %zu file%s\n", n, n == 1 ? "" : "s");
    });
    auto* forget = cmd->add_subcommand("forget", "Remove the files of one conversation (its tag, as `list` shows)");
    forget->add_option("tag", o->tag, "The conversation's tag")->required();
    forget->callback([o] {
        const size_t n = Engine::forget_prefix_files(o->dir, o->tag);
        std::printf("removed %zu file%s\n", n, n == 1 ? "" : "s");
    });
}

}  // namespace cetus::cli
