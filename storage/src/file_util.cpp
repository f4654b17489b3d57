// Header inspection (the SQLite file format, section 1.3 of fileformat2.html),
// owner-only creation, moving damaged files aside, and writer liveness via /proc.
#include "file_util.h"

#include "cetus/storage/error.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <vector>

namespace fs = std::filesystem;

namespace cetus::storage::detail {
namespace {

[[noreturn]] void fail_file(StorageErrorCode code, const fs::path& file, const std::string& message) {
    throw StorageError(code, file.string() + ": " + message);
}

uint32_t be32(const unsigned char* p) {
    return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

uintmax_t size_or_zero(const fs::path& file) {
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    return ec ? 0 : size;
}

// Fields 3 (state) and 22 (start time in clock ticks) of /proc/<pid>/stat.
bool read_proc_stat(long pid, char& state, std::string& start_time) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!in || !std::getline(in, line)) return false;
    const auto close = line.rfind(')');  // the command name may hold spaces and ')'
    if (close == std::string::npos) return false;
    std::istringstream fields(line.substr(close + 1));
    std::vector<std::string> rest;
    for (std::string f; fields >> f;) rest.push_back(f);
    if (rest.size() < 20) return false;
    state = rest[0].empty() ? '?' : rest[0][0];
    start_time = rest[19];
    return true;
}

const std::string& own_start_time() {
    static const std::string start = [] {
        char state = 0;
        std::string t;
        return read_proc_stat(::getpid(), state, t) ? t : std::string("0");
    }();
    return start;
}

std::mutex g_live_mutex;
std::set<uint64_t> g_live_writers;

}  // namespace

void inspect_header(const fs::path& file) {
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    if (ec) fail_file(StorageErrorCode::Io, file, "cannot read its size: " + ec.message());
    if (size == 0) return;

    unsigned char header[100] = {};
    std::ifstream in(file, std::ios::binary);
    if (!in) fail_file(StorageErrorCode::Io, file, std::string("cannot open: ") + std::strerror(errno));
    in.read(reinterpret_cast<char*>(header), sizeof header);
    const auto n_read = static_cast<size_t>(in.gcount());

    static const char magic[16] = "SQLite format 3";  // with its NUL: 16 bytes
    if (std::memcmp(header, magic, std::min<size_t>(n_read, 16)) != 0) {
        fail_file(StorageErrorCode::NotADatabase, file, "not a database (no SQLite header); left untouched");
    }
    if (n_read < 100) {
        fail_file(StorageErrorCode::Corrupt, file,
                  "damaged: truncated to " + std::to_string(size) + " bytes, shorter than the 100-byte header");
    }
    uint32_t page_size = (uint32_t(header[16]) << 8) | header[17];
    if (page_size == 1) page_size = 65536;
    if (page_size < 512 || page_size > 65536 || (page_size & (page_size - 1)) != 0) {
        fail_file(StorageErrorCode::Corrupt, file, "damaged: invalid page size " + std::to_string(page_size));
    }
    // With a WAL or hot journal beside it, the main file may legitimately lag.
    const std::string base = file.string();
    if (size_or_zero(base + "-wal") > 0 || size_or_zero(base + "-journal") > 0) return;
    const uint32_t change_counter = be32(header + 24);
    const uint32_t n_pages = be32(header + 28);
    const uint32_t valid_for = be32(header + 92);
    if (valid_for == change_counter && n_pages > 0 && size < uintmax_t(n_pages) * page_size) {
        fail_file(StorageErrorCode::Corrupt, file,
                  "damaged: truncated to " + std::to_string(size) + " bytes; its header says " +
                      std::to_string(n_pages) + " pages of " + std::to_string(page_size) + " bytes");
    }
    if (size % page_size != 0) {
        fail_file(StorageErrorCode::Corrupt, file,
                  "damaged: truncated to " + std::to_string(size) + " bytes, not a whole number of " +
                      std::to_string(page_size) + "-byte pages");
    }
}

bool create_private_file(const fs::path& file) {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == EEXIST) return false;
        fail_file(StorageErrorCode::Io, file, std::string("cannot create: ") + std::strerror(errno));
    }
    ::fchmod(fd, 0600);
    ::close(fd);
    return true;
}

fs::path move_aside(const fs::path& file) {
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(file, ec))) {
        fail_file(StorageErrorCode::Io, file, "cannot move aside: no such file");
    }
    const std::time_t now = std::time(nullptr);
    std::tm utc{};
    gmtime_r(&now, &utc);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &utc);
    const std::string base = file.string() + ".damaged-" + stamp;
    std::string target = base;
    for (int n = 2; fs::exists(target) || fs::exists(target + "-wal"); ++n) target = base + "-" + std::to_string(n);

    // Companions first: a -wal left beside a new empty file would be replayed into it.
    for (const char* suffix : {"-wal", "-journal", "-shm"}) {
        const std::string from = file.string() + suffix;
        if (!fs::exists(from)) continue;
        fs::rename(from, target + suffix, ec);
        if (ec) fail_file(StorageErrorCode::Io, from, "cannot move aside: " + ec.message());
    }
    fs::rename(file, target, ec);
    if (ec) fail_file(StorageErrorCode::Io, file, "cannot move aside: " + ec.message());
    return target;
}

std::string writer_token(uint64_t nonce) {
    return std::to_string(::getpid()) + ":" + own_start_time() + ":" + std::to_string(nonce);
}

void register_live_writer(uint64_t nonce) {
    std::lock_guard lock(g_live_mutex);
    g_live_writers.insert(nonce);
}

void unregister_live_writer(uint64_t nonce) {
    std::lock_guard lock(g_live_mutex);
    g_live_writers.erase(nonce);
}

bool writer_alive(std::string_view token) {
    const auto first = token.find(':');
    const auto second = token.find(':', first == std::string_view::npos ? first : first + 1);
    if (first == std::string_view::npos || second == std::string_view::npos) return false;
    const std::string pid_text(token.substr(0, first));
    const std::string start(token.substr(first + 1, second - first - 1));
    const std::string nonce_text(token.substr(second + 1));
    char* end = nullptr;
    const long pid = std::strtol(pid_text.c_str(), &end, 10);
    if (pid <= 0 || *end != '\0') return false;

    if (pid == ::getpid()) {
        if (start != own_start_time()) return false;
        const uint64_t nonce = std::strtoull(nonce_text.c_str(), nullptr, 10);
        std::lock_guard lock(g_live_mutex);
        return g_live_writers.count(nonce) != 0;
    }
    char state = 0;
    std::string their_start;
    if (!read_proc_stat(pid, state, their_start)) {
        // No /proc: fall back to asking the kernel whether the pid exists.
        if (fs::exists("/proc/self/stat")) return false;
        return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
    }
    if (state == 'Z' || state == 'X') return false;
    return their_start == start;
}

uint64_t random_u64() {
    static std::mutex mutex;
    static std::random_device device;
    std::lock_guard lock(mutex);
    return (uint64_t(device()) << 32) ^ uint64_t(device());
}

}  // namespace cetus::storage::detail
