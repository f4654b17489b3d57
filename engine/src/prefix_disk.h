// The prefix store's disk tier: conversations' latent-cache rows kept in files, so
// a conversation opened again after a restart goes on without a new prefill.
//
// With MLA a token's rows are small (V2-Lite: about 62 KiB in fp32 over 27 layers;
// standard attention would need about 16 times that), so keeping them on disk is
// cheap, and reading them back is much faster than recomputing them. A file is used
// only by the engine that could have written it: same model files (names, sizes,
// modification times, config), weight types, backend and device, cache precision
// and Cetus version (the "identity", stored whole in each file and compared byte
// for byte). Anything else, and any file that fails its checks, is a miss: the
// request prefills as usual, and a damaged file is removed with a log line.
// Each file also carries its conversation's tag (GenerateRequest::cache_tag), by
// which a deleted conversation's files are found without a tokenizer or a model.
//
// File format ("CPX1", little-endian), one prefix per file:
//   0   char[4] "CPX1"
//   4   u32 identity bytes I (1 .. k_max_identity_bytes)
//   8   u64 tokens n (1 .. k_max_prefix_tokens)
//   16  u64 MTP rows valid (<= n)
//   24  u64 row bytes R (a multiple of n: Backend::save_rows of n positions)
//   32  u64 hidden floats F (0, or n * hidden size: the MTP module's inputs)
//   40  u32 tag bytes T (0 .. k_max_tag_bytes)
//   44  identity (I bytes), tag (T bytes), token ids (n x i32)
//   ..  u32 CRC-32 of everything before it (the head: a scan trusts ids after this)
//   ..  rows (R bytes), hidden (F x f32)
//   end u32 CRC-32 of the rows and hidden
// The file's size must be exactly what the header implies.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace cetus {

// A conversation's prefix taken out of the cache: its ids, rows and hidden states.
struct SavedPrefix {
    std::string tag;  // the conversation it belongs to (GenerateRequest::cache_tag); may be empty
    std::vector<int32_t> ids;
    int64_t mtp_valid = 0;
    std::vector<uint8_t> rows;  // Backend::save_rows of ids.size() positions
    std::vector<float> hidden;  // [ids.size(), H] when the model has MTP layers
    uint64_t bytes() const { return rows.size() + hidden.size() * sizeof(float); }
};

namespace cpx {

constexpr uint64_t k_fixed_head_bytes = 44;
constexpr uint32_t k_max_identity_bytes = 1 << 16;
constexpr uint32_t k_max_tag_bytes = 4096;
constexpr uint64_t k_max_prefix_tokens = uint64_t(1) << 24;

// What a file's head says. body_offset: where the rows start; file_bytes: the size
// the whole file must have.
struct Head {
    std::string identity, tag;
    std::vector<int32_t> ids;
    uint64_t mtp_valid = 0, row_bytes = 0, hidden_floats = 0;
    uint64_t body_offset = 0, file_bytes = 0;
};

// Bytes of the whole head (fixed part, identity, ids, CRC) from the first
// k_fixed_head_bytes; throws Error(BadFormat) naming the problem.
uint64_t head_bytes(std::span<const uint8_t> fixed);
// Parses and checks a head of head_bytes() bytes (CRC, limits, sizes). Throws Error(BadFormat).
Head parse_head(std::span<const uint8_t> head);
// Checks the rows and hidden states of a parsed head against the body's CRC (the
// span is the rest of the file after the head) and copies them out. Throws Error(BadFormat).
SavedPrefix decode_body(const Head& head, std::span<const uint8_t> body);
// The whole file in memory (the fuzz target and tests): parse_head + decode_body.
SavedPrefix decode(std::span<const uint8_t> file, Head* head_out = nullptr);
// FNV-1a over bytes, continuing from h: the files' names, and the identity's samples
// of model files (engine.cpp).
constexpr uint64_t k_fnv_offset = 14695981039346656037ull;
uint64_t fnv1a(const void* data, size_t n, uint64_t h = k_fnv_offset);
// The file's bytes for a prefix (the head and body CRCs computed here).
std::vector<uint8_t> encode_head(const std::string& identity, const SavedPrefix& p);
uint32_t body_crc(const SavedPrefix& p);

}  // namespace cpx

// The files of one directory that belong to one identity, with a byte budget for
// the whole directory (every engine's files: least recently used go first, by
// modification time, which each use sets). Writes run on a thread of their own, so a
// request never waits for the disk to be written; a read (a restored prefix) runs on
// the caller's thread, instead of a prefill. Several engines may share a folder: each
// looks for files it has not seen when a request finds none.
class PrefixDisk {
public:
    // Scans dir (created when missing) for this identity's files. Throws Error(Io)
    // when the directory cannot be created or listed.
    PrefixDisk(std::filesystem::path dir, std::string identity, uint64_t budget_bytes,
               uint64_t row_bytes_per_token, int64_t hidden_per_token);
    ~PrefixDisk();  // finishes the queued writes
    PrefixDisk(const PrefixDisk&) = delete;
    PrefixDisk& operator=(const PrefixDisk&) = delete;

    // Queues p to be written (unless a file with the same ids is there: it is marked
    // used instead; or it is being written). Files whose ids p extends are removed once
    // it is written, and queued prefixes it extends are dropped. At most min(budget,
    // 1 GiB) waits in the queue and is being written, except that a prefix may wait
    // alone whatever its size: the oldest queued prefixes make room for p (with a
    // warning), and p is refused only when the write under way leaves it none. A file
    // larger than the budget is not written. Returns whether p is on disk, being
    // written or queued (false: refused).
    bool store(std::shared_ptr<const SavedPrefix> p);
    // Whether store() would take a prefix with these ids, tag length and bytes
    // (SavedPrefix::bytes) now, so that one need not be copied out of the cache for nothing.
    bool would_queue(const std::vector<int32_t>& ids, size_t tag_bytes, uint64_t bytes) const;
    // Whether a file (then marked used), a queued write or the write under way holds
    // exactly these ids (as far as this engine knows: another's eviction shows at the
    // next rescan, or when the file is marked used).
    bool holds(std::span<const int32_t> ids);
    // Waits for the queued writes.
    void flush();
    // The longest common prefix with ids among this identity's files, if longer than
    // at_least, read back and checked; nullopt when none is (a file that fails its
    // checks is removed, with a warning naming it, and the next best is tried).
    std::optional<SavedPrefix> take(const std::vector<int32_t>& ids, int64_t at_least, int64_t capacity);
    // Removes every file of this identity, or with every_identity every prefix file
    // in the folder (other models' and precisions' too, and unfinished writes).
    void clear(bool every_identity = false);
    // Removes every prefix file in the folder (any identity) with this tag, and drops
    // such queued writes: a deleted conversation's rows (its token ids are its text)
    // do not stay on disk. Nothing for an empty tag.
    void forget(const std::string& tag);

    size_t files() const;
    uint64_t bytes() const;
    const std::filesystem::path& dir() const { return m_dir; }

    // Removes every prefix file of a folder (any identity; unfinished writes too; nothing
    // else). Throws Error(Io) when the folder exists but cannot be listed.
    static void remove_all(const std::filesystem::path& dir);
    // Removes every prefix file of a folder whose tag is this one (not empty); the
    // number removed. Throws Error(Io) when the folder exists but cannot be listed.
    static size_t remove_tagged(const std::filesystem::path& dir, const std::string& tag);
    // Every prefix file of a folder (heads only), least recently used first.
    struct FileInfo {
        std::filesystem::path path;
        std::string identity, tag, problem;  // problem: why the head does not read; else empty
        int64_t tokens = 0, last_used_s = 0;
        uint64_t bytes = 0;
    };
    static std::vector<FileInfo> describe(const std::filesystem::path& dir);
    // File name of a prefix: hash of the identity, hash of the ids.
    static std::string file_name(const std::string& identity, const std::vector<int32_t>& ids);

private:
    struct Entry {
        std::filesystem::path path;
        std::vector<int32_t> ids;
        uint64_t bytes = 0;
    };
    void scan(bool only_new);  // m_mutex not held; reads the files it has not seen
    enum class Room { Yes, OverBudget, Behind };
    Room room_for(const std::vector<int32_t>& ids, size_t tag_bytes, uint64_t bytes) const;  // m_mutex held
    uint64_t queue_limit() const;  // min(budget, 1 GiB)
    uint64_t file_bytes(size_t n_ids, size_t tag_bytes, uint64_t payload) const;  // a file's whole size
    // m_mutex held: this identity's files whose ids `ids` extends, the file `own` aside.
    std::vector<std::filesystem::path> superseded_by(const std::vector<int32_t>& ids,
                                                     const std::filesystem::path& own) const;
    void writer_loop();
    void write_one(const SavedPrefix& p);
    // m_mutex not held; replaced: files about to be replaced, left out of the count
    void evict_until(uint64_t limit, const std::vector<std::filesystem::path>& replaced = {});
    void remove_entry(const std::filesystem::path& path);  // m_mutex held
    bool touch_stored(std::span<const int32_t> ids);  // m_mutex held; drops an entry whose file went

    const std::filesystem::path m_dir;
    const std::string m_identity, m_prefix;  // m_prefix: the hash part of this identity's names
    const uint64_t m_budget, m_row_bytes_per_token;
    const int64_t m_hidden_per_token;
    mutable std::mutex m_mutex;
    std::condition_variable m_cv;
    std::vector<Entry> m_entries;  // this identity's files
    std::deque<std::shared_ptr<const SavedPrefix>> m_queue;
    uint64_t m_queued_bytes = 0;
    bool m_writing = false, m_stop = false;
    std::shared_ptr<const SavedPrefix> m_in_flight;  // the prefix being written, while m_writing
    std::filesystem::file_time_type m_dir_time;  // the folder's modification time when last read
    std::thread m_writer;
};

}  // namespace cetus
