// GGUF: parsing with every length checked, the ggml block formats, and the
// deepseek2 metadata and tensor names turned into what a model folder holds.
#include "gguf.h"

#include "cetus/error.h"
#include "dtype.h"
#include "ggml_blocks.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <new>
#include <cstdio>
#include <cstring>
#include <limits>

namespace cetus {

namespace {

using json = nlohmann::ordered_json;

constexpr std::array<GgmlTypeInfo, 17> k_types{{
    {0, "F32", 1, 4},
    {1, "F16", 1, 2},
    {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},
    {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},
    {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},
    {12, "Q4_K", 256, 144},
    {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},
    {20, "IQ4_NL", 32, 18},
    {23, "IQ4_XS", 256, 136},
    {30, "BF16", 1, 2},
    {28, "F64", 1, 8},
    {0xffffffffu, "", 0, 0},
}};

// Names of ggml types this engine does not read, for the error message.
const char* other_type_name(uint32_t id) {
    switch (id) {
    case 9: return "Q8_1";
    case 15: return "Q8_K";
    case 16: return "IQ2_XXS";
    case 17: return "IQ2_XS";
    case 18: return "IQ3_XXS";
    case 19: return "IQ1_S";
    case 21: return "IQ3_S";
    case 22: return "IQ2_S";
    case 24: return "I8";
    case 25: return "I16";
    case 26: return "I32";
    case 27: return "I64";
    case 29: return "IQ1_M";
    case 34: return "TQ1_0";
    case 35: return "TQ2_0";
    case 39: return "MXFP4";
    default: return nullptr;
    }
}

[[noreturn]] void bad(const std::string& source, const std::string& what) {
    throw Error(ErrorCode::BadFormat, source + ": " + what);
}

// Reads the file image front to back; every read is checked against the end.
class Reader {
public:
    Reader(const std::byte* data, size_t size, const std::string& source) : m_p(data), m_end(data + size), m_begin(data), m_source(source) {}

    size_t left() const { return size_t(m_end - m_p); }
    size_t pos() const { return size_t(m_p - m_begin); }

    void need(uint64_t n, const char* what) {
        if (n > left())
            bad(m_source, std::string("truncated: ") + what + " at byte " + std::to_string(pos()) + " needs " +
                              std::to_string(n) + " bytes, " + std::to_string(left()) + " left");
    }
    template <typename T>
    T scalar(const char* what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, m_p, sizeof(T));
        m_p += sizeof(T);
        return v;
    }
    std::string string(const char* what) {
        const uint64_t n = scalar<uint64_t>(what);
        if (n > k_gguf_max_string)
            bad(m_source, std::string(what) + " at byte " + std::to_string(pos() - 8) + " claims " + std::to_string(n) +
                              " bytes, more than a GGUF string may hold");
        need(n, what);
        std::string s(reinterpret_cast<const char*>(m_p), size_t(n));
        m_p += n;
        return s;
    }

private:
    const std::byte* m_p;
    const std::byte* m_end;
    const std::byte* m_begin;
    const std::string& m_source;
};

uint64_t scalar_size(GgufType t) {
    switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::Bool: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    case GgufType::String: return 8;  // at least its length
    case GgufType::Array: return 12;  // at least its element type and count
    }
    return 1;
}

bool known_value_type(uint32_t t) { return t <= uint32_t(GgufType::F64); }

// A scalar of type t into v (numbers also into `number` for arrays).
double read_scalar(Reader& r, GgufType t, GgufValue& v, const std::string& key, const std::string& source) {
    switch (t) {
    case GgufType::U8: v.u = r.scalar<uint8_t>("a value"); return double(v.u);
    case GgufType::I8: v.i = r.scalar<int8_t>("a value"); return double(v.i);
    case GgufType::U16: v.u = r.scalar<uint16_t>("a value"); return double(v.u);
    case GgufType::I16: v.i = r.scalar<int16_t>("a value"); return double(v.i);
    case GgufType::U32: v.u = r.scalar<uint32_t>("a value"); return double(v.u);
    case GgufType::I32: v.i = r.scalar<int32_t>("a value"); return double(v.i);
    case GgufType::U64: v.u = r.scalar<uint64_t>("a value"); return double(v.u);
    case GgufType::I64: v.i = r.scalar<int64_t>("a value"); return double(v.i);
    case GgufType::F32: v.f = r.scalar<float>("a value"); return v.f;
    case GgufType::F64: v.f = r.scalar<double>("a value"); return v.f;
    case GgufType::Bool: {
        const uint8_t b = r.scalar<uint8_t>("a value");
        if (b > 1) bad(source, "metadata \"" + key + "\": a bool must be 0 or 1, file has " + std::to_string(b));
        v.i = b;
        return double(b);
    }
    case GgufType::String: v.s = r.string("a string value"); return 0.0;
    case GgufType::Array: break;
    }
    bad(source, "metadata \"" + key + "\": unexpected value type");
}

const GgmlTypeInfo* find_type(uint32_t id) {
    for (const auto& t : k_types)
        if (t.id == id && t.block > 0) return &t;
    return nullptr;
}

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t id) {
    const GgmlTypeInfo* t = find_type(id);
    return t != nullptr && id != 28 ? t : nullptr;  // F64 is named, not read
}

std::string ggml_type_name(uint32_t id) {
    if (const GgmlTypeInfo* t = find_type(id)) return t->name;
    if (const char* n = other_type_name(id)) return n;
    return "type " + std::to_string(id);
}

std::string ggml_supported_types() {
    std::string s;
    for (const auto& t : k_types)
        if (t.block > 0 && t.id != 28) s += (s.empty() ? "" : ", ") + std::string(t.name);
    return s;
}

GgufContents parse_gguf(const std::byte* data, size_t size, const std::string& source) {
    Reader r(data, size, source);
    GgufContents c;
    r.need(4, "the magic");
    if (std::memcmp(data, "GGUF", 4) != 0) bad(source, "not a GGUF file (the first bytes are not \"GGUF\")");
    r.scalar<uint32_t>("the magic");
    c.version = r.scalar<uint32_t>("the version");
    if (c.version == 1)
        throw Error(ErrorCode::Unsupported, source + ": GGUF version 1 (2023) is not supported; convert the model again");
    if (c.version != 2 && c.version != 3) {
        if ((c.version & 0xffff) == 0 && (c.version >> 24) <= 3)
            throw Error(ErrorCode::Unsupported, source + ": a big-endian GGUF file, which this engine does not read");
        bad(source, "unknown GGUF version " + std::to_string(c.version));
    }
    const uint64_t n_tensors = r.scalar<uint64_t>("the tensor count");
    const uint64_t n_kv = r.scalar<uint64_t>("the metadata count");
    // Each entry takes at least 8 (a key or name length) + 4 bytes; more than the file can hold is a lie.
    if (n_kv > k_gguf_max_kv || n_kv > r.left() / 12)
        bad(source, "the header claims " + std::to_string(n_kv) + " metadata entries, more than the file can hold");
    if (n_tensors > k_gguf_max_tensors || n_tensors > r.left() / 24)
        bad(source, "the header claims " + std::to_string(n_tensors) + " tensors, more than the file can hold");

    uint64_t array_elements = 0;
    for (uint64_t k = 0; k < n_kv; ++k) {
        std::string key = r.string("a metadata key");
        if (key.empty()) bad(source, "metadata entry " + std::to_string(k) + " has an empty key");
        const uint32_t type = r.scalar<uint32_t>("a value type");
        if (!known_value_type(type))
            bad(source, "metadata \"" + key + "\": unknown value type " + std::to_string(type));
        GgufValue v;
        v.type = GgufType(type);
        if (v.type == GgufType::Array) {
            const uint32_t elem = r.scalar<uint32_t>("an array's element type");
            if (!known_value_type(elem))
                bad(source, "metadata \"" + key + "\": unknown array element type " + std::to_string(elem));
            v.elem = GgufType(elem);
            if (v.elem == GgufType::Array) bad(source, "metadata \"" + key + "\": nested arrays are not supported");
            const uint64_t n = r.scalar<uint64_t>("an array's length");
            if (n > r.left() / scalar_size(v.elem))
                bad(source, "metadata \"" + key + "\": an array of " + std::to_string(n) +
                                " elements does not fit in the " + std::to_string(r.left()) + " bytes left");
            // A byte in the file can cost 8 or more in memory: the arrays are capped, as the
            // file's size alone would not bound them (a vocabulary has ~130 K entries).
            array_elements += n;
            if (n > k_gguf_max_array || array_elements > k_gguf_max_array_total)
                bad(source, "metadata \"" + key + "\": an array of " + std::to_string(n) +
                                " elements, more than a model's metadata holds");
            if (v.elem == GgufType::String) {
                v.strings.reserve(size_t(n));
                for (uint64_t e = 0; e < n; ++e) v.strings.push_back(r.string("an array's string"));
            } else {
                v.numbers.reserve(size_t(n));
                GgufValue tmp;
                for (uint64_t e = 0; e < n; ++e) v.numbers.push_back(read_scalar(r, v.elem, tmp, key, source));
            }
        } else {
            read_scalar(r, v.type, v, key, source);
        }
        if (!c.kv.emplace(key, std::move(v)).second) bad(source, "metadata key \"" + key + "\" appears twice");
    }
    if (auto it = c.kv.find("general.alignment"); it != c.kv.end()) {
        const GgufValue& a = it->second;
        if (a.type != GgufType::U32 || a.u == 0 || (a.u & (a.u - 1)) != 0 || a.u > (1u << 20))
            bad(source, "general.alignment must be a power of two (a u32), file has " +
                            (a.type == GgufType::U32 ? std::to_string(a.u) : std::string("another type")));
        c.alignment = a.u;
    }

    c.tensors.reserve(size_t(n_tensors));
    std::map<std::string, size_t> names;
    for (uint64_t k = 0; k < n_tensors; ++k) {
        GgufTensor t;
        t.name = r.string("a tensor name");
        if (t.name.empty()) bad(source, "tensor " + std::to_string(k) + " has an empty name");
        const uint32_t n_dims = r.scalar<uint32_t>("a tensor's dimension count");
        if (n_dims < 1 || n_dims > 4)
            bad(source, "tensor \"" + t.name + "\" has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
        int64_t n = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t dim = r.scalar<uint64_t>("a tensor dimension");
            if (dim == 0 || dim > (uint64_t(1) << 40))
                bad(source, "tensor \"" + t.name + "\" has dimension " + std::to_string(d) + " = " + std::to_string(dim));
            if (uint64_t(n) > (uint64_t(1) << 50) / dim)
                bad(source, "tensor \"" + t.name + "\" has too many elements");
            n *= int64_t(dim);
            t.ne.push_back(int64_t(dim));
        }
        t.n_elements = n;
        t.type = r.scalar<uint32_t>("a tensor type");
        t.offset = r.scalar<uint64_t>("a tensor offset");
        const GgmlTypeInfo* info = ggml_type_info(t.type);
        if (info == nullptr)
            throw Error(ErrorCode::Unsupported, source + ": tensor \"" + t.name + "\" is " + ggml_type_name(t.type) +
                                                    ", which this engine does not read (it reads " +
                                                    ggml_supported_types() + ")");
        if (t.ne[0] % info->block != 0)
            bad(source, "tensor \"" + t.name + "\": its rows of " + std::to_string(t.ne[0]) + " are not whole " +
                            info->name + " blocks of " + std::to_string(info->block));
        t.n_bytes = uint64_t(n / info->block) * uint64_t(info->bytes);
        if (t.offset % c.alignment != 0)
            bad(source, "tensor \"" + t.name + "\": offset " + std::to_string(t.offset) + " is not aligned to " +
                            std::to_string(c.alignment));
        if (!names.emplace(t.name, k).second) bad(source, "tensor \"" + t.name + "\" appears twice");
        c.tensors.push_back(std::move(t));
    }
    // The data section starts at the next multiple of the alignment.
    const uint64_t header_end = r.pos();
    const uint64_t data_start = (header_end + c.alignment - 1) / c.alignment * c.alignment;
    if (data_start > size && !c.tensors.empty()) bad(source, "truncated: no data section after the header");
    const uint64_t data_size = size >= data_start ? size - data_start : 0;
    std::vector<const GgufTensor*> by_offset;
    for (auto& t : c.tensors) {
        if (t.offset > data_size || t.n_bytes > data_size - t.offset)
            bad(source, "truncated: tensor \"" + t.name + "\" (" + std::to_string(t.n_bytes) + " bytes at offset " +
                            std::to_string(t.offset) + ") ends past the file's " + std::to_string(data_size) +
                            " data bytes");
        t.data = data + data_start + t.offset;
        by_offset.push_back(&t);
    }
    std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i)
        if (by_offset[i - 1]->offset + by_offset[i - 1]->n_bytes > by_offset[i]->offset)
            bad(source, "tensors \"" + by_offset[i - 1]->name + "\" and \"" + by_offset[i]->name + "\" overlap");
    return c;
}

namespace {
GgufContents parse_or_out_of_memory(const std::byte* data, size_t size, const std::string& source) {
    try {
        return parse_gguf(data, size, source);
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, source + ": not enough memory for its metadata");
    }
}
}  // namespace

GgufFile::GgufFile(const std::filesystem::path& path)
    : m_map(std::make_unique<MappedFile>(path)), m_source(path.string()) {
    m_contents = parse_or_out_of_memory(m_map->data(), m_map->size(), m_source);
}

GgufFile::GgufFile(const std::byte* data, size_t size, std::string source) : m_source(std::move(source)) {
    m_contents = parse_or_out_of_memory(data, size, m_source);
}

const GgufValue* GgufFile::find(const std::string& key) const {
    auto it = m_contents.kv.find(key);
    return it == m_contents.kv.end() ? nullptr : &it->second;
}

// ---- block formats: ggml_blocks.h ----

void ggml_dequantize(uint32_t type, const std::byte* src, float* dst, int64_t n) {
    switch (type) {
    case 0: std::memcpy(dst, src, size_t(n) * 4); return;
    case 1:
        for (int64_t i = 0; i < n; ++i) dst[i] = ggml_blocks::f16(src + 2 * i);
        return;
    case 30:
        for (int64_t i = 0; i < n; ++i) {
            uint16_t h;
            std::memcpy(&h, src + 2 * i, 2);
            dst[i] = bf16_to_f32(h);
        }
        return;
    default: break;
    }
    const GgmlTypeInfo* info = ggml_type_info(type);
    const int64_t blocks = info ? n / info->block : 0;
    const bool known = ggml_blocks::with_block_decoder(type, [&](auto decode) {
        if (blocks < 4096) {  // a matrix row (no parallel region: entering one costs more than a row)
            for (int64_t b = 0; b < blocks; ++b) decode(src + b * info->bytes, dst + b * info->block);
            return;
        }
#pragma omp parallel for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) decode(src + b * info->bytes, dst + b * info->block);
    });
    if (info == nullptr || !known) throw Error(ErrorCode::Unsupported, "cannot dequantise " + ggml_type_name(type));
}

// ---- model paths ----

namespace {

// NAME-00002-of-00005.gguf: {NAME, 2, 5} (llama.cpp's gguf-split names); nothing otherwise.
struct SplitName {
    std::string prefix;
    int no = 0, count = 0;
};
std::optional<SplitName> split_name(const std::filesystem::path& path) {
    const std::string f = path.filename().string();
    const std::string tail = "-00000-of-00000.gguf";
    if (f.size() <= tail.size()) return std::nullopt;
    const std::string t = f.substr(f.size() - tail.size());
    for (size_t i = 0; i < tail.size(); ++i)
        if (tail[i] == '0' ? !(t[i] >= '0' && t[i] <= '9') : t[i] != tail[i]) return std::nullopt;
    SplitName n{f.substr(0, f.size() - tail.size()), std::stoi(t.substr(1, 5)), std::stoi(t.substr(10, 5))};
    if (n.no < 1 || n.count < 1 || n.no > n.count) return std::nullopt;
    return n;
}

std::filesystem::path part_path(const std::filesystem::path& dir, const SplitName& n, int no) {
    char tail[32];
    std::snprintf(tail, sizeof tail, "-%05d-of-%05d.gguf", no, n.count);
    return dir / (n.prefix + tail);
}

}  // namespace

std::vector<std::filesystem::path> gguf_part_paths(const std::filesystem::path& path) {
    const auto n = split_name(path);
    if (!n) return {path};
    std::vector<std::filesystem::path> parts;
    for (int i = 1; i <= n->count; ++i) parts.push_back(part_path(path.parent_path(), *n, i));
    return parts;
}

std::string gguf_model_name(const std::filesystem::path& path) {
    if (const auto n = split_name(path)) return n->prefix;
    return path.stem().string();
}

std::optional<std::filesystem::path> gguf_model_file(const std::filesystem::path& model_path) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(model_path, ec)) {
        if (model_path.extension() != ".gguf") return std::nullopt;
        return gguf_part_paths(model_path).front();  // any part of a split model names its first
    }
    if (!std::filesystem::is_directory(model_path, ec) || std::filesystem::exists(model_path / "config.json", ec))
        return std::nullopt;
    std::vector<std::filesystem::path> found;
    for (const auto& e : std::filesystem::directory_iterator(model_path, ec))
        if (e.path().extension() == ".gguf" && e.is_regular_file(ec)) found.push_back(e.path());
    if (found.empty()) return std::nullopt;
    // One file, or the parts of one split model.
    const std::vector<std::filesystem::path> parts = gguf_part_paths(found.front());
    if (found.size() != parts.size()) return std::nullopt;
    for (const auto& f : found)
        if (std::find(parts.begin(), parts.end(), f) == parts.end()) return std::nullopt;
    return parts.front();
}

std::vector<std::unique_ptr<GgufFile>> gguf_open_parts(const std::filesystem::path& first_path) {
    std::vector<std::unique_ptr<GgufFile>> parts;
    parts.push_back(std::make_unique<GgufFile>(first_path));
    const GgufFile& first = *parts.front();
    const std::vector<std::filesystem::path> paths = gguf_part_paths(first_path);
    auto unsigned_value = [](const GgufFile& f, const char* key) -> std::optional<uint64_t> {
        const GgufValue* v = f.find(key);
        if (!v) return std::nullopt;
        if (v->type == GgufType::U8 || v->type == GgufType::U16 || v->type == GgufType::U32 || v->type == GgufType::U64)
            return v->u;
        if ((v->type == GgufType::I8 || v->type == GgufType::I16 || v->type == GgufType::I32 ||
             v->type == GgufType::I64) && v->i >= 0)
            return uint64_t(v->i);
        throw Error(ErrorCode::BadFormat, f.source() + ": \"" + key + "\" is not a count");
    };
    const uint64_t count = unsigned_value(first, "split.count").value_or(1);
    if (count != paths.size())
        throw Error(ErrorCode::BadFormat,
                    first.source() + ": the file says it is one of " + std::to_string(count) + " parts, its name says " +
                        std::to_string(paths.size()) + " (parts are named NAME-00001-of-0000N.gguf, as gguf-split writes them)");
    if (paths.front() != first_path)
        throw Error(ErrorCode::BadFormat, first.source() + ": not the first part of its split model (" +
                                              paths.front().string() + " is)");
    for (size_t i = 1; i < paths.size(); ++i) {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(paths[i], ec))
            throw Error(ErrorCode::Io, paths[i].string() + ": part " + std::to_string(i + 1) + " of " +
                                           std::to_string(paths.size()) + " of " + first_path.string() + " is missing");
        parts.push_back(std::make_unique<GgufFile>(paths[i]));
    }
    uint64_t n_tensors = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
        n_tensors += parts[i]->contents().tensors.size();
        if (paths.size() == 1) break;
        const auto no = unsigned_value(*parts[i], "split.no"), c = unsigned_value(*parts[i], "split.count");
        if (no != i || c != paths.size())
            throw Error(ErrorCode::BadFormat, parts[i]->source() + ": its split.no / split.count do not say part " +
                                                  std::to_string(i + 1) + " of " + std::to_string(paths.size()));
    }
    if (const auto want = unsigned_value(first, "split.tensors.count"); want && *want != n_tensors)
        throw Error(ErrorCode::BadFormat, first.source() + ": split.tensors.count says " + std::to_string(*want) +
                                              " tensors, the parts hold " + std::to_string(n_tensors));
    return parts;
}

// ---- metadata as config.json ----

namespace {

class Meta {
public:
    Meta(const GgufFile& f, std::string arch) : m_f(f), m_arch(std::move(arch)) {}

    const GgufValue* find(const std::string& key) const { return m_f.find(key); }
    std::string key(const std::string& k) const { return m_arch + "." + k; }

    std::optional<double> number(const std::string& k) const {
        const GgufValue* v = m_f.find(key(k));
        if (v == nullptr) return std::nullopt;
        switch (v->type) {
        case GgufType::U8: case GgufType::U16: case GgufType::U32: case GgufType::U64: return double(v->u);
        case GgufType::I8: case GgufType::I16: case GgufType::I32: case GgufType::I64: case GgufType::Bool:
            return double(v->i);
        case GgufType::F32: case GgufType::F64: return v->f;
        default: break;
        }
        throw Error(ErrorCode::BadConfig, m_f.source() + ": metadata \"" + key(k) + "\" must be a number");
    }
    int64_t integer(const std::string& k) const {
        auto v = number(k);
        if (!v) throw Error(ErrorCode::BadConfig, m_f.source() + ": metadata \"" + key(k) + "\" is missing");
        return checked_integer(k, *v);
    }
    std::optional<int64_t> integer_opt(const std::string& k) const {
        auto v = number(k);
        if (!v) return std::nullopt;
        return checked_integer(k, *v);
    }

private:
    int64_t checked_integer(const std::string& k, double v) const {
        if (!(v >= -1.0 && v <= double(int64_t(1) << 40)) || v != std::floor(v))
            throw Error(ErrorCode::BadConfig, m_f.source() + ": metadata \"" + key(k) + "\" = " + std::to_string(v) +
                                                  " is not a sensible count");
        return int64_t(v);
    }
    const GgufFile& m_f;
    std::string m_arch;
};

// The tensor of that name in any of the parts.
const GgufTensor* find_tensor(const std::vector<const GgufFile*>& parts, const std::string& name) {
    for (const GgufFile* f : parts)
        for (const auto& t : f->contents().tensors)
            if (t.name == name) return &t;
    return nullptr;
}

std::optional<int64_t> integer_or_none(const GgufFile& f, const std::string& key) {
    const GgufValue* v = f.find(key);
    if (v == nullptr) return std::nullopt;
    switch (v->type) {
    case GgufType::U8: case GgufType::U16: case GgufType::U32: case GgufType::U64:
        if (v->u > uint64_t(1) << 31) break;
        return int64_t(v->u);
    case GgufType::I8: case GgufType::I16: case GgufType::I32: case GgufType::I64:
        if (v->i < -1 || v->i > int64_t(1) << 31) break;
        return v->i;
    default: break;
    }
    throw Error(ErrorCode::BadConfig, f.source() + ": metadata \"" + key + "\" must be a token id");
}

std::string string_value(const GgufFile& f, const std::string& key) {
    const GgufValue* v = f.find(key);
    if (v == nullptr) return {};
    if (v->type != GgufType::String)
        throw Error(ErrorCode::BadConfig, f.source() + ": metadata \"" + key + "\" must be a string");
    return v->s;
}

}  // namespace

std::string gguf_config_json(const GgufFile& f, const std::vector<const GgufFile*>& other_parts) {
    std::vector<const GgufFile*> parts = {&f};
    parts.insert(parts.end(), other_parts.begin(), other_parts.end());
    const std::string arch = string_value(f, "general.architecture");
    if (arch != "deepseek2")
        throw Error(ErrorCode::Unsupported, f.source() + ": general.architecture is \"" + arch +
                                                "\"; Cetus runs DeepSeek-architecture models (\"deepseek2\")");
    const Meta m(f, arch);
    json c;
    const int64_t block_count = m.integer("block_count");
    const int64_t nextn = m.integer_opt("nextn_predict_layers").value_or(0);
    if (nextn < 0 || nextn >= block_count)
        throw Error(ErrorCode::BadConfig, f.source() + ": metadata \"deepseek2.nextn_predict_layers\" = " +
                                              std::to_string(nextn) + " does not fit the " +
                                              std::to_string(block_count) + " blocks");
    const int64_t n_head = m.integer("attention.head_count");
    const int64_t kv_lora = m.integer("attention.kv_lora_rank");
    const int64_t rope_dim = m.integer("rope.dimension_count");
    // Current files: key_length_mla / value_length_mla are the per-head sizes (key_length is
    // then kv_lora_rank + rope dim); older files have only key_length / value_length.
    const auto k_mla = m.integer_opt("attention.key_length_mla"), v_mla = m.integer_opt("attention.value_length_mla");
    const int64_t qk_head = k_mla ? *k_mla : m.integer("attention.key_length");
    const int64_t v_head = v_mla ? *v_mla : m.integer("attention.value_length");
    if (qk_head <= rope_dim)
        throw Error(ErrorCode::BadConfig, f.source() + ": the key length " + std::to_string(qk_head) +
                                              " leaves no room beside the rotary dimension " + std::to_string(rope_dim));
    const GgufTensor* embd = find_tensor(parts, "token_embd.weight");
    int64_t vocab = m.integer_opt("vocab_size").value_or(0);
    if (vocab == 0 && embd != nullptr && embd->ne.size() == 2) vocab = embd->ne[1];
    if (vocab == 0)
        if (const GgufValue* toks = f.find("tokenizer.ggml.tokens")) vocab = int64_t(toks->strings.size());

    const bool has_bias = [&] {
        for (const GgufFile* p : parts)
            for (const auto& t : p->contents().tensors)
                if (t.name.ends_with(".exp_probs_b.bias")) return true;
        return false;
    }();
    const int64_t gating = m.integer_opt("expert_gating_func").value_or(has_bias ? 2 : 1);
    if (gating != 1 && gating != 2)
        throw Error(ErrorCode::Unsupported, f.source() + ": expert_gating_func " + std::to_string(gating) +
                                                " (1 = softmax and 2 = sigmoid are supported)");
    const bool v3 = gating == 2;
    c["architectures"] = json::array({v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM"});
    c["model_type"] = v3 ? "deepseek_v3" : "deepseek_v2";
    c["vocab_size"] = vocab;
    c["hidden_size"] = m.integer("embedding_length");
    if (auto ff = m.integer_opt("feed_forward_length")) c["intermediate_size"] = *ff;
    c["num_hidden_layers"] = block_count - nextn;
    c["num_nextn_predict_layers"] = nextn;
    c["num_attention_heads"] = n_head;
    c["num_key_value_heads"] = n_head;
    if (auto q = m.integer_opt("attention.q_lora_rank"); q && *q > 0) c["q_lora_rank"] = *q;
    else c["q_lora_rank"] = nullptr;
    c["kv_lora_rank"] = kv_lora;
    c["qk_rope_head_dim"] = rope_dim;
    c["qk_nope_head_dim"] = qk_head - rope_dim;
    c["v_head_dim"] = v_head;
    if (auto e = m.integer_opt("expert_count"); e && *e > 0) {
        c["n_routed_experts"] = *e;
        c["moe_intermediate_size"] = m.integer("expert_feed_forward_length");
        c["n_shared_experts"] = m.integer_opt("expert_shared_count").value_or(0);
        c["num_experts_per_tok"] = m.integer("expert_used_count");
        c["first_k_dense_replace"] = m.integer_opt("leading_dense_block_count").value_or(0);
        const int64_t groups = m.integer_opt("expert_group_count").value_or(1);
        c["n_group"] = std::max<int64_t>(groups, 1);
        c["topk_group"] = std::max<int64_t>(m.integer_opt("expert_group_used_count").value_or(groups), 1);
        c["scoring_func"] = v3 ? "sigmoid" : "softmax";
        c["topk_method"] = v3 ? "noaux_tc" : (groups > 1 ? "group_limited_greedy" : "greedy");
        c["norm_topk_prob"] = m.number("expert_weights_norm").value_or(0.0) != 0.0;
        c["routed_scaling_factor"] = m.number("expert_weights_scale").value_or(1.0);
    }
    c["rope_theta"] = m.number("rope.freq_base").value_or(10000.0);
    c["rms_norm_eps"] = m.number("attention.layer_norm_rms_epsilon").value_or(1e-6);
    c["max_position_embeddings"] = m.integer_opt("context_length").value_or(4096);
    const std::string scaling = string_value(f, m.key("rope.scaling.type"));
    if (scaling == "yarn") {
        json y;
        y["type"] = "yarn";
        y["factor"] = m.number("rope.scaling.factor").value_or(1.0);
        y["original_max_position_embeddings"] = m.integer("rope.scaling.original_context_length");
        y["beta_fast"] = m.number("rope.scaling.yarn_beta_fast").value_or(32.0);
        y["beta_slow"] = m.number("rope.scaling.yarn_beta_slow").value_or(1.0);
        // The converter writes 0.1 * mscale_all_dim; DeepSeek's releases set mscale = mscale_all_dim.
        const double mscale = m.number("rope.scaling.yarn_log_multiplier").value_or(0.0) / 0.1;
        y["mscale"] = mscale;
        y["mscale_all_dim"] = mscale;
        c["rope_scaling"] = y;
    } else if (!scaling.empty() && scaling != "none") {
        throw Error(ErrorCode::Unsupported, f.source() + ": rope scaling \"" + scaling + "\" is not supported");
    }
    c["rope_interleave"] = true;  // ggml's rotation pairs neighbouring channels, as DeepSeek's checkpoints do
    c["tie_word_embeddings"] = find_tensor(parts, "output.weight") == nullptr;
    c["hidden_act"] = "silu";
    if (auto b = integer_or_none(f, "tokenizer.ggml.bos_token_id"); b) c["bos_token_id"] = *b;
    if (auto e = integer_or_none(f, "tokenizer.ggml.eos_token_id"); e) c["eos_token_id"] = *e;
    try {
        return c.dump();
    } catch (const nlohmann::json::exception&) {
        throw Error(ErrorCode::BadFormat, f.source() + ": a text value of its metadata is not valid UTF-8");
    }
}

// ---- the vocabulary as tokenizer.json ----

namespace {

// DeepSeek-V3's pre-tokenizer (architecture doc section 8.2), as its tokenizer.json writes it.
constexpr const char* k_deepseek_v3_pre = R"json({"type": "Sequence", "pretokenizers": [
 {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false},
 {"type": "Split", "pattern": {"Regex": "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"}, "behavior": "Isolated", "invert": false},
 {"type": "Split", "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
 {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})json";

// DeepSeek-LLM's pre-tokenizer, which DeepSeek-V2 and V2-Lite share (llama.cpp's
// "deepseek-llm"; architecture doc section 8.4): newlines isolated; runs of letters
// of the alphabetic scripts, runs of ASCII and fullwidth punctuation (each with an
// optional leading space); trailing whitespace; CJK and Hangul runs; each digit alone.
// (JSON escapes: the letters' class is long, and astral letters are surrogate pairs.)
constexpr const char* k_deepseek_llm_pre = R"json({"type": "Sequence", "pretokenizers": [
 {"type": "Split", "pattern": {"Regex": "[\r\n]"}, "behavior": "Isolated", "invert": false},
 {"type": "Split", "pattern": {"Regex": "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\ud801\udc00-\ud801\udc4f\ud801\udcb0-\ud801\udcd3\ud801\udcd8-\ud801\udcfb\ud803\udc80-\ud803\udcb2\ud803\udcc0-\ud803\udcf2\ud806\udca0-\ud806\udcdf\ud83a\udd00-\ud83a\udd43]+"}, "behavior": "Isolated", "invert": false},
 {"type": "Split", "pattern": {"Regex": "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"}, "behavior": "Isolated", "invert": false},
 {"type": "Split", "pattern": {"Regex": "\\s+$"}, "behavior": "Isolated", "invert": false},
 {"type": "Split", "pattern": {"Regex": "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"}, "behavior": "Isolated", "invert": false},
 {"type": "Digits", "individual_digits": true},
 {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})json";

const GgufValue& string_array(const GgufFile& f, const std::string& key) {
    const GgufValue* v = f.find(key);
    if (v == nullptr) throw Error(ErrorCode::BadFormat, f.source() + ": metadata \"" + key + "\" is missing");
    if (v->type != GgufType::Array || v->elem != GgufType::String)
        throw Error(ErrorCode::BadFormat, f.source() + ": metadata \"" + key + "\" must be an array of strings");
    return *v;
}

}  // namespace

GgufTokenizerJson gguf_tokenizer_json(const GgufFile& f) {
    const std::string model = string_value(f, "tokenizer.ggml.model");
    const std::string beside = " (or put the model's tokenizer.json and tokenizer_config.json beside the file)";
    if (model.empty()) throw Error(ErrorCode::Unsupported, f.source() + ": the file holds no tokenizer" + beside);
    if (model != "gpt2")
        throw Error(ErrorCode::Unsupported, f.source() + ": tokenizer model \"" + model +
                                                "\" is not supported; DeepSeek's is \"gpt2\" (byte-level BPE)" + beside);
    const std::string pre = string_value(f, "tokenizer.ggml.pre");
    if (pre != "deepseek-v3" && pre != "deepseek-llm")
        throw Error(ErrorCode::Unsupported, f.source() + ": pre-tokenizer \"" + pre +
                                                "\" is not supported from GGUF metadata; \"deepseek-v3\" (DeepSeek-V3, "
                                                "R1) and \"deepseek-llm\" (DeepSeek-V2, V2-Lite) are" + beside);
    const GgufValue& tokens = string_array(f, "tokenizer.ggml.tokens");
    const GgufValue* types = f.find("tokenizer.ggml.token_type");
    if (types != nullptr && (types->type != GgufType::Array || types->strings.size() != 0 ||
                             types->numbers.size() != tokens.strings.size()))
        throw Error(ErrorCode::BadFormat, f.source() + ": tokenizer.ggml.token_type must be one number per token (" +
                                              std::to_string(tokens.strings.size()) + ")");
    // An ordered_json object searches linearly: the vocabulary (~130 K tokens) goes in a map.
    nlohmann::json vocab = nlohmann::json::object();
    json added = json::array();
    for (size_t i = 0; i < tokens.strings.size(); ++i) {
        const double tv = types != nullptr ? types->numbers[i] : 1.0;
        if (!(tv >= 0.0 && tv <= 16.0) || tv != std::floor(tv))
            throw Error(ErrorCode::BadFormat, f.source() + ": token " + std::to_string(i) + " has no valid type");
        const int type = int(tv);
        const std::string& text = tokens.strings[i];
        switch (type) {
        case 1:  // normal
            if (const auto [it, fresh] = vocab.emplace(text, int64_t(i)); !fresh)
                throw Error(ErrorCode::BadFormat, f.source() + ": token " + std::to_string(i) +
                                                      " repeats the text of token " +
                                                      std::to_string(it->get<int64_t>()));
            break;
        case 3:  // control
        case 4:  // user-defined
            added.push_back({{"id", int64_t(i)}, {"content", text}, {"single_word", false}, {"lstrip", false},
                             {"rstrip", false}, {"normalized", type == 4}, {"special", type == 3}});
            break;
        case 5: break;  // unused (padding up to the embedding's rows)
        default:
            throw Error(ErrorCode::Unsupported, f.source() + ": token " + std::to_string(i) + " has type " +
                                                    std::to_string(type) + ", which a byte-level BPE vocabulary has not");
        }
    }
    json merges = json::array();
    if (f.find("tokenizer.ggml.merges") != nullptr)
        for (const auto& mrg : string_array(f, "tokenizer.ggml.merges").strings) merges.push_back(mrg);
    json t;
    t["version"] = "1.0";
    t["truncation"] = nullptr;
    t["padding"] = nullptr;
    t["added_tokens"] = std::move(added);
    t["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array()}};
    t["pre_tokenizer"] = json::parse(pre == "deepseek-v3" ? k_deepseek_v3_pre : k_deepseek_llm_pre);
    t["post_processor"] = nullptr;
    t["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    t["model"] = {{"type", "BPE"},        {"dropout", nullptr},        {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},    {"byte_fallback", false},    {"vocab", std::move(vocab)},
                  {"merges", std::move(merges)}};

    json config = json::object();
    auto token_at = [&](const char* key) -> std::optional<std::string> {
        const auto id = integer_or_none(f, key);
        if (!id) return std::nullopt;
        if (*id < 0 || size_t(*id) >= tokens.strings.size())
            throw Error(ErrorCode::BadFormat, f.source() + ": metadata \"" + key + "\" = " + std::to_string(*id) +
                                                  " is not a token of the vocabulary");
        return tokens.strings[size_t(*id)];
    };
    if (auto b = token_at("tokenizer.ggml.bos_token_id")) config["bos_token"] = *b;
    if (auto e = token_at("tokenizer.ggml.eos_token_id")) config["eos_token"] = *e;
    if (const GgufValue* add = f.find("tokenizer.ggml.add_bos_token")) {
        if (add->type != GgufType::Bool)
            throw Error(ErrorCode::BadFormat, f.source() + ": metadata \"tokenizer.ggml.add_bos_token\" must be a bool");
        config["add_bos_token"] = add->i != 0;
    }
    const std::string chat = string_value(f, "tokenizer.chat_template");
    if (!chat.empty()) config["chat_template"] = chat;
    try {
        return {t.dump(), config.dump()};
    } catch (const nlohmann::json::exception&) {  // a token or the template that is not UTF-8
        throw Error(ErrorCode::BadFormat, f.source() + ": the vocabulary or chat template is not valid UTF-8 text");
    }
}

// ---- tensor names ----

std::string gguf_checkpoint_name(const std::string& g) {
    static const std::map<std::string, std::string, std::less<>> k_global = {
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"output_norm.weight", "model.norm.weight"},
        {"output.weight", "lm_head.weight"},
    };
    if (auto it = k_global.find(g); it != k_global.end()) return it->second;
    static const std::map<std::string, std::string, std::less<>> k_block = {
        {"attn_norm.weight", "input_layernorm.weight"},
        {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_q_a.weight", "self_attn.q_a_proj.weight"},
        {"attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"},
        {"attn_q_b.weight", "self_attn.q_b_proj.weight"},
        {"attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"},
        {"attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"},
        {"attn_kv_b.weight", "self_attn.kv_b_proj.weight"},
        {"attn_k_b.weight", "self_attn.k_b_proj.weight"},
        {"attn_v_b.weight", "self_attn.v_b_proj.weight"},
        {"attn_output.weight", "self_attn.o_proj.weight"},
        {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"},
        {"ffn_up.weight", "mlp.up_proj.weight"},
        {"ffn_down.weight", "mlp.down_proj.weight"},
        {"ffn_gate_inp.weight", "mlp.gate.weight"},
        {"exp_probs_b.bias", "mlp.gate.e_score_correction_bias"},
        {"ffn_gate_exps.weight", "mlp.experts.gate_proj.weight"},
        {"ffn_up_exps.weight", "mlp.experts.up_proj.weight"},
        {"ffn_down_exps.weight", "mlp.experts.down_proj.weight"},
        {"ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"},
        {"ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"},
        {"ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"},
        {"nextn.eh_proj.weight", "eh_proj.weight"},
        {"nextn.embed_tokens.weight", "embed_tokens.weight"},
        {"nextn.enorm.weight", "enorm.weight"},
        {"nextn.hnorm.weight", "hnorm.weight"},
        {"nextn.shared_head_head.weight", "shared_head.head.weight"},
        {"nextn.shared_head_norm.weight", "shared_head.norm.weight"},
    };
    if (!g.starts_with("blk.")) return {};
    const size_t dot = g.find('.', 4);
    if (dot == std::string::npos || dot == 4 || dot - 4 > 6) return {};
    for (size_t i = 4; i < dot; ++i)
        if (g[i] < '0' || g[i] > '9') return {};
    if (dot - 4 > 1 && g[4] == '0') return {};
    auto it = k_block.find(std::string_view(g).substr(dot + 1));
    if (it == k_block.end()) return {};
    return "model.layers." + g.substr(4, dot - 4) + "." + it->second;
}

}  // namespace cetus
