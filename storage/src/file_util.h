// File-level work done outside SQLite: inspecting a database header before
// SQLite touches the file, creating it owner-only, moving a damaged file aside,
// and telling whether the process that is streaming a message is still alive.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace cetus::storage::detail {

// Throws NotADatabase or Corrupt (truncated) for a file that SQLite would either
// reject or half-read; an empty file is a new database. Reads only.
void inspect_header(const std::filesystem::path& file);

// Creates an empty file with mode 0600 if none exists. Returns true when created.
bool create_private_file(const std::filesystem::path& file);

std::filesystem::path move_aside(const std::filesystem::path& file);

// "pid:start_time:nonce" naming the Store that streams a message; the nonce
// tells Stores of one process apart.
std::string writer_token(uint64_t nonce);
void register_live_writer(uint64_t nonce);
void unregister_live_writer(uint64_t nonce);
// False when the writer's process is gone (or is a zombie, or its pid was reused),
// or when it is this process and that Store is closed.
bool writer_alive(std::string_view token);

uint64_t random_u64();

}  // namespace cetus::storage::detail
