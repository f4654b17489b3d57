// cetus-cli: the Qt-free command line. Logs go to stderr; results to stdout.
// Every cetus::Error ends here as a one-line message and exit code 1.
#include "omp_env.h"
#include "commands.h"

#include "cetus/error.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
    cetus::app::ensure_passive_omp_wait(argv);
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    for (const char* name : {"engine", "storage", "cli"}) {
        auto logger = std::make_shared<spdlog::logger>(name, sink);
        logger->set_level(spdlog::level::info);
        spdlog::register_logger(logger);
    }

    CLI::App app{"Cetus command line: inspect, run and benchmark DeepSeek-architecture models"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("cetus-cli ") + CETUS_VERSION);
    bool verbose = false;
    app.add_flag("-v,--verbose", verbose, "Debug logging");
    app.parse_complete_callback([&] {
        if (verbose) spdlog::apply_all([](auto l) { l->set_level(spdlog::level::debug); });
    });

    cetus::cli::add_info_command(app);
    cetus::cli::add_logits_command(app);
    cetus::cli::add_selftest_command(app);
    cetus::cli::add_bench_command(app);
#ifdef CETUS_HAVE_STORAGE
    cetus::cli::add_history_command(app);
    cetus::cli::add_chat_command(app);
#endif
    cetus::cli::add_generate_command(app);
    cetus::cli::add_cache_command(app);
    cetus::cli::add_tokenize_commands(app);
#ifdef CETUS_HAVE_HTTPLIB
    cetus::cli::add_serve_command(app);
#endif

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const cetus::Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
