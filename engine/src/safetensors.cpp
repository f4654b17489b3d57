// safetensors parsing. Every number from the file is checked before it is used
// to index memory; products of dimensions use overflow-checked arithmetic.
#include "safetensors.h"

#include "cetus/error.h"
#include "json_util.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace cetus {

MappedFile::MappedFile(const std::filesystem::path& path) : m_path(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(ErrorCode::Io, path.string() + ": cannot open: " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error(ErrorCode::Io, path.string() + ": not a regular file");
    }
    m_size = size_t(st.st_size);
    if (m_size > 0) {
        void* p = ::mmap(nullptr, m_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int err = errno;
            ::close(fd);
            throw Error(ErrorCode::Io, path.string() + ": cannot map: " + std::strerror(err));
        }
        m_data = static_cast<const std::byte*>(p);
    }
    ::close(fd);
}

MappedFile::~MappedFile() {
    if (m_data) ::munmap(const_cast<std::byte*>(m_data), m_size);
}

int64_t TensorInfo::n_elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

std::string TensorInfo::shape_string() const {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

namespace {

[[noreturn]] void bad(const std::string& source, const std::string& what) {
    throw Error(ErrorCode::BadFormat, source + ": " + what);
}

uint64_t read_u64(const nlohmann::json& v, const std::string& source, const std::string& what) {
    if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0))
        bad(source, what + " must be a non-negative integer");
    return v.get<uint64_t>();
}

}  // namespace

std::vector<TensorInfo> parse_safetensors(const std::byte* data, size_t size, const std::string& source) {
    if (size < 8) bad(source, "truncated: " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | uint64_t(std::to_integer<uint8_t>(data[i]));
    if (n > k_max_safetensors_header)
        bad(source, "header length " + std::to_string(n) + " exceeds the 100 MB limit");
    if (n > size - 8)
        bad(source, "truncated: header length " + std::to_string(n) + " runs past the end of the file (" +
                        std::to_string(size) + " bytes)");
    if (n < 2) bad(source, "header is empty");
    std::string text(reinterpret_cast<const char*>(data + 8), size_t(n));
    nlohmann::json header = parse_json_strict(text, source + " (header)");
    if (!header.is_object()) bad(source, "header must be a JSON object");

    const std::byte* base = data + 8 + n;
    const uint64_t data_size = size - 8 - n;
    std::vector<TensorInfo> tensors;
    tensors.reserve(header.size());
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (auto it = header.begin(); it != header.end(); ++it) {
        const std::string& name = it.key();
        if (name == "__metadata__") {
            if (!it->is_object()) bad(source, "__metadata__ must be an object");
            for (auto m = it->begin(); m != it->end(); ++m)
                if (!m->is_string()) bad(source, "__metadata__ value \"" + m.key() + "\" must be a string");
            continue;
        }
        const std::string where = "tensor \"" + name + "\"";
        const auto& e = *it;
        if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
            bad(source, where + " needs dtype, shape and data_offsets");
        if (!e["dtype"].is_string()) bad(source, where + ": dtype must be a string");
        auto dtype = dtype_from_name(e["dtype"].get<std::string>());
        if (!dtype) bad(source, where + ": unknown dtype \"" + e["dtype"].get<std::string>() + "\"");
        const auto& shape = e["shape"];
        if (!shape.is_array() || shape.size() > 8) bad(source, where + ": shape must be a list of at most 8 dimensions");
        TensorInfo t;
        t.name = name;
        t.dtype = *dtype;
        t.file = source;
        uint64_t count = 1;
        for (const auto& d : shape) {
            uint64_t dim = read_u64(d, source, where + ": dimension");
            if (dim > (uint64_t(1) << 53)) bad(source, where + ": dimension " + std::to_string(dim) + " is too large");
            if (__builtin_mul_overflow(count, dim, &count))
                bad(source, where + ": element count of shape overflows");
            t.shape.push_back(int64_t(dim));
        }
        uint64_t bytes = 0;
        if (__builtin_mul_overflow(count, uint64_t(dtype_size(*dtype)), &bytes) || bytes > (uint64_t(1) << 62))
            bad(source, where + ": byte size of shape overflows");
        const auto& off = e["data_offsets"];
        if (!off.is_array() || off.size() != 2) bad(source, where + ": data_offsets must be [begin, end]");
        uint64_t begin = read_u64(off[0], source, where + ": data offset");
        uint64_t end = read_u64(off[1], source, where + ": data offset");
        if (begin > end) bad(source, where + ": data_offsets begin " + std::to_string(begin) + " > end " + std::to_string(end));
        if (end > data_size)
            bad(source, where + ": data_offsets end " + std::to_string(end) + " is past the end of the data (" +
                            std::to_string(data_size) + " bytes; file truncated?)");
        if (end - begin != bytes)
            bad(source, where + ": shape " + t.shape_string() + " of " + dtype_name(*dtype) + " needs " +
                            std::to_string(bytes) + " bytes but data_offsets span " + std::to_string(end - begin));
        t.data = base + begin;
        t.n_bytes = bytes;
        ranges.emplace_back(begin, end);
        tensors.push_back(std::move(t));
    }
    // Offsets must tile the data section: no gaps, no overlaps, nothing trailing.
    std::sort(ranges.begin(), ranges.end());
    uint64_t expect = 0;
    for (const auto& [b, e] : ranges) {
        if (b < expect) bad(source, "tensor data ranges overlap at byte " + std::to_string(b));
        if (b > expect) bad(source, "gap in tensor data at byte " + std::to_string(expect));
        expect = e;
    }
    if (expect != data_size)
        bad(source, "data section has " + std::to_string(data_size - expect) + " bytes not covered by any tensor");
    return tensors;
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path)
    : m_map(path), m_tensors(parse_safetensors(m_map.data(), m_map.size(), path.string())) {}

}  // namespace cetus
