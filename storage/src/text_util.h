// Small text helpers shared by the store, search and exchange code.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cetus::storage::detail {

bool valid_utf8(std::string_view text) noexcept;
std::string new_uuid();                          // random, RFC 4122 version 4 text
bool valid_uuid(std::string_view text) noexcept;  // 8-4-4-4-12 lowercase hex
std::string utc_time_text(int64_t ms);           // "2024-05-01 12:00 UTC"
std::string base64_encode(const std::vector<uint8_t>& bytes);
// Strict: canonical padding only, no whitespace. False for anything else.
bool base64_decode(std::string_view text, std::vector<uint8_t>& bytes);

}  // namespace cetus::storage::detail
