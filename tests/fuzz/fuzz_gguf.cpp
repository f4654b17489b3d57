// libFuzzer target for GGUF files (engine/src/gguf.cpp): the header, metadata and
// tensor table validation, then what the engine derives from an accepted file.
// cetus::Error is the expected answer to bad input; anything else escaping, a
// sanitizer report or a broken invariant on an accepted file is a finding:
// - every tensor lies wholly inside the image and holds whole blocks of its type;
// - each tensor dequantises (the first 64 Ki elements) without reading past it;
// - the config.json and tokenizer.json texts made from the metadata are valid JSON,
//   parse as a config or load as a tokenizer, or are refused with cetus::Error.
#include "cetus/error.h"
#include "cetus/tokenizer.h"
#include "config.h"
#include "gguf.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // An exactly sized copy, so ASan sees any read past the image.
    auto copy = std::make_unique<std::byte[]>(size ? size : 1);
    if (size) std::memcpy(copy.get(), data, size);
    const std::byte* bytes = copy.get();
    std::unique_ptr<cetus::GgufFile> file;
    try {
        file = std::make_unique<cetus::GgufFile>(bytes, size, "fuzz.gguf");
    } catch (const cetus::Error&) {
        return 0;
    }
    std::vector<float> out;
    for (const auto& t : file->contents().tensors) {
        const cetus::GgmlTypeInfo* info = cetus::ggml_type_info(t.type);
        if (!info || t.n_elements <= 0 || t.n_elements % info->block) __builtin_trap();
        if (uint64_t(t.n_elements / info->block) * uint64_t(info->bytes) != t.n_bytes) __builtin_trap();
        if (t.data < bytes || t.data > bytes + size || t.n_bytes > uint64_t(bytes + size - t.data)) __builtin_trap();
        int64_t n = std::min<int64_t>(t.n_elements, int64_t(1) << 16);
        n -= n % info->block;
        out.resize(size_t(n));
        if (n > 0) cetus::ggml_dequantize(t.type, t.data, out.data(), n);
        (void)cetus::gguf_checkpoint_name(t.name);
    }
    try {
        const std::string config = cetus::gguf_config_json(*file);
        if (!nlohmann::json::accept(config)) __builtin_trap();
        (void)cetus::parse_config(config, "fuzz.gguf (config)");
    } catch (const cetus::Error&) {
    }
    try {
        const cetus::GgufTokenizerJson j = cetus::gguf_tokenizer_json(*file);
        if (!nlohmann::json::accept(j.tokenizer) || !nlohmann::json::accept(j.config)) __builtin_trap();
        const auto tok = cetus::Tokenizer::from_json(j.tokenizer, j.config, "fuzz.gguf (tokenizer)");
        const auto ids = tok.encode("Hello, world! 123 <｜User｜> 中文 \xff", true);
        (void)tok.decode(ids);
    } catch (const cetus::Error&) {
    }
    return 0;
}
