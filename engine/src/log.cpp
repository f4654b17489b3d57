// Looks up the "engine" logger once per call; falls back to a shared null logger.
#include "log.h"

#include <spdlog/sinks/null_sink.h>

namespace cetus {

spdlog::logger& engine_log() {
    if (auto logger = spdlog::get("engine")) return *logger;
    static auto null_logger =
        std::make_shared<spdlog::logger>("engine-null", std::make_shared<spdlog::sinks::null_sink_mt>());
    return *null_logger;
}

}  // namespace cetus
