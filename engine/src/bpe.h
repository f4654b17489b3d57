// Byte-level BPE merging, as the `tokenizers` BPE model does it (byte_fallback off,
// no dropout): a word's bytes start as the 256 byte symbols, then the adjacent pair
// with the lowest merge rank (leftmost on ties) is merged until none is left.
// Parsing and validating tokenizer.json is tokenizer_load.cpp's job.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cetus::detail {

// (left id, right id) -> (rank, merged id), open addressing; built once, then read-only.
class MergeTable {
  public:
    struct Entry {
        uint64_t key = k_empty;
        int32_t rank = 0;
        int32_t merged = 0;
    };

    void reserve(size_t n_merges);
    // A pair listed twice keeps its last rank, as `tokenizers` (a HashMap collect) does.
    void insert(int32_t left, int32_t right, int32_t rank, int32_t merged);
    const Entry* find(int32_t left, int32_t right) const {
        if (m_slots.empty()) return nullptr;
        const uint64_t key = make_key(left, right);
        for (size_t i = hash(key) & m_mask;; i = (i + 1) & m_mask) {
            const Entry& e = m_slots[i];
            if (e.key == key) return &e;
            if (e.key == k_empty) return nullptr;
        }
    }
    size_t size() const { return m_size; }

  private:
    static constexpr uint64_t k_empty = ~0ull;
    static uint64_t make_key(int32_t left, int32_t right) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
               static_cast<uint32_t>(right);
    }
    static size_t hash(uint64_t key) {
        key ^= key >> 33;
        key *= 0xff51afd7ed558ccdull;
        key ^= key >> 33;
        return static_cast<size_t>(key);
    }

    std::vector<Entry> m_slots;
    size_t m_mask = 0;
    size_t m_size = 0;
};

// Per-call working memory, reused across words so merging does not allocate.
struct BpeScratch {
    struct Symbol {
        int32_t id;
        int32_t prev;
        int32_t next;
        bool alive;
    };
    struct Candidate {
        int32_t rank;
        int32_t pos;
        int32_t merged;
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
};

struct BpeModel {
    std::array<int32_t, 256> byte_ids{}; // id of each single-byte symbol
    MergeTable merges;
    bool ignore_merges = false;                     // Llama-3 style: whole-word vocab hit first
    std::unordered_map<std::string, int32_t> words; // raw bytes -> id, only for ignore_merges

    // Appends the ids of one pre-tokenized word (raw bytes, not byte-mapped). O(n log n).
    void encode_word(std::string_view word, BpeScratch& scratch, std::vector<int32_t>& out) const;
};

} // namespace cetus::detail
