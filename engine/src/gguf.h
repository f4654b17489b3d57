// GGUF files (llama.cpp's model format, architecture "deepseek2"): the header,
// metadata and tensor table validated completely (bad-inputs.md), the block
// formats dequantised to float, and what the engine needs from a file: a
// config (as config.json would give it), a tokenizer (as tokenizer.json and
// tokenizer_config.json would) and the tensors under their checkpoint names
// (architecture doc section 2.5).
#pragma once

#include "safetensors.h"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cetus {

enum class GgufType : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64 };

// One metadata value. Integers and bools are kept exactly (u64 above 2^63 too),
// floats as double; arrays of one element type, not nested.
struct GgufValue {
    GgufType type = GgufType::U8;
    GgufType elem = GgufType::U8;  // arrays only
    int64_t i = 0;                 // signed integers and bools
    uint64_t u = 0;                // unsigned integers
    double f = 0.0;                // F32 / F64
    std::string s;
    std::vector<std::string> strings;  // arrays of strings
    std::vector<double> numbers;       // arrays of numbers and bools
};

// The ggml tensor types that hold weights. Block: elements per block; bytes: per block.
struct GgmlTypeInfo {
    uint32_t id;
    const char* name;
    int64_t block;
    int64_t bytes;
};
// Null for an id this engine cannot read (the IQ, TQ and FP4 families, Q8_1, Q8_K, ...).
const GgmlTypeInfo* ggml_type_info(uint32_t id);
// The name of any known ggml type id ("IQ2_XXS"), or "type N".
std::string ggml_type_name(uint32_t id);
// The readable types, for messages: "F32, F16, BF16, Q4_0, ...".
std::string ggml_supported_types();

struct GgufTensor {
    std::string name;
    uint32_t type = 0;
    std::vector<int64_t> ne;  // ggml order: ne[0] is the innermost (contiguous) dimension
    uint64_t offset = 0;      // from the start of the data section
    const std::byte* data = nullptr;
    uint64_t n_bytes = 0;
    int64_t n_elements = 0;

    std::vector<int64_t> torch_shape() const { return {ne.rbegin(), ne.rend()}; }
};

struct GgufContents {
    uint32_t version = 0;
    uint64_t alignment = 32;
    std::map<std::string, GgufValue> kv;
    std::vector<GgufTensor> tensors;
};

inline constexpr uint64_t k_gguf_max_string = 64u << 20;  // one string (chat templates are ~10 KB)
inline constexpr uint64_t k_gguf_max_kv = 1u << 16;
inline constexpr uint64_t k_gguf_max_tensors = 1u << 20;
inline constexpr uint64_t k_gguf_max_array = 1u << 24;        // elements of one metadata array
inline constexpr uint64_t k_gguf_max_array_total = 1u << 26;  // of all of them

// Validates a whole file image: magic, version (2 or 3, little-endian), every
// length and count against the bytes left, keys and names unique, tensor types
// readable, dimensions positive without overflow and whole blocks, data offsets
// aligned, inside the file and not overlapping. Throws Error(BadFormat or
// Unsupported) naming `source` and the problem.
GgufContents parse_gguf(const std::byte* data, size_t size, const std::string& source);

class GgufFile {
public:
    explicit GgufFile(const std::filesystem::path& path);  // throws Error
    // A file image in memory, which must outlive the object (tests, fuzzing).
    GgufFile(const std::byte* data, size_t size, std::string source);
    const GgufContents& contents() const noexcept { return m_contents; }
    const std::string& source() const noexcept { return m_source; }
    const GgufValue* find(const std::string& key) const;

private:
    std::unique_ptr<MappedFile> m_map;
    std::string m_source;
    GgufContents m_contents;
};

// n elements (whole blocks) of a tensor of ggml type `type` at src, as float.
void ggml_dequantize(uint32_t type, const std::byte* src, float* dst, int64_t n);

// The GGUF file a model path names: the path itself when it is a .gguf file, or
// the only .gguf file of a folder without config.json. A split model (llama.cpp's
// gguf-split: NAME-00001-of-0000N.gguf ... NAME-0000N-of-0000N.gguf, the metadata in
// the first) is named by its first part: given any part, or a folder of only its
// parts. Nothing otherwise.
std::optional<std::filesystem::path> gguf_model_file(const std::filesystem::path& model_path);
// The files of the model whose (first) file is `path`, by name: {path} unless the name
// is a split part's, else every part in order (existing or not).
std::vector<std::filesystem::path> gguf_part_paths(const std::filesystem::path& path);
// A model's name from its (first) file: the stem without a split part's "-00001-of-0000N".
std::string gguf_model_name(const std::filesystem::path& path);
// Opens every part of the model whose first file is first_path (one file unless it is
// split), checking that each is there and that split.no, split.count and
// split.tensors.count agree with the names. Throws Error naming the file.
std::vector<std::unique_ptr<GgufFile>> gguf_open_parts(const std::filesystem::path& first_path);

// config.json's text for a deepseek2 GGUF file (architecture doc section 2.5);
// throws Error(BadConfig or Unsupported) for another architecture or a missing key.
// The tensors it looks at (the output head, the routers' bias) may lie in other parts.
std::string gguf_config_json(const GgufFile& f, const std::vector<const GgufFile*>& other_parts = {});

// tokenizer.json and tokenizer_config.json texts for the GGUF file's own
// vocabulary (tokenizer.ggml.*): GPT-2 style BPE with DeepSeek-V3's
// pre-tokenizer ("deepseek-v3"). Throws Error(Unsupported) for another one.
struct GgufTokenizerJson {
    std::string tokenizer, config;
};
GgufTokenizerJson gguf_tokenizer_json(const GgufFile& f);

// The checkpoint name (config.json layout) of a deepseek2 GGUF tensor name, or
// empty when the name is not one of the architecture's. Stacked experts
// ("ffn_gate_exps") map to "model.layers.N.mlp.experts.gate_proj.weight" and
// "attn_k_b" / "attn_v_b" to "...self_attn.k_b_proj.weight" / "v_b_proj": the
// weight store splits and merges those.
std::string gguf_checkpoint_name(const std::string& gguf_name);

}  // namespace cetus
