// Read-only access to safetensors files through mmap. The header is validated
// completely (bad-inputs.md): lengths, JSON, dtypes, shapes with overflow
// checks, and data offsets that must tile the data section exactly.
#pragma once

#include "dtype.h"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace cetus {

namespace random_draws {
struct Recipe;
}

// RAII read-only memory map of a whole file.
class MappedFile {
public:
    explicit MappedFile(const std::filesystem::path& path);  // throws Error(Io)
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::byte* data() const noexcept { return m_data; }
    size_t size() const noexcept { return m_size; }
    const std::filesystem::path& path() const noexcept { return m_path; }

private:
    std::filesystem::path m_path;
    const std::byte* m_data = nullptr;
    size_t m_size = 0;
};

struct TensorInfo {
    std::string name;
    Dtype dtype = Dtype::F32;
    std::vector<int64_t> shape;
    const std::byte* data = nullptr;  // into the mapped file
    uint64_t n_bytes = 0;
    std::string file;  // for error messages
    uint32_t ggml_type = 0;  // Dtype::Ggml only: the ggml block type (GGUF files)
    // A random model's matrix drawn where it is used (WeightStore::add_drawn): data is
    // null, n_bytes what it would hold.
    const random_draws::Recipe* drawn = nullptr;

    int64_t n_elements() const;
    std::string shape_string() const;
};

inline constexpr uint64_t k_max_safetensors_header = 100u << 20;  // as the reference crate

// Validates a complete file image (header and data). `source` names it in errors.
// Throws Error(BadFormat) for every malformed case.
std::vector<TensorInfo> parse_safetensors(const std::byte* data, size_t size, const std::string& source);

class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::filesystem::path& path);
    const std::vector<TensorInfo>& tensors() const noexcept { return m_tensors; }
    const std::filesystem::path& path() const noexcept { return m_map.path(); }

private:
    MappedFile m_map;
    std::vector<TensorInfo> m_tensors;
};

}  // namespace cetus
