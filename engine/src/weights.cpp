// Opening model folders and handing out checked views of their tensors.
#include "weights.h"

#include "cetus/error.h"
#include "json_util.h"
#include "log.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <new>
#include <optional>
#include <set>
#include <sstream>

namespace cetus {

void Matrix::row_to_f32(int64_t r, float* out) const {
    const int64_t n = cols;
    switch (dtype) {
    case Dtype::F32: {
        const float* src = static_cast<const float*>(data) + r * n;
        std::copy(src, src + n, out);
        break;
    }
    case Dtype::BF16: {
        const uint16_t* src = static_cast<const uint16_t*>(data) + r * n;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
            uint32_t bits = uint32_t(src[i]) << 16;
            std::memcpy(&out[i], &bits, 4);
        }
        break;
    }
    case Dtype::F16: {
        const uint16_t* src = static_cast<const uint16_t*>(data) + r * n;
        for (int64_t i = 0; i < n; ++i) out[i] = k_f16_table[src[i]];
        break;
    }
    case Dtype::F8_E4M3: {
        const uint8_t* src = static_cast<const uint8_t*>(data) + r * n;
        const float* srow = scale_inv + (r / 128) * scale_cols;
        for (int64_t b = 0; b < n; b += 128) {
            const float s = srow[b / 128];
            const int64_t e = std::min<int64_t>(n, b + 128);
            for (int64_t i = b; i < e; ++i) out[i] = k_fp8_e4m3_table[src[i]] * s;
        }
        break;
    }
    case Dtype::Ggml:
        ggml_dequantize(ggml_type, static_cast<const std::byte*>(data) + uint64_t(r) * row_bytes(), out, n);
        break;
    default:
        break;  // rejected at load
    }
}

uint64_t Matrix::row_bytes() const {
    if (dtype == Dtype::Ggml) {
        const GgmlTypeInfo* t = ggml_type_info(ggml_type);
        return t ? uint64_t(cols / t->block) * uint64_t(t->bytes) : 0;
    }
    return uint64_t(cols) * dtype_size(dtype);
}

uint64_t Matrix::n_bytes() const {
    uint64_t b = uint64_t(rows) * row_bytes();
    if (dtype == Dtype::F8_E4M3) b += uint64_t((rows + 127) / 128 * scale_cols) * 4;
    return b;
}

namespace {

std::string read_text(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw Error(ErrorCode::Io, p.string() + ": cannot open");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace

WeightStore::WeightStore(const std::filesystem::path& dir, bool expand_gguf) : m_source(dir.string()) {
    if (auto gguf = gguf_model_file(dir)) {
        add_gguf(*gguf, expand_gguf);
        return;
    }
    auto index = dir / "model.safetensors.index.json";
    auto single = dir / "model.safetensors";
    if (std::filesystem::exists(index)) {
        auto j = parse_json_strict(read_text(index), index.string());
        if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
            throw Error(ErrorCode::BadFormat, index.string() + ": no \"weight_map\" object");
        std::map<std::string, std::vector<std::string>> by_file;
        for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
            if (!it->is_string()) throw Error(ErrorCode::BadFormat, index.string() + ": weight_map values must be file names");
            std::string f = it->get<std::string>();
            // Shard names are plain file names inside the folder; anything else
            // could point the loader anywhere on disk.
            if (f.empty() || f.find('/') != std::string::npos || f.find('\\') != std::string::npos || f == "." || f == "..")
                throw Error(ErrorCode::BadFormat, index.string() + ": shard name \"" + f + "\" is not a plain file name");
            by_file[f].push_back(it.key());
        }
        if (by_file.empty()) throw Error(ErrorCode::BadFormat, index.string() + ": weight_map is empty");
        for (const auto& [file, names] : by_file) add_file(dir / file, &names);
    } else if (std::filesystem::exists(single)) {
        add_file(single, nullptr);
    } else {
        // Some folders hold a single file with another name.
        std::vector<std::filesystem::path> found;
        std::error_code ec;
        for (const auto& e : std::filesystem::directory_iterator(dir, ec))
            if (e.path().extension() == ".safetensors") found.push_back(e.path());
        if (found.empty())
            throw Error(ErrorCode::Io, dir.string() + ": no model.safetensors or model.safetensors.index.json");
        std::sort(found.begin(), found.end());
        for (const auto& f : found) add_file(f, nullptr);
    }
}

void WeightStore::add_file(const std::filesystem::path& path, const std::vector<std::string>* only) {
    auto file = std::make_unique<SafetensorsFile>(path);
    std::set<std::string> wanted;
    if (only) wanted.insert(only->begin(), only->end());
    for (const auto& t : file->tensors()) {
        if (only && !wanted.count(t.name)) continue;
        if (!m_tensors.emplace(t.name, t).second)
            throw Error(ErrorCode::BadFormat, path.string() + ": tensor \"" + t.name + "\" appears in more than one file");
        wanted.erase(t.name);
    }
    if (only && !wanted.empty())
        throw Error(ErrorCode::MissingTensor, path.string() + ": tensor \"" + *wanted.begin() +
                                                  "\" listed in the index is not in this file");
    m_files.push_back(std::move(file));
}

const TensorInfo& WeightStore::tensor(const std::string& name) const {
    auto it = m_tensors.find(name);
    if (it == m_tensors.end()) throw Error(ErrorCode::MissingTensor, m_source + ": missing tensor \"" + name + "\"");
    m_used[name] = true;
    return it->second;
}

const void* WeightStore::aligned_data(const TensorInfo& t) {
    if (t.dtype == Dtype::Ggml) return t.data;  // blocks are read byte by byte (ggml_dequantize)
    size_t align = dtype_size(t.dtype);
    if (reinterpret_cast<uintptr_t>(t.data) % align == 0) return t.data;
    // The format does not promise alignment; copy the rare misaligned tensor.
    auto buf = std::make_unique<std::vector<std::byte>>(t.n_bytes + 8);
    std::byte* p = buf->data();
    while (reinterpret_cast<uintptr_t>(p) % align) ++p;
    std::memcpy(p, t.data, t.n_bytes);
    m_owned.push_back(std::move(buf));
    return p;
}

const float* WeightStore::scales_for(const std::string& weight_name, int64_t rows, int64_t cols) {
    std::string sname = weight_name + "_scale_inv";
    if (!has(sname))
        throw Error(ErrorCode::MissingTensor, m_source + ": FP8 tensor \"" + weight_name + "\" has no \"" + sname + "\"");
    const TensorInfo& s = tensor(sname);
    const int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
    if (s.dtype != Dtype::F32 && s.dtype != Dtype::BF16)
        throw Error(ErrorCode::BadTensor, s.file + ": \"" + sname + "\" must be F32, file has " + dtype_name(s.dtype));
    if (s.shape != std::vector<int64_t>{sr, sc})
        throw Error(ErrorCode::BadTensor, s.file + ": \"" + sname + "\": expected [" + std::to_string(sr) + ", " +
                                              std::to_string(sc) + "] for 128x128 blocks, file has " + s.shape_string());
    auto v = std::make_unique<std::vector<float>>(static_cast<size_t>(sr * sc));
    for (int64_t i = 0; i < sr * sc; ++i) {
        if (s.dtype == Dtype::F32) std::memcpy(&(*v)[i], s.data + 4 * i, 4);
        else {
            uint16_t h;
            std::memcpy(&h, s.data + 2 * i, 2);
            (*v)[i] = bf16_to_f32(h);
        }
    }
    m_scales.push_back(std::move(v));
    return m_scales.back()->data();
}

Matrix WeightStore::matrix(const std::string& name, int64_t rows, int64_t cols, bool quantise) {
    auto check_shape = [&](const TensorInfo& t) {
        if (t.shape != std::vector<int64_t>{rows, cols})
            throw Error(ErrorCode::BadTensor, t.file + ": \"" + name + "\": expected [" + std::to_string(rows) +
                                                  ", " + std::to_string(cols) + "], file has " + t.shape_string());
    };
    if (auto it = m_block_source.find(name); it != m_block_source.end() && quantise && m_fp8_on_load) {
        // Expanded GGUF blocks that FP8 on load quantises: from the blocks' values, not
        // through their BF16 expansion (one rounding, as without expand_gguf).
        const TensorInfo& t = tensor(name);
        check_shape(t);
        const Matrix blocks{Dtype::Ggml, rows, cols, it->second.second, nullptr, 0, it->second.first};
        m_expand_total -= t.n_bytes;
        m_block_source.erase(it);
        return add_fp8(name, blocks);
    }
    materialise(name);
    const TensorInfo& t = tensor(name);
    if (!dtype_is_float_weight(t.dtype))
        throw Error(ErrorCode::BadTensor, t.file + ": \"" + name + "\" has unsupported dtype " + dtype_name(t.dtype));
    check_shape(t);
    Matrix m;
    m.dtype = t.dtype;
    m.rows = rows;
    m.cols = cols;
    m.data = aligned_data(t);
    m.ggml_type = t.ggml_type;
    m.drawn = t.drawn;
    if (t.dtype == Dtype::F8_E4M3) {
        std::string base = name;
        m.scale_inv = scales_for(base, rows, cols);
        m.scale_cols = (cols + 127) / 128;
    } else if (quantise && m_fp8_on_load) {
        // (GGUF blocks too, from their decoded values: the tensor-core paths' form, about
        // 8 bits a value; 4-bit blocks are the smaller form on either backend.)
        return add_fp8(name, m);
    }
    return m;
}

namespace {

// Element i of an F32/BF16/F16 weight as float (the dtype fixed per instantiation).
template <Dtype D>
float element(const void* data, int64_t i) {
    if constexpr (D == Dtype::BF16) return bf16_to_f32(static_cast<const uint16_t*>(data)[i]);
    else if constexpr (D == Dtype::F16) return f16_to_f32(static_cast<const uint16_t*>(data)[i]);
    else return static_cast<const float*>(data)[i];
}

// add_fp8's blocks: codes and scales; false when a value is infinite or NaN.
template <Dtype D>
bool quantise_blocks(const Matrix& m, std::byte* codes, float* scales) {
    const int64_t rows = m.rows, cols = m.cols, sr = (rows + 127) / 128, sc = (cols + 127) / 128;
    bool finite = true;
    // One 128x128 block per iteration: its largest magnitude, then its codes.
#pragma omp parallel for schedule(dynamic, 4) reduction(&& : finite)
    for (int64_t b = 0; b < sr * sc; ++b) {
        const int64_t r0 = b / sc * 128, c0 = b % sc * 128;
        const int64_t r1 = std::min(rows, r0 + 128), c1 = std::min(cols, c0 + 128);
        float amax = 0.0f;
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c) {
                const float v = std::fabs(element<D>(m.data, r * cols + c));
                finite = finite && std::isfinite(v);
                amax = std::max(amax, v);
            }
        // (A block of F32 values under ~6e-43 would get scale 0: the smallest normal instead.)
        const float scale =
            amax > 0.0f && std::isfinite(amax) ? std::max(amax / 448.0f, std::numeric_limits<float>::min()) : 1.0f;
        scales[b] = scale;
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c)
                codes[r * cols + c] = std::byte(f32_to_fp8_e4m3(element<D>(m.data, r * cols + c) / scale));
    }
    return finite;
}

// add_fp8 for GGUF blocks: each band of 128 rows decoded to fp32, then quantised as an
// F32 matrix would be (the same blocks, so the same codes and scales).
bool quantise_ggml_blocks(const Matrix& m, std::byte* codes, float* scales) {
    const int64_t sc = (m.cols + 127) / 128;
    std::vector<float> band(static_cast<size_t>(std::min<int64_t>(m.rows, 128) * m.cols));
    bool finite = true;
    for (int64_t r0 = 0; r0 < m.rows; r0 += 128) {
        const int64_t n = std::min<int64_t>(128, m.rows - r0);
#pragma omp parallel for schedule(static) if (n * m.cols >= (1 << 18))
        for (int64_t r = 0; r < n; ++r) m.row_to_f32(r0 + r, band.data() + r * m.cols);
        const Matrix f{Dtype::F32, n, m.cols, band.data(), nullptr, 0};
        finite = quantise_blocks<Dtype::F32>(f, codes + r0 * m.cols, scales + (r0 / 128) * sc) && finite;
    }
    return finite;
}

}  // namespace

Matrix WeightStore::add_fp8(const std::string& name, const Matrix& m) {
    if (m.dtype != Dtype::F32 && m.dtype != Dtype::BF16 && m.dtype != Dtype::F16 && m.dtype != Dtype::Ggml)
        throw Error(ErrorCode::BadTensor, m_source + ": \"" + name + "\" cannot be quantised from " + dtype_name(m.dtype));
    if (!m.data)
        throw Error(ErrorCode::BadRequest, m_source + ": \"" + name + "\" has no bytes in host memory to quantise" +
                                               (m.drawn ? " (a random model's weights drawn on the GPU)" : ""));
    const int64_t rows = m.rows, cols = m.cols, sr = (rows + 127) / 128, sc = (cols + 127) / 128;
    std::vector<std::byte> codes;
    std::vector<float> scales;
    try {
        codes.resize(static_cast<size_t>(rows * cols));
        scales.resize(static_cast<size_t>(sr * sc));
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, m_source + ": not enough host memory to quantise \"" + name + "\" to FP8 (" +
                                                std::to_string(rows * cols >> 20) + " MiB)");
    }
    const bool finite = m.dtype == Dtype::BF16   ? quantise_blocks<Dtype::BF16>(m, codes.data(), scales.data())
                        : m.dtype == Dtype::F16  ? quantise_blocks<Dtype::F16>(m, codes.data(), scales.data())
                        : m.dtype == Dtype::Ggml ? quantise_ggml_blocks(m, codes.data(), scales.data())
                                                 : quantise_blocks<Dtype::F32>(m, codes.data(), scales.data());
    if (!finite)
        throw Error(ErrorCode::BadTensor, m_source + ": \"" + name +
                                              "\" holds infinite or NaN values, which FP8 cannot represent; load "
                                              "the checkpoint's own weights instead");
    std::vector<std::byte> scale_bytes(scales.size() * 4);
    std::memcpy(scale_bytes.data(), scales.data(), scale_bytes.size());
    if (m_fp8_progress && m_fp8_total == 0) m_fp8_total = quantisable_bytes();
    m_fp8_done += m.n_bytes();
    add_owned(name, Dtype::F8_E4M3, {rows, cols}, std::move(codes));
    add_owned(name + "_scale_inv", Dtype::F32, {sr, sc}, std::move(scale_bytes));
    // The owned buffers as they are (new'd: aligned for floats), no copy of the scales.
    const Matrix q{Dtype::F8_E4M3, rows, cols, tensor(name).data,
                   reinterpret_cast<const float*>(tensor(name + "_scale_inv").data), sc};
    if (m_fp8_progress && m_expand_total == 0)
        m_fp8_progress(std::min(1.0, double(m_fp8_done) / double(std::max<uint64_t>(m_fp8_total, 1))));
    return q;
}

uint64_t WeightStore::quantisable_bytes() const {
    uint64_t bytes = 0;
    for (const auto& [n, t] : m_tensors)
        if ((t.dtype == Dtype::F32 || t.dtype == Dtype::BF16 || t.dtype == Dtype::F16 || t.dtype == Dtype::Ggml) &&
            n.find("_proj") != std::string::npos && !n.ends_with("eh_proj.weight"))
            bytes += t.n_bytes;
    return bytes;
}

void WeightStore::release_owned() {
    std::set<const std::byte*> owned;
    for (const auto& b : m_owned) owned.insert(b->data());
    for (auto& [name, t] : m_tensors)
        if (owned.count(t.data)) t.data = nullptr;
    m_owned.clear();
    m_owned.shrink_to_fit();
}

void WeightStore::drop(const std::string& name) {
    m_pending.erase(name);
    m_block_source.erase(name);
    m_tensors.erase(name);
    m_used.erase(name);
}

std::vector<float> WeightStore::vector(const std::string& name, int64_t n) {
    materialise(name);
    const TensorInfo& t = tensor(name);
    if (t.dtype != Dtype::F32 && t.dtype != Dtype::BF16 && t.dtype != Dtype::F16)
        throw Error(ErrorCode::BadTensor, t.file + ": \"" + name + "\" has unsupported dtype " + dtype_name(t.dtype));
    if (t.shape != std::vector<int64_t>{n})
        throw Error(ErrorCode::BadTensor, t.file + ": \"" + name + "\": expected [" + std::to_string(n) +
                                              "], file has " + t.shape_string());
    Matrix m{t.dtype, 1, n, aligned_data(t), nullptr, 0};
    std::vector<float> out(static_cast<size_t>(n));
    m.row_to_f32(0, out.data());
    return out;
}

void WeightStore::add_owned(const std::string& name, Dtype dtype, std::vector<int64_t> shape, std::vector<std::byte> bytes,
                            uint32_t ggml_type) {
    // A tensor replaced (by its FP8 form) frees the bytes the store made for it.
    if (auto old = m_tensors.find(name); old != m_tensors.end() && old->second.data != nullptr) {
        auto it = std::find_if(m_owned.begin(), m_owned.end(), [&](const auto& b) { return b->data() == old->second.data; });
        if (it != m_owned.end()) m_owned.erase(it);
    }
    m_pending.erase(name);
    auto buf = std::make_unique<std::vector<std::byte>>(std::move(bytes));
    TensorInfo t;
    t.name = name;
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.data = buf->data();
    t.n_bytes = buf->size();
    t.file = "(generated)";
    t.ggml_type = ggml_type;
    m_owned.push_back(std::move(buf));
    m_tensors[name] = std::move(t);
}

void WeightStore::add_drawn(const std::string& name, Dtype dtype, int64_t rows, int64_t cols,
                            const random_draws::Recipe& recipe, uint32_t ggml_type) {
    TensorInfo t;
    t.name = name;
    t.dtype = dtype;
    t.shape = {rows, cols};
    t.ggml_type = ggml_type;
    t.file = "(drawn on the device)";
    const Matrix m{dtype, rows, cols, nullptr, nullptr, 0, ggml_type};
    t.n_bytes = m.n_bytes();
    m_recipes.push_back(recipe);
    t.drawn = &m_recipes.back();
    m_tensors[name] = std::move(t);
}

// ---- GGUF files ----

void WeightStore::add_gguf(const std::filesystem::path& path, bool expand_blocks) {
    m_gguf_parts = gguf_open_parts(path);
    m_gguf = m_gguf_parts.front().get();
    m_source = path.string();
    if (m_gguf_parts.size() > 1) m_source += " (and its other " + std::to_string(m_gguf_parts.size() - 1) + " parts)";
    std::map<std::string, std::pair<const GgufTensor*, const GgufTensor*>> kv_b;  // k_b, v_b by target name
    std::vector<std::pair<const GgufTensor*, const std::string*>> all;  // each with its part's path
    for (const auto& part : m_gguf_parts)
        for (const GgufTensor& t : part->contents().tensors) all.emplace_back(&t, &part->source());
    for (const auto& [tp, file] : all) {
        const GgufTensor& t = *tp;
        m_part_source = *file;
        if (t.name.find(".ffn_gate_up_exps.") != std::string::npos)
            throw Error(ErrorCode::Unsupported, *file + ": \"" + t.name +
                                                    "\" holds the experts' gate and up projections fused, which "
                                                    "Cetus does not read yet (convert without fusing them)");
        std::string name = gguf_checkpoint_name(t.name);
        if (name.empty()) name = t.name;  // not the architecture's: kept (and reported unused) under its own name
        std::vector<int64_t> shape = t.torch_shape();
        if (name.ends_with(".self_attn.k_b_proj.weight") || name.ends_with(".self_attn.v_b_proj.weight")) {
            const bool is_k = name.ends_with("k_b_proj.weight");
            const std::string target = name.substr(0, name.size() - std::string("k_b_proj.weight").size()) + "kv_b_proj.weight";
            auto& slot = kv_b[target];
            (is_k ? slot.first : slot.second) = &t;
            continue;
        }
        const std::string stacked = ".mlp.experts.";
        if (const size_t at = name.find(stacked); at != std::string::npos && t.ne.size() == 3) {
            // [E, rows, cols] -> one [rows, cols] tensor per expert.
            const int64_t E = shape[0], per = shape[1] * shape[2];
            const GgmlTypeInfo* info = ggml_type_info(t.type);
            const uint64_t bytes_per = uint64_t(per / info->block) * uint64_t(info->bytes);
            const std::string head = name.substr(0, at + stacked.size()), tail = name.substr(at + stacked.size());
            for (int64_t e = 0; e < E; ++e)
                add_gguf_tensor(head + std::to_string(e) + "." + tail, t, {shape[1], shape[2]},
                                t.data + uint64_t(e) * bytes_per, per, expand_blocks);
            continue;
        }
        add_gguf_tensor(name, t, std::move(shape), t.data, t.n_elements, expand_blocks);
    }
    for (const auto& [target, pair] : kv_b) {
        // Some converters keep attn_kv_b beside its halves: the same weights, used as they are.
        if (m_tensors.count(target)) continue;
        const auto& [k, v] = pair;
        if (k == nullptr || v == nullptr)
            throw Error(ErrorCode::MissingTensor, m_source + ": \"" + (k ? k->name : v->name) +
                                                      "\" has no partner (attn_k_b and attn_v_b come in pairs)");
        add_gguf_kv_b(target, *k, *v);
    }
}

namespace {

std::optional<Dtype> gguf_plain_dtype(uint32_t type) {
    switch (type) {
    case 0: return Dtype::F32;
    case 1: return Dtype::F16;
    case 30: return Dtype::BF16;
    default: return std::nullopt;
    }
}

// Writes n floats as `to` (F32 or BF16).
void store_floats(const float* src, int64_t n, Dtype to, std::byte* out) {
    if (to == Dtype::F32) {
        std::memcpy(out, src, size_t(n) * 4);
        return;
    }
    uint16_t* o = reinterpret_cast<uint16_t*>(out);
#pragma omp parallel for schedule(static) if (n >= (1 << 18))
    for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(src[i]);
}

}  // namespace

void WeightStore::add_gguf_tensor(const std::string& name, const GgufTensor& t, std::vector<int64_t> shape,
                                  const std::byte* data, int64_t n, bool expand) {
    TensorInfo info;
    info.name = name;
    info.shape = std::move(shape);
    info.file = m_part_source + " (" + t.name + ", " + ggml_type_name(t.type) + ")";
    if (auto plain = gguf_plain_dtype(t.type)) {
        info.dtype = *plain;
        info.data = data;
        info.n_bytes = uint64_t(n) * dtype_size(*plain);
    } else if (info.shape.size() >= 2 && !expand) {
        // Matrices stay in their blocks (each row whole blocks: ne[0] is), used in place.
        info.dtype = Dtype::Ggml;
        info.ggml_type = t.type;
        info.data = data;
        const GgmlTypeInfo* blocks = ggml_type_info(t.type);
        info.n_bytes = uint64_t(n / blocks->block) * uint64_t(blocks->bytes);
    } else {
        // Vectors (norms, biases; converters keep them F32) expanded to F32, matrices
        // (expand_gguf) to BF16, the engine's weight type.
        info.dtype = info.shape.size() == 1 ? Dtype::F32 : Dtype::BF16;
        info.n_bytes = uint64_t(n) * dtype_size(info.dtype);
        const uint32_t type = t.type;
        const Dtype to = info.dtype;
        m_expanded_types.insert(ggml_type_name(type));
        if (to == Dtype::BF16) m_block_source[name] = {type, data};
        m_pending[name] = [type, data, n, to](std::byte* out) {
            const GgmlTypeInfo* blocks = ggml_type_info(type);
            const int64_t block = blocks->block, bytes = blocks->bytes;
            const int64_t chunk = int64_t(1) << 20;  // a multiple of every block size
            std::vector<float> tmp(size_t(std::min(n, chunk)));
            for (int64_t i = 0; i < n; i += chunk) {
                const int64_t m = std::min(chunk, n - i);
                ggml_dequantize(type, data + i / block * bytes, tmp.data(), m);
                store_floats(tmp.data(), m, to, out + uint64_t(i) * dtype_size(to));
            }
        };
        m_expand_total += info.n_bytes;
    }
    if (!m_tensors.emplace(name, std::move(info)).second)
        throw Error(ErrorCode::BadFormat, m_part_source + ": two tensors give \"" + name + "\" (\"" + t.name + "\" is one)");
}

void WeightStore::add_gguf_kv_b(const std::string& name, const GgufTensor& k, const GgufTensor& v) {
    // attn_k_b: [n_h, d_c, d_n] (each head's k_b transposed); attn_v_b: [n_h, d_v, d_c].
    // kv_b_proj: [n_h * (d_n + d_v), d_c], each head's d_n key rows then its d_v value rows.
    const auto ks = k.torch_shape(), vs = v.torch_shape();
    auto shape_of = [](const std::vector<int64_t>& shape) {
        TensorInfo t;
        t.shape = shape;
        return t.shape_string();
    };
    if (ks.size() != 3 || vs.size() != 3 || ks[0] != vs[0] || ks[1] != vs[2])
        throw Error(ErrorCode::BadTensor, m_source + ": \"" + k.name + "\" " + shape_of(ks) +
                                              " and \"" + v.name + "\" " + shape_of(vs) +
                                              " are not [heads, latent, key] and [heads, value, latent]");
    const int64_t n_h = ks[0], d_c = ks[1], d_n = ks[2], d_v = vs[1];
    TensorInfo info;
    info.name = name;
    info.shape = {n_h * (d_n + d_v), d_c};
    info.file = m_source + " (" + k.name + " and " + v.name + ")";
    const auto pk = gguf_plain_dtype(k.type), pv = gguf_plain_dtype(v.type);
    const bool raw = pk && pv && *pk == *pv;  // moved element by element, exactly
    // Else through float: F32 when a half is F32 or F16 (kept exact), BF16 otherwise.
    const auto wide = [](std::optional<Dtype> d) { return d && (*d == Dtype::F32 || *d == Dtype::F16); };
    info.dtype = raw ? *pk : wide(pk) || wide(pv) ? Dtype::F32 : Dtype::BF16;
    for (const GgufTensor* half : {&k, &v})
        if (!gguf_plain_dtype(half->type)) m_expanded_types.insert(ggml_type_name(half->type));
    info.n_bytes = uint64_t(info.shape[0] * d_c) * dtype_size(info.dtype);
    const GgufTensor* kp = &k;
    const GgufTensor* vp = &v;
    const Dtype to = info.dtype;
    m_pending[name] = [=](std::byte* out) {
        const size_t es = dtype_size(to);
        auto row = [&](int64_t h, int64_t j) { return out + size_t((h * (d_n + d_v) + j) * d_c) * es; };
        if (raw) {
            for (int64_t h = 0; h < n_h; ++h) {
                for (int64_t j = 0; j < d_n; ++j)
                    for (int64_t c = 0; c < d_c; ++c)
                        std::memcpy(row(h, j) + size_t(c) * es, kp->data + size_t((h * d_c + c) * d_n + j) * es, es);
                std::memcpy(row(h, d_n), vp->data + size_t(h * d_v * d_c) * es, size_t(d_v * d_c) * es);
            }
            return;
        }
        std::vector<float> kf(static_cast<size_t>(kp->n_elements)), vf(static_cast<size_t>(vp->n_elements)),
            r(static_cast<size_t>(d_c));
        ggml_dequantize(kp->type, kp->data, kf.data(), kp->n_elements);
        ggml_dequantize(vp->type, vp->data, vf.data(), vp->n_elements);
        for (int64_t h = 0; h < n_h; ++h) {
            for (int64_t j = 0; j < d_n; ++j) {
                for (int64_t c = 0; c < d_c; ++c) r[size_t(c)] = kf[size_t((h * d_c + c) * d_n + j)];
                store_floats(r.data(), d_c, to, row(h, j));
            }
            for (int64_t j = 0; j < d_v; ++j) store_floats(vf.data() + size_t((h * d_v + j) * d_c), d_c, to, row(h, d_n + j));
        }
    };
    m_expand_total += info.n_bytes;
    m_tensors.emplace(name, std::move(info));  // add_gguf merges only where attn_kv_b itself is absent
}

void WeightStore::materialise(const std::string& name) {
    auto it = m_pending.find(name);
    if (it == m_pending.end()) return;
    m_block_source.erase(name);
    TensorInfo& t = m_tensors.at(name);
    std::unique_ptr<std::vector<std::byte>> buf;
    try {
        buf = std::make_unique<std::vector<std::byte>>(size_t(t.n_bytes));
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, m_source + ": not enough host memory to expand \"" + name + "\" (" +
                                                std::to_string(t.n_bytes >> 20) + " MiB as " + dtype_name(t.dtype) + ")");
    }
    it->second(buf->data());
    m_pending.erase(it);
    t.data = buf->data();
    m_owned.push_back(std::move(buf));
    m_expand_done += t.n_bytes;
    if (m_fp8_progress && m_expand_total > 0)
        m_fp8_progress(std::min(1.0, double(m_expand_done) / double(m_expand_total)));
}

std::vector<std::string> WeightStore::unused_names() const {
    std::vector<std::string> out;
    for (const auto& [name, t] : m_tensors)
        if (!m_used.count(name)) out.push_back(name);
    std::sort(out.begin(), out.end());
    return out;
}

uint64_t WeightStore::total_bytes() const {
    uint64_t b = 0;
    for (const auto& [name, t] : m_tensors) b += t.n_bytes;
    return b;
}

}  // namespace cetus
