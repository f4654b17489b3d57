// The ui library's named spdlog logger ("ui"); a null logger when the main set none up,
// so tests stay quiet.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>

namespace cetus::ui {
std::shared_ptr<spdlog::logger> logger();
}
