// The "ui" logger: the one the main registered, else a null-sink logger.
#include "log.h"

#include <spdlog/sinks/null_sink.h>

namespace cetus::ui {

std::shared_ptr<spdlog::logger> logger() {
    if (auto named = spdlog::get("ui")) return named;
    static const auto null_logger = std::make_shared<spdlog::logger>("ui-null", std::make_shared<spdlog::sinks::null_sink_mt>());
    return null_logger;
}

}  // namespace cetus::ui
