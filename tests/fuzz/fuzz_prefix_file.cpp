// libFuzzer target for the prefix store's files on disk (engine/src/prefix_disk.h,
// "CPX1"), which the engine reads from a folder anyone could write to. Each input is
// tried two ways:
//   1. as a file, as it is (almost always refused by the head's CRC);
//   2. with both CRC fields made right, so that mutations reach the size, limit and
//      consistency checks.
// Error(BadFormat) is the expected answer to a bad file; a decoded prefix must be
// self-consistent and encode back to the same bytes. Anything else is a finding.
#include "cetus/error.h"
#include "prefix_disk.h"

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

void require(bool ok) {
    if (!ok) __builtin_trap();
}

void put32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}

void check(const std::vector<uint8_t>& file) {
    cetus::cpx::Head h;
    cetus::SavedPrefix p;
    try {
        p = cetus::cpx::decode(file, &h);
    } catch (const cetus::Error& e) {
        require(e.code() == cetus::ErrorCode::BadFormat);
        return;
    }
    require(!p.ids.empty() && p.ids == h.ids && p.rows.size() == h.row_bytes && p.hidden.size() == h.hidden_floats);
    require(p.rows.size() % p.ids.size() == 0 && p.hidden.size() % p.ids.size() == 0);
    require(p.mtp_valid >= 0 && uint64_t(p.mtp_valid) <= p.ids.size() && h.file_bytes == file.size());
    std::vector<uint8_t> again = cetus::cpx::encode_head(h.identity, p);
    require(again.size() == h.body_offset && std::memcmp(again.data(), file.data(), again.size()) == 0);
    require(cetus::cpx::body_crc(p) == (uint32_t(file[file.size() - 4]) | uint32_t(file[file.size() - 3]) << 8 |
                                        uint32_t(file[file.size() - 2]) << 16 | uint32_t(file[file.size() - 1]) << 24));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::vector<uint8_t> file(data, data + size);
    check(file);
    if (size < cetus::cpx::k_fixed_head_bytes + 4) return 0;
    uint64_t head = 0;
    try {
        head = cetus::cpx::head_bytes(std::span<const uint8_t>(file.data(), cetus::cpx::k_fixed_head_bytes));
    } catch (const cetus::Error&) {
        return 0;
    }
    if (head > size) return 0;
    put32(file.data() + head - 4, uint32_t(crc32(0, file.data(), uInt(head - 4))));
    if (size >= head + 4)
        put32(file.data() + size - 4, uint32_t(crc32(0, file.data() + head, uInt(size - head - 4))));
    check(file);
    return 0;
}
