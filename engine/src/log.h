// The engine's named logger ("engine"). The mains register a real sink; when
// nobody did, logging goes to a null sink so library users and tests stay quiet.
#pragma once

#include <spdlog/spdlog.h>

namespace cetus {

spdlog::logger& engine_log();

}  // namespace cetus
