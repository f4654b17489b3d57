// The BPE merge loop, mirroring `tokenizers`' Word::merge_all: a binary heap of
// candidate merges ordered by (rank, position), stale entries skipped when popped.
// Using the same queue discipline keeps tie-breaking identical to the reference.
#include "bpe.h"

#include <algorithm>
#include <bit>

namespace cetus::detail {

void MergeTable::reserve(size_t n_merges) {
    const size_t n_slots = std::bit_ceil(std::max<size_t>(16, n_merges * 2));
    m_slots.assign(n_slots, Entry{});
    m_mask = n_slots - 1;
    m_size = 0;
}

void MergeTable::insert(int32_t left, int32_t right, int32_t rank, int32_t merged) {
    if (m_slots.empty() || (m_size + 1) * 2 > m_slots.size()) {
        std::vector<Entry> old = std::move(m_slots);
        reserve(std::max<size_t>(16, old.size()));
        for (const Entry& e : old) {
            if (e.key != k_empty) {
                insert(static_cast<int32_t>(e.key >> 32), static_cast<int32_t>(e.key & 0xffffffffu),
                       e.rank, e.merged);
            }
        }
    }
    const uint64_t key = make_key(left, right);
    for (size_t i = hash(key) & m_mask;; i = (i + 1) & m_mask) {
        Entry& e = m_slots[i];
        if (e.key == k_empty) {
            e = Entry{key, rank, merged};
            ++m_size;
            return;
        }
        if (e.key == key) {
            e.rank = rank;
            e.merged = merged;
            return;
        }
    }
}

namespace {

// std heap functions build a max-heap; "greater" puts the lowest (rank, pos) on top.
bool later(const BpeScratch::Candidate& a, const BpeScratch::Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

} // namespace

void BpeModel::encode_word(std::string_view word, BpeScratch& scratch,
                           std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (word.size() == 1) {
        out.push_back(byte_ids[static_cast<unsigned char>(word[0])]);
        return;
    }
    if (ignore_merges) {
        if (auto it = words.find(std::string(word)); it != words.end()) {
            out.push_back(it->second);
            return;
        }
    }

    auto& sym = scratch.symbols;
    auto& heap = scratch.heap;
    const auto n = static_cast<int32_t>(word.size());
    sym.resize(word.size());
    heap.clear();
    for (int32_t i = 0; i < n; ++i) {
        sym[i] = {byte_ids[static_cast<unsigned char>(word[i])], i - 1, i + 1 < n ? i + 1 : -1,
                  true};
    }
    for (int32_t i = 0; i + 1 < n; ++i) {
        if (const auto* m = merges.find(sym[i].id, sym[i + 1].id))
            heap.push_back({m->rank, i, m->merged});
    }
    std::make_heap(heap.begin(), heap.end(), later);

    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), later);
        const BpeScratch::Candidate top = heap.back();
        heap.pop_back();

        BpeScratch::Symbol& left = sym[top.pos];
        if (!left.alive || left.next < 0) continue;
        BpeScratch::Symbol& right = sym[left.next];
        // Stale entry: the pair at this position changed since it was queued.
        const auto* current = merges.find(left.id, right.id);
        if (current == nullptr || current->merged != top.merged) continue;

        left.id = top.merged;
        right.alive = false;
        left.next = right.next;
        if (left.next >= 0) sym[left.next].prev = top.pos;

        if (left.prev >= 0) {
            if (const auto* m = merges.find(sym[left.prev].id, left.id)) {
                heap.push_back({m->rank, left.prev, m->merged});
                std::push_heap(heap.begin(), heap.end(), later);
            }
        }
        if (left.next >= 0) {
            if (const auto* m = merges.find(left.id, sym[left.next].id)) {
                heap.push_back({m->rank, top.pos, m->merged});
                std::push_heap(heap.begin(), heap.end(), later);
            }
        }
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

} // namespace cetus::detail
