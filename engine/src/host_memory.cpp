#include "host_memory.h"

#include "cetus/error.h"

#include <fstream>
#include <string>

namespace cetus {

uint64_t host_available_bytes() {
    std::ifstream in("/proc/meminfo");
    std::string key, unit;
    uint64_t kb = 0;
    while (in >> key >> kb >> unit)
        if (key == "MemAvailable:") return kb * 1024;
    return 0;
}

void throw_out_of_memory(const std::string& message) { throw Error(ErrorCode::OutOfMemory, message); }

}  // namespace cetus
