// WeightStore: every tensor of a model folder (one safetensors file or shards
// listed in model.safetensors.index.json), looked up by exact checkpoint name
// with dtype and shape checks. Matrix: a 2-D weight used in place from the
// map (F32/BF16/F16, a GGUF file's block-quantised rows) or with its FP8 128x128
// block scales.
#pragma once

#include "dtype.h"
#include "gguf.h"
#include "random_draws.h"
#include "safetensors.h"

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace cetus {

struct Matrix {
    Dtype dtype = Dtype::F32;
    int64_t rows = 0, cols = 0;
    const void* data = nullptr;  // row-major [rows, cols], aligned to the element size
    // FP8 only: scale_inv[(r / 128) * scale_cols + c / 128] multiplies element (r, c).
    const float* scale_inv = nullptr;
    int64_t scale_cols = 0;
    // Ggml only: the ggml block type of every row (cols is whole blocks; rows are
    // row_bytes() apart, the blocks' own alignment, which the decoders allow).
    uint32_t ggml_type = 0;
    // A random model's matrix whose bytes a backend draws itself (random_draws.h; the
    // CUDA backend on the device): data is null. (FP8 block scales stay in host memory.)
    const random_draws::Recipe* drawn = nullptr;
    // Ggml only: the CPU's products quantise their activations to int8 and use integer
    // dot products (cpu/ggml_int8.h; Model::use_int8_activations sets it).
    bool int8_activations = false;

    // What identifies the matrix's bytes (shared matrices have the same): its data, or
    // for a drawn one its recipe.
    const void* key() const { return data ? data : static_cast<const void*>(drawn); }

    // Writes row r as float32 into out[cols] (for Ggml, ggml_dequantize's values).
    void row_to_f32(int64_t r, float* out) const;
    int64_t n_elements() const { return rows * cols; }
    uint64_t row_bytes() const;  // bytes of one row (FP8 scales not counted)
    uint64_t n_bytes() const;    // weight bytes (and scales) read by one full pass
};

class WeightStore {
public:
    // Opens the safetensors file(s) of a model folder, or a GGUF file (gguf_model_file):
    // its tensors under their checkpoint names, stacked experts split and k_b / v_b
    // merged back into kv_b_proj. F32/F16/BF16 tensors and block-quantised matrices
    // (Dtype::Ggml) are used in place; block-quantised vectors are expanded to F32, a
    // kv_b_proj merged from block-quantised halves and, with expand_gguf, every
    // block-quantised matrix to BF16, when the loader first asks for them.
    // Throws Error.
    // expand_gguf: a GGUF file's block-quantised matrices are expanded to BF16 too.
    explicit WeightStore(const std::filesystem::path& model_dir, bool expand_gguf = false);
    // An empty store the caller fills with owned tensors (random models, tests).
    WeightStore() = default;

    bool has(const std::string& name) const { return m_tensors.count(name) > 0; }
    const TensorInfo& tensor(const std::string& name) const;  // throws MissingTensor

    // Checks dtype is a float weight type and shape == [rows, cols]; resolves FP8 scales.
    // With quantise (the linear layers DeepSeek-V3's FP8 release stores as FP8) and
    // FP8 on load switched on, an F32/BF16/F16 matrix or GGUF blocks are replaced by
    // their FP8 form (add_fp8).
    Matrix matrix(const std::string& name, int64_t rows, int64_t cols, bool quantise = false);
    // FP8 on load: quantise the linear layers of F32/BF16/F16 checkpoints (half the
    // memory of BF16, and half the bytes a decode step reads), or of GGUF files from their
    // blocks' values (half what the GPU would hold them in).
    void set_fp8_on_load(bool on) { m_fp8_on_load = on; }
    // Called after each quantised matrix with the share of the checkpoint's wide
    // (F32/BF16/F16) projection bytes done so far, or, for a GGUF file with block-quantised
    // tensors, after each expanded tensor with the share of them done; may throw (a
    // cancelled load).
    void set_fp8_progress(std::function<void(double)> f) { m_fp8_progress = std::move(f); }
    // Bytes of F32/BF16/F16 and GGUF block projection tensors (*_proj*, not eh_proj): what
    // FP8 on load would quantise, roughly (the progress total; > 0: FP8 would shrink the
    // model, at least on a GPU, which holds GGUF blocks as bf16).
    uint64_t quantisable_bytes() const;
    bool quantised_on_load() const { return m_fp8_done > 0; }
    // Bytes of block-quantised GGUF tensors still to expand (their BF16/F32 size).
    uint64_t expandable_bytes() const { return m_expand_total; }
    // The GGUF file the store reads, or null for safetensors and generated stores.
    const GgufFile* gguf() const { return m_gguf; }  // the first part of a split model
    // The GGUF block types expanded (or to be expanded) on load: a quantised vector's, or
    // attn_k_b / attn_v_b's (merged into kv_b_proj as BF16), e.g. {"Q8_0"}.
    const std::set<std::string>& gguf_expanded_types() const { return m_expanded_types; }
    bool fp8_on_load() const { return m_fp8_on_load; }
    // m (F32, BF16, F16 or GGUF blocks) as FP8 e4m3 with 128x128 block scales, the format of
    // DeepSeek-V3's FP8 checkpoints: scale_inv = amax(block) / 448 (1 for an all-zero
    // block, at least the smallest normal float for tiny F32 blocks), code =
    // e4m3(x / scale_inv) rounded to nearest even. Stored as the owned
    // tensors `name` and `name`_scale_inv (replacing a tensor of that name) and returned.
    Matrix add_fp8(const std::string& name, const Matrix& m);
    // Forgets a tensor (fused expert tensors once add_fp8 has replaced them per expert).
    void drop(const std::string& name);
    // Frees the bytes of owned tensors (generated or copied); their entries stay with
    // a null data pointer (names, types, shapes and sizes are still reported).
    void release_owned();
    // 1-D tensor of length n, converted to float32 (norm weights, biases).
    std::vector<float> vector(const std::string& name, int64_t n);

    // Adds a tensor whose bytes the store owns (used by the random-model builder);
    // ggml_type: Dtype::Ggml's block type.
    void add_owned(const std::string& name, Dtype dtype, std::vector<int64_t> shape, std::vector<std::byte> bytes,
                   uint32_t ggml_type = 0);
    // Adds a random model's matrix [rows, cols] by its recipe alone (no bytes: a backend
    // that can draws them, Matrix::drawn); dtype BF16, F8_E4M3 or Ggml.
    void add_drawn(const std::string& name, Dtype dtype, int64_t rows, int64_t cols, const random_draws::Recipe& recipe,
                   uint32_t ggml_type = 0);
    // Whether some matrix is drawn: the host holds no bytes of it.
    bool has_drawn() const { return !m_recipes.empty(); }

    // Names never looked up by the loader (reported as a warning).
    std::vector<std::string> unused_names() const;
    uint64_t total_bytes() const;
    const std::unordered_map<std::string, TensorInfo>& tensors() const { return m_tensors; }
    const std::string& source() const { return m_source; }

private:
    void add_gguf(const std::filesystem::path& path, bool expand_blocks);
    void add_gguf_tensor(const std::string& name, const GgufTensor& t, std::vector<int64_t> shape,
                         const std::byte* data, int64_t n_elements, bool expand);
    void add_gguf_kv_b(const std::string& name, const GgufTensor& k_b, const GgufTensor& v_b);
    void materialise(const std::string& name);
    void add_file(const std::filesystem::path& path, const std::vector<std::string>* only);
    const float* scales_for(const std::string& weight_name, int64_t rows, int64_t cols);
    const void* aligned_data(const TensorInfo& t);

    std::string m_source;
    std::vector<std::unique_ptr<SafetensorsFile>> m_files;
    std::unordered_map<std::string, TensorInfo> m_tensors;
    mutable std::unordered_map<std::string, bool> m_used;
    std::vector<std::unique_ptr<std::vector<std::byte>>> m_owned;   // owned tensor bytes
    std::vector<std::unique_ptr<std::vector<float>>> m_scales;      // aligned FP8 scales
    std::deque<random_draws::Recipe> m_recipes;                     // drawn matrices' (stable addresses)
    bool m_fp8_on_load = false;
    std::function<void(double)> m_fp8_progress;
    std::vector<std::unique_ptr<GgufFile>> m_gguf_parts;  // one unless the model is split
    const GgufFile* m_gguf = nullptr;
    std::set<std::string> m_expanded_types;
    std::string m_part_source;  // while adding a GGUF part's tensors: that file's path
    // GGUF tensors expanded on first use: the bytes they fill (as m_tensors describes them).
    std::unordered_map<std::string, std::function<void(std::byte*)>> m_pending;
    // Of those, GGUF matrices expanded to BF16 (expand_gguf): their ggml type and blocks.
    std::unordered_map<std::string, std::pair<uint32_t, const std::byte*>> m_block_source;
    uint64_t m_expand_total = 0, m_expand_done = 0;
    uint64_t m_fp8_done = 0, m_fp8_total = 0;  // source bytes quantised, and of all wide projections
};

}  // namespace cetus
