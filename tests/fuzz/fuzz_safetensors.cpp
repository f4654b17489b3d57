// libFuzzer target for the safetensors header and data-offset validation
// (parse_safetensors). Each input is tried twice: as a whole file image, and as
// the header text alone, framed here with its length and a zeroed data section
// sized to its largest end offset, so that mutations of the JSON reach the
// offset and shape checks without keeping the length prefix in step.
// cetus::Error is the expected answer to bad input; anything else escaping, a
// sanitizer report or a broken invariant on an accepted file is a finding.
#include "cetus/error.h"
#include "safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

namespace {

// Parses an exactly sized copy, so ASan sees any read past the image.
void check_image(const uint8_t* data, size_t size) {
    auto copy = std::make_unique<std::byte[]>(size ? size : 1);
    if (size) std::memcpy(copy.get(), data, size);
    const std::byte* bytes = copy.get();
    try {
        auto tensors = cetus::parse_safetensors(bytes, size, "fuzz.safetensors");
        // An accepted file describes tensors wholly inside the buffer, with byte
        // counts that match shape x dtype. Touch the first and last byte so ASan
        // reports any range the parser let through wrongly.
        volatile uint8_t sink = 0;
        for (const auto& t : tensors) {
            const int64_t n = t.n_elements();
            if (n < 0 || uint64_t(n) * cetus::dtype_size(t.dtype) != t.n_bytes) __builtin_trap();
            if (t.data < bytes || t.data > bytes + size ||
                t.n_bytes > uint64_t(bytes + size - t.data))
                __builtin_trap();
            if (t.n_bytes > 0) {
                sink = sink ^ std::to_integer<uint8_t>(t.data[0]);
                sink = sink ^ std::to_integer<uint8_t>(t.data[t.n_bytes - 1]);
            }
            (void)t.shape_string();
        }
        (void)sink;
    } catch (const cetus::Error&) {
    } catch (const nlohmann::json::exception&) {
    }
}

// The largest data_offsets end (up to 64 KiB) of a header, 0 when it has none.
size_t data_size_for(const std::string& header) {
    const auto j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
    size_t end = 0;
    if (!j.is_object()) return 0;
    for (const auto& [name, e] : j.items()) {
        if (!e.is_object() || !e.contains("data_offsets")) continue;
        const auto& off = e["data_offsets"];
        if (off.is_array() && off.size() == 2 && off[1].is_number_unsigned() &&
            off[1].get<uint64_t>() <= (64u << 10))
            end = std::max<size_t>(end, off[1].get<uint64_t>());
    }
    return end;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    check_image(data, size);

    const std::string header(reinterpret_cast<const char*>(data), size);
    const size_t n_data = data_size_for(header);
    std::string image(8, '\0');
    for (int i = 0; i < 8; ++i) image[size_t(i)] = char((uint64_t(size) >> (8 * i)) & 0xff);
    image += header;
    image.append(n_data, '\0');
    check_image(reinterpret_cast<const uint8_t*>(image.data()), image.size());
    return 0;
}
