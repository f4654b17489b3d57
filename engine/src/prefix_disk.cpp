#include "prefix_disk.h"

#include "cetus/error.h"
#include "log.h"

#include <zlib.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

namespace cetus {

namespace fs = std::filesystem;

namespace cpx {

namespace {

constexpr char k_magic[4] = {'C', 'P', 'X', '1'};

uint32_t get32(const uint8_t* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t get64(const uint8_t* p) { return uint64_t(get32(p)) | uint64_t(get32(p + 4)) << 32; }
void put32(std::vector<uint8_t>& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
void put64(std::vector<uint8_t>& out, uint64_t v) {
    put32(out, uint32_t(v));
    put32(out, uint32_t(v >> 32));
}

// zlib's crc32 takes at most UINT_MAX bytes a call.
uint32_t crc_update(uint32_t crc, const void* data, uint64_t n) {
    auto p = static_cast<const Bytef*>(data);
    while (n > 0) {
        const uInt chunk = uInt(std::min<uint64_t>(n, uint64_t(1) << 30));
        crc = uint32_t(crc32(crc, p, chunk));
        p += chunk;
        n -= chunk;
    }
    return crc;
}

[[noreturn]] void bad(const std::string& what) { throw Error(ErrorCode::BadFormat, what); }

}  // namespace

uint64_t head_bytes(std::span<const uint8_t> fixed) {
    if (fixed.size() < k_fixed_head_bytes) bad("shorter than the header (" + std::to_string(fixed.size()) + " bytes)");
    if (std::memcmp(fixed.data(), k_magic, 4) != 0) bad("not a prefix file (no CPX1 magic)");
    const uint32_t identity = get32(fixed.data() + 4);
    const uint64_t n = get64(fixed.data() + 8);
    const uint32_t tag = get32(fixed.data() + 40);
    if (identity == 0 || identity > k_max_identity_bytes) bad("identity of " + std::to_string(identity) + " bytes");
    if (tag > k_max_tag_bytes) bad("tag of " + std::to_string(tag) + " bytes");
    if (n == 0 || n > k_max_prefix_tokens) bad(std::to_string(n) + " tokens");
    return k_fixed_head_bytes + identity + tag + 4 * n + 4;
}

Head parse_head(std::span<const uint8_t> head) {
    const uint64_t size = head_bytes(head);
    if (head.size() != size) bad("head of " + std::to_string(head.size()) + " bytes, " + std::to_string(size) + " expected");
    const uint8_t* p = head.data();
    if (get32(p + size - 4) != crc_update(0, p, size - 4)) bad("header checksum mismatch");
    Head h;
    const uint32_t identity = get32(p + 4), tag = get32(p + 40);
    const uint64_t n = get64(p + 8);
    h.mtp_valid = get64(p + 16);
    h.row_bytes = get64(p + 24);
    h.hidden_floats = get64(p + 32);
    if (h.mtp_valid > n) bad("MTP rows " + std::to_string(h.mtp_valid) + " past the " + std::to_string(n) + " tokens");
    // Rows of one token are at most a few MiB (V3: 61 layers x 576 values in fp32 is 140 KiB).
    constexpr uint64_t k_max_row_bytes_per_token = uint64_t(64) << 20, k_max_hidden = uint64_t(1) << 20;
    if (h.row_bytes == 0 || h.row_bytes % n != 0 || h.row_bytes / n > k_max_row_bytes_per_token)
        bad(std::to_string(h.row_bytes) + " row bytes for " + std::to_string(n) + " tokens");
    if (h.hidden_floats % n != 0 || h.hidden_floats / n > k_max_hidden)
        bad(std::to_string(h.hidden_floats) + " hidden values for " + std::to_string(n) + " tokens");
    h.identity.assign(reinterpret_cast<const char*>(p + k_fixed_head_bytes), identity);
    h.tag.assign(reinterpret_cast<const char*>(p + k_fixed_head_bytes + identity), tag);
    h.ids.resize(n);
    const uint8_t* ids = p + k_fixed_head_bytes + identity + tag;
    for (uint64_t i = 0; i < n; ++i) h.ids[i] = int32_t(get32(ids + 4 * i));
    h.body_offset = size;
    // Each term is bounded above (at most 2^24 tokens x 2^26 bytes, x 2^22), so no overflow.
    h.file_bytes = size + h.row_bytes + 4 * h.hidden_floats + 4;
    return h;
}

SavedPrefix decode_body(const Head& h, std::span<const uint8_t> body) {
    if (body.size() != h.file_bytes - h.body_offset)
        bad(std::to_string(h.body_offset + body.size()) + " bytes, the header implies " + std::to_string(h.file_bytes));
    SavedPrefix p;
    p.tag = h.tag;
    p.ids = h.ids;
    p.mtp_valid = int64_t(h.mtp_valid);
    p.rows.assign(body.begin(), body.begin() + std::ptrdiff_t(h.row_bytes));
    p.hidden.resize(h.hidden_floats);
    if (h.hidden_floats) std::memcpy(p.hidden.data(), body.data() + h.row_bytes, 4 * h.hidden_floats);
    if (get32(body.data() + body.size() - 4) != body_crc(p)) bad("checksum mismatch in the cached rows");
    return p;
}

SavedPrefix decode(std::span<const uint8_t> file, Head* head_out) {
    const uint64_t size = head_bytes(file.first(std::min<size_t>(file.size(), k_fixed_head_bytes)));
    if (file.size() < size) bad(std::to_string(file.size()) + " bytes, shorter than its header says");
    Head h = parse_head(file.first(size));
    SavedPrefix p = decode_body(h, file.subspan(size));
    if (head_out) *head_out = std::move(h);
    return p;
}

std::vector<uint8_t> encode_head(const std::string& identity, const SavedPrefix& p) {
    const uint64_t n = p.ids.size();
    if (identity.empty() || identity.size() > k_max_identity_bytes || p.tag.size() > k_max_tag_bytes || n == 0 ||
        n > k_max_prefix_tokens ||
        p.rows.empty() || p.rows.size() % n != 0 || p.hidden.size() % n != 0 || p.mtp_valid < 0 || uint64_t(p.mtp_valid) > n)
        throw Error(ErrorCode::BadRequest, "prefix file: inconsistent prefix (" + std::to_string(n) + " tokens)");
    std::vector<uint8_t> out(k_magic, k_magic + 4);
    out.reserve(k_fixed_head_bytes + identity.size() + p.tag.size() + 4 * n + 4);
    put32(out, uint32_t(identity.size()));
    put64(out, n);
    put64(out, uint64_t(p.mtp_valid));
    put64(out, p.rows.size());
    put64(out, p.hidden.size());
    put32(out, uint32_t(p.tag.size()));
    out.insert(out.end(), identity.begin(), identity.end());
    out.insert(out.end(), p.tag.begin(), p.tag.end());
    for (int32_t id : p.ids) put32(out, uint32_t(id));
    put32(out, crc_update(0, out.data(), out.size()));
    return out;
}

uint32_t body_crc(const SavedPrefix& p) {
    const uint32_t c = crc_update(0, p.rows.data(), p.rows.size());
    return crc_update(c, p.hidden.data(), 4 * uint64_t(p.hidden.size()));
}

uint64_t fnv1a(const void* data, size_t n, uint64_t h) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

}  // namespace cpx

namespace {

using cpx::fnv1a;

std::string hex16(uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

int64_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
    const auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
    return int64_t(ia - a.begin());
}

// Whether `longer` starts with all of `prefix` (equal ids included).
bool extends(const std::vector<int32_t>& longer, const std::vector<int32_t>& prefix) {
    return common_prefix(prefix, longer) == int64_t(prefix.size());
}

constexpr const char* k_extension = ".cpx";
constexpr const char* k_temporary = ".cpx.tmp-";
// At most this much waits to be written (besides the budget).
constexpr uint64_t k_max_queued_bytes = uint64_t(1) << 30;

bool is_prefix_file(const fs::path& p) {
    const std::string name = p.filename().string();
    return name.size() == 16 + 1 + 16 + 4 && name.ends_with(k_extension) && name[16] == '-';
}
bool is_temporary_file(const fs::path& p) { return p.filename().string().find(k_temporary) != std::string::npos; }

// Marks a file used: its modification time, to the clock's full resolution (the
// least recently used go first, and a file system's own stamps can be coarser).
bool touch(const fs::path& p) {
    std::error_code ec;
    fs::last_write_time(p, fs::file_time_type::clock::now(), ec);
    return !ec;
}

// Reads a file's head; throws Error(BadFormat) for its contents, Error(Io) when unreadable.
cpx::Head read_head(const fs::path& path, std::ifstream& in) {
    std::error_code ec;
    const uint64_t actual = fs::file_size(path, ec);
    if (ec) throw Error(ErrorCode::Io, ec.message());
    in.open(path, std::ios::binary);
    if (!in) throw Error(ErrorCode::Io, "cannot open it");
    std::vector<uint8_t> head(cpx::k_fixed_head_bytes);
    if (actual < head.size() || !in.read(reinterpret_cast<char*>(head.data()), std::streamsize(head.size())))
        throw Error(ErrorCode::BadFormat, "shorter than the header");
    const uint64_t size = cpx::head_bytes(head);
    if (size > actual) throw Error(ErrorCode::BadFormat, "shorter than its header says");  // before reserving
    head.resize(size);
    if (!in.read(reinterpret_cast<char*>(head.data() + cpx::k_fixed_head_bytes), std::streamsize(size - cpx::k_fixed_head_bytes)))
        throw Error(ErrorCode::BadFormat, "shorter than its header says");
    cpx::Head h = cpx::parse_head(head);
    if (actual != h.file_bytes)
        throw Error(ErrorCode::BadFormat, std::to_string(actual) + " bytes, the header implies " + std::to_string(h.file_bytes));
    return h;
}

std::vector<fs::path> list(const fs::path& dir, bool (*keep)(const fs::path&)) {
    std::vector<fs::path> out;
    std::error_code ec;
    fs::directory_iterator it(dir, ec);
    if (ec) throw Error(ErrorCode::Io, "prefix cache folder " + dir.string() + ": " + ec.message());
    for (; !ec && it != fs::directory_iterator(); it.increment(ec))
        if (keep(it->path())) out.push_back(it->path());
    return out;
}

// Writes a whole file and flushes it to the disk; throws Error(Io) with the reason.
void write_file(const fs::path& path, std::initializer_list<std::span<const uint8_t>> parts) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw Error(ErrorCode::Io, "cannot create " + path.string() + ": " + std::strerror(errno));
    auto fail = [&](const char* what) {
        const int err = errno;
        ::close(fd);
        throw Error(ErrorCode::Io, std::string("cannot ") + what + " " + path.string() + ": " + std::strerror(err));
    };
    for (const auto& part : parts) {
        const uint8_t* p = part.data();
        size_t left = part.size();
        while (left > 0) {
            const ssize_t n = ::write(fd, p, std::min<size_t>(left, size_t(1) << 30));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) fail("write");
            p += n;
            left -= size_t(n);
        }
    }
    if (::fsync(fd) != 0) fail("flush");
    if (::close(fd) != 0) throw Error(ErrorCode::Io, "cannot close " + path.string() + ": " + std::strerror(errno));
}

}  // namespace

std::string PrefixDisk::file_name(const std::string& identity, const std::vector<int32_t>& ids) {
    return hex16(fnv1a(identity.data(), identity.size())) + "-" + hex16(fnv1a(ids.data(), ids.size() * sizeof(int32_t))) +
           k_extension;
}

PrefixDisk::PrefixDisk(fs::path dir, std::string identity, uint64_t budget_bytes, uint64_t row_bytes_per_token,
                       int64_t hidden_per_token)
    : m_dir(std::move(dir)), m_identity(std::move(identity)),
      m_prefix(hex16(fnv1a(m_identity.data(), m_identity.size())) + "-"), m_budget(budget_bytes),
      m_row_bytes_per_token(row_bytes_per_token), m_hidden_per_token(hidden_per_token) {
    std::error_code ec;
    fs::create_directories(m_dir, ec);
    if (ec || !fs::is_directory(m_dir, ec))
        throw Error(ErrorCode::Io, "prefix cache folder " + m_dir.string() + ": " + (ec ? ec.message() : "not a folder"));
    // A write cut short (a crash, a full disk) leaves a temporary file: gone after an hour.
    const auto now = fs::file_time_type::clock::now();
    for (const auto& path : list(m_dir, is_temporary_file)) {
        const auto t = fs::last_write_time(path, ec);
        if (!ec && now - t > std::chrono::hours(1)) fs::remove(path, ec);
    }
    scan(false);
    evict_until(m_budget);  // a smaller budget than the folder's last one
    if (!m_entries.empty())
        engine_log().info("prefix cache {}: {} conversation prefixes for this model, {:.1f} MiB", m_dir.string(),
                          m_entries.size(), double(bytes()) / double(1 << 20));
    m_writer = std::thread([this] { writer_loop(); });
}

PrefixDisk::~PrefixDisk() {
    {
        std::unique_lock lock(m_mutex);
        m_cv.wait(lock, [&] { return m_queue.empty() && !m_writing; });
        m_stop = true;
    }
    m_cv.notify_all();
    if (m_writer.joinable()) m_writer.join();
}

void PrefixDisk::scan(bool only_new) {
    std::error_code ec;
    const auto dir_time = fs::last_write_time(m_dir, ec);
    std::vector<fs::path> candidates;
    for (const auto& path : list(m_dir, is_prefix_file))
        if (path.filename().string().starts_with(m_prefix)) candidates.push_back(path);
    std::vector<Entry> found;
    std::vector<fs::path> damaged;
    {
        std::lock_guard lock(m_mutex);
        m_dir_time = dir_time;
        const std::set<fs::path> listed(candidates.begin(), candidates.end());
        // Files gone (another engine's eviction) leave the list (not one the writer has
        // added since the folder was listed); known ones are not read again.
        std::erase_if(m_entries, [&](const Entry& e) {
            std::error_code e2;
            return !listed.count(e.path) && !fs::exists(e.path, e2);
        });
        if (only_new) {
            std::set<fs::path> known;
            for (const auto& e : m_entries) known.insert(e.path);
            std::erase_if(candidates, [&](const fs::path& p) { return known.count(p) > 0; });
        }
    }
    for (const auto& path : candidates) {
        try {
            std::ifstream in;
            cpx::Head h = read_head(path, in);
            if (h.identity != m_identity) continue;  // another engine's, with a colliding name
            const uint64_t n = h.ids.size();
            if (h.row_bytes != n * m_row_bytes_per_token || h.hidden_floats != n * uint64_t(m_hidden_per_token))
                throw Error(ErrorCode::BadFormat, "rows of another shape than this model's");
            found.push_back({path, std::move(h.ids), h.file_bytes});
        } catch (const Error& e) {
            std::error_code ec;
            if (e.code() == ErrorCode::Io && !fs::exists(path, ec)) continue;  // removed meanwhile
            engine_log().warn("prefix cache file {}: {}; removed", path.string(), e.what());
            damaged.push_back(path);
        } catch (const std::exception& e) {  // out of memory: leave it for another time
            engine_log().warn("prefix cache file {}: {}", path.string(), e.what());
        }
    }
    std::lock_guard lock(m_mutex);
    for (const auto& p : damaged) remove_entry(p);
    // One pass (a folder of thousands of files was quadratic here).
    std::set<fs::path> read;
    for (const auto& e : found) read.insert(e.path);
    std::erase_if(m_entries, [&](const Entry& x) { return read.count(x.path) > 0; });
    for (auto& e : found)
        if (fs::exists(e.path, ec)) m_entries.push_back(std::move(e));  // not evicted while it was read
}

bool PrefixDisk::touch_stored(std::span<const int32_t> ids) {
    for (auto it = m_entries.begin(); it != m_entries.end(); ++it)
        if (std::equal(it->ids.begin(), it->ids.end(), ids.begin(), ids.end())) {
            if (touch(it->path)) return true;
            m_entries.erase(it);  // gone (another engine's eviction): to be written again
            return false;
        }
    return false;
}

uint64_t PrefixDisk::file_bytes(size_t n_ids, size_t tag_bytes, uint64_t payload) const {
    return cpx::k_fixed_head_bytes + m_identity.size() + tag_bytes + 4 * uint64_t(n_ids) + 4 + payload + 4;
}

// What waits to be written and the write under way keep to this together.
uint64_t PrefixDisk::queue_limit() const { return std::min(m_budget, k_max_queued_bytes); }

// A file larger than the budget is never written. Nothing being written: a prefix
// waits alone if need be, whatever its size (one copy of the rows). Behind a write, the
// queued prefixes do not count: the oldest give way to a newer one in store() (the
// folder's least recently used would go first anyway). Refused (Behind) only when the
// write under way leaves no room within queue_limit() for this one.
PrefixDisk::Room PrefixDisk::room_for(const std::vector<int32_t>& ids, size_t tag_bytes, uint64_t bytes) const {
    if (file_bytes(ids.size(), tag_bytes, bytes) > m_budget) return Room::OverBudget;
    if (!m_in_flight) return Room::Yes;
    return m_in_flight->bytes() + bytes <= queue_limit() ? Room::Yes : Room::Behind;
}

bool PrefixDisk::would_queue(const std::vector<int32_t>& ids, size_t tag_bytes, uint64_t bytes) const {
    std::lock_guard lock(m_mutex);
    return room_for(ids, tag_bytes, bytes) == Room::Yes;
}

bool PrefixDisk::holds(std::span<const int32_t> ids) {
    auto same = [&](const std::vector<int32_t>& x) { return std::equal(x.begin(), x.end(), ids.begin(), ids.end()); };
    std::lock_guard lock(m_mutex);
    if (touch_stored(ids) || (m_in_flight && same(m_in_flight->ids))) return true;
    return std::any_of(m_queue.begin(), m_queue.end(), [&](const auto& q) { return same(q->ids); });
}

bool PrefixDisk::store(std::shared_ptr<const SavedPrefix> p) {
    if (!p || p->ids.empty()) return false;
    {
        std::lock_guard lock(m_mutex);
        if (touch_stored(p->ids)) return true;
        if (m_in_flight && m_in_flight->ids == p->ids) return true;  // being written (it is new when done)
        switch (room_for(p->ids, p->tag.size(), p->bytes())) {
        case Room::OverBudget:
            engine_log().info("prefix cache {}: a prefix of {} tokens is larger than the budget; not written",
                              m_dir.string(), p->ids.size());
            return false;
        case Room::Behind:
            engine_log().warn("prefix cache {}: the disk is behind; a prefix of {} tokens is not written", m_dir.string(),
                              p->ids.size());
            return false;
        case Room::Yes:
            break;
        }
        // A queued prefix that this one extends would be replaced by it at once.
        std::erase_if(m_queue, [&](const auto& q) {
            if (!extends(p->ids, q->ids)) return false;
            m_queued_bytes -= q->bytes();
            return true;
        });
        // Over the limit behind a slow disk: the oldest queued prefixes give way.
        const uint64_t writing = m_in_flight ? m_in_flight->bytes() : 0;
        while (!m_queue.empty() && m_queued_bytes + writing + p->bytes() > queue_limit()) {
            engine_log().warn("prefix cache {}: the disk is behind; a queued prefix of {} tokens gives way to a newer one "
                              "and is not written", m_dir.string(), m_queue.front()->ids.size());
            m_queued_bytes -= m_queue.front()->bytes();
            m_queue.pop_front();
        }
        m_queued_bytes += p->bytes();
        m_queue.push_back(std::move(p));
    }
    m_cv.notify_all();
    return true;
}

void PrefixDisk::flush() {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return m_queue.empty() && !m_writing; });
}

void PrefixDisk::writer_loop() {
    std::unique_lock lock(m_mutex);
    for (;;) {
        m_cv.wait(lock, [&] { return m_stop || !m_queue.empty(); });
        if (m_queue.empty()) return;  // m_stop
        auto p = std::move(m_queue.front());
        m_queue.pop_front();
        m_queued_bytes -= p->bytes();
        m_writing = true;
        m_in_flight = p;
        lock.unlock();
        try {
            write_one(*p);
        } catch (const std::exception& e) {
            engine_log().warn("prefix cache {}: a prefix of {} tokens was not written: {}", m_dir.string(), p->ids.size(), e.what());
        }
        p.reset();
        lock.lock();
        m_in_flight.reset();
        m_writing = false;
        m_cv.notify_all();
    }
}

void PrefixDisk::write_one(const SavedPrefix& p) {
    const std::vector<uint8_t> head = cpx::encode_head(m_identity, p);
    const uint64_t total = head.size() + p.bytes() + 4;
    if (total > m_budget) return;  // store() refuses these; a smaller budget since is not possible
    const fs::path final_path = m_dir / file_name(m_identity, p.ids);
    // Room for it, not counting the files it replaces: one of the same name, and those
    // whose ids it extends (an earlier file of the same conversation).
    std::vector<fs::path> replaced;
    {
        std::lock_guard lock(m_mutex);
        replaced = superseded_by(p.ids, final_path);
    }
    replaced.push_back(final_path);
    evict_until(m_budget - total, replaced);
    // Unique across the engines of this process and of others on the folder.
    static std::atomic<uint64_t> counter{0};
    fs::path tmp = final_path;
    tmp += std::string(".tmp-") + std::to_string(::getpid()) + "-" + std::to_string(++counter);
    const uint32_t crc = cpx::body_crc(p);
    const uint8_t crc_bytes[4] = {uint8_t(crc), uint8_t(crc >> 8), uint8_t(crc >> 16), uint8_t(crc >> 24)};
    std::error_code ec;
    try {
        write_file(tmp, {std::span<const uint8_t>(head), std::span<const uint8_t>(p.rows),
                         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(p.hidden.data()), 4 * p.hidden.size()),
                         std::span<const uint8_t>(crc_bytes, 4)});
    } catch (const Error&) {
        fs::remove(tmp, ec);
        throw;
    }
    std::lock_guard lock(m_mutex);
    fs::rename(tmp, final_path, ec);
    if (ec) {
        const std::string why = ec.message();
        fs::remove(tmp, ec);
        throw Error(ErrorCode::Io, "cannot rename into " + final_path.string() + ": " + why);
    }
    touch(final_path);
    // Files whose ids this one extends are superseded by it; one with the same name is replaced.
    for (const auto& s : superseded_by(p.ids, final_path)) remove_entry(s);
    std::erase_if(m_entries, [&](const Entry& e) { return e.path == final_path; });
    m_entries.push_back({final_path, p.ids, total});
}

std::vector<fs::path> PrefixDisk::superseded_by(const std::vector<int32_t>& ids, const fs::path& own) const {
    std::vector<fs::path> out;
    for (const auto& e : m_entries)
        if (e.path != own && extends(ids, e.ids)) out.push_back(e.path);
    return out;
}

void PrefixDisk::remove_entry(const fs::path& path) {
    std::error_code ec;
    fs::remove(path, ec);
    std::erase_if(m_entries, [&](const Entry& e) { return e.path == path; });
}

void PrefixDisk::evict_until(uint64_t limit, const std::vector<fs::path>& replaced) {
    // Every engine's prefix files in the folder share the budget; the least recently
    // used go first (ties by name, so that the order is the same for every engine).
    struct File {
        fs::path path;
        uint64_t bytes;
        fs::file_time_type used;
    };
    std::vector<File> all;
    uint64_t total = 0;
    for (const auto& path : list(m_dir, is_prefix_file)) {
        if (std::find(replaced.begin(), replaced.end(), path) != replaced.end()) continue;
        std::error_code size_ec, time_ec;
        const uint64_t size = fs::file_size(path, size_ec);
        const auto t = fs::last_write_time(path, time_ec);
        if (size_ec || time_ec) continue;
        all.push_back({path, size, t});
        total += size;
    }
    if (total <= limit) return;
    std::sort(all.begin(), all.end(), [](const File& a, const File& b) {
        return a.used != b.used ? a.used < b.used : a.path < b.path;
    });
    std::lock_guard lock(m_mutex);
    for (const auto& f : all) {
        if (total <= limit) break;
        remove_entry(f.path);
        total -= f.bytes;
    }
}

std::optional<SavedPrefix> PrefixDisk::take(const std::vector<int32_t>& ids, int64_t at_least, int64_t capacity) {
    bool rescanned = false;
    for (;;) {
        Entry best;
        int64_t best_len = at_least;
        {
            std::lock_guard lock(m_mutex);
            for (const auto& e : m_entries) {
                if (int64_t(e.ids.size()) > capacity) continue;
                if (const int64_t q = common_prefix(e.ids, ids); q > best_len) {
                    best = e;
                    best_len = q;
                }
            }
        }
        if (best.path.empty()) {
            // Files another engine wrote since (a model loaded again, a server beside the app):
            // looked for when the folder changed since it was read.
            if (rescanned) return std::nullopt;
            rescanned = true;
            std::error_code ec;
            const auto dir_time = fs::last_write_time(m_dir, ec);
            {
                std::lock_guard lock(m_mutex);
                if (!ec && dir_time == m_dir_time) return std::nullopt;
            }
            try {
                scan(true);
            } catch (const Error& e) {
                engine_log().warn("prefix cache {}: {}", m_dir.string(), e.what());
                return std::nullopt;
            }
            continue;
        }
        try {
            std::ifstream in;
            const cpx::Head h = read_head(best.path, in);
            if (h.identity != m_identity || h.ids != best.ids)
                throw Error(ErrorCode::BadFormat, "changed since the folder was read");
            if (h.row_bytes != h.ids.size() * m_row_bytes_per_token ||
                h.hidden_floats != h.ids.size() * uint64_t(m_hidden_per_token))
                throw Error(ErrorCode::BadFormat, "rows of another shape than this model's");
            SavedPrefix p;
            p.tag = h.tag;
            p.ids = h.ids;
            p.mtp_valid = int64_t(h.mtp_valid);
            p.rows.resize(h.row_bytes);
            p.hidden.resize(h.hidden_floats);
            uint8_t crc[4];
            in.read(reinterpret_cast<char*>(p.rows.data()), std::streamsize(p.rows.size()));
            in.read(reinterpret_cast<char*>(p.hidden.data()), std::streamsize(4 * p.hidden.size()));
            in.read(reinterpret_cast<char*>(crc), 4);
            if (!in) throw Error(ErrorCode::BadFormat, "shorter than its header says");
            if (cpx::body_crc(p) != (uint32_t(crc[0]) | uint32_t(crc[1]) << 8 | uint32_t(crc[2]) << 16 | uint32_t(crc[3]) << 24))
                throw Error(ErrorCode::BadFormat, "checksum mismatch in the cached rows");
            touch(best.path);
            return p;
        } catch (const std::bad_alloc&) {  // the file may be fine: leave it
            engine_log().warn("prefix cache file {}: not enough memory to read it back", best.path.string());
            return std::nullopt;
        } catch (const std::exception& e) {
            std::error_code ec;
            std::lock_guard lock(m_mutex);
            if (fs::exists(best.path, ec))  // not merely evicted meanwhile
                engine_log().warn("prefix cache file {}: {}; removed", best.path.string(), e.what());
            remove_entry(best.path);
        }
    }
}

void PrefixDisk::clear(bool every_identity) {
    {
        std::unique_lock lock(m_mutex);
        m_queue.clear();
        m_queued_bytes = 0;
        m_cv.wait(lock, [&] { return !m_writing; });
        m_entries.clear();
    }
    if (every_identity) {
        remove_all(m_dir);
        return;
    }
    // This identity's names, also those another engine wrote since the folder was read.
    std::error_code ec;
    for (const auto& path : list(m_dir, is_prefix_file))
        if (path.filename().string().starts_with(m_prefix)) fs::remove(path, ec);
}

void PrefixDisk::remove_all(const fs::path& dir) {
    std::error_code ec;
    if (!fs::exists(dir, ec)) return;
    for (const auto& p : list(dir, [](const fs::path& p) { return is_prefix_file(p) || is_temporary_file(p); }))
        fs::remove(p, ec);
}

size_t PrefixDisk::remove_tagged(const fs::path& dir, const std::string& tag) {
    std::error_code ec;
    if (tag.empty() || !fs::exists(dir, ec)) return 0;
    size_t removed = 0;
    for (const auto& path : list(dir, is_prefix_file)) {
        try {
            std::ifstream in;
            if (read_head(path, in).tag != tag) continue;
        } catch (const Error&) {  // a damaged file: its own engine removes it
            continue;
        }
        if (fs::remove(path, ec)) ++removed;
    }
    return removed;
}

std::vector<PrefixDisk::FileInfo> PrefixDisk::describe(const fs::path& dir) {
    std::vector<FileInfo> out;
    std::vector<fs::file_time_type> times;
    for (const auto& path : list(dir, is_prefix_file)) {
        FileInfo f;
        f.path = path;
        std::error_code ec;
        f.bytes = fs::file_size(path, ec);
        if (ec) continue;  // gone meanwhile
        const auto t = fs::last_write_time(path, ec);
        if (ec) continue;
        f.last_used_s = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::file_clock::to_sys(t).time_since_epoch()).count();
        try {
            std::ifstream in;
            cpx::Head h = read_head(path, in);
            f.identity = std::move(h.identity);
            f.tag = std::move(h.tag);
            f.tokens = int64_t(h.ids.size());
        } catch (const std::exception& e) {
            f.problem = e.what();
        }
        out.push_back(std::move(f));
        times.push_back(t);
    }
    std::vector<size_t> order(out.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return times[a] != times[b] ? times[a] < times[b] : out[a].path < out[b].path;
    });
    std::vector<FileInfo> sorted;
    for (size_t k : order) sorted.push_back(std::move(out[k]));
    return sorted;
}

void PrefixDisk::forget(const std::string& tag) {
    if (tag.empty()) return;
    {
        std::unique_lock lock(m_mutex);
        std::erase_if(m_queue, [&](const auto& p) {
            if (p->tag != tag) return false;
            m_queued_bytes -= p->bytes();
            return true;
        });
        m_cv.wait(lock, [&] { return !m_writing; });
    }
    remove_tagged(m_dir, tag);
    scan(true);  // drops the entries whose files went
}

size_t PrefixDisk::files() const {
    std::lock_guard lock(m_mutex);
    return m_entries.size();
}

uint64_t PrefixDisk::bytes() const {
    std::lock_guard lock(m_mutex);
    uint64_t total = 0;
    for (const auto& e : m_entries) total += e.bytes;
    return total;
}

}  // namespace cetus
