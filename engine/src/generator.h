// The generator: prompt -> prefill (reusing the cached prefix of the previous
// request) -> decode, plain or with MTP speculative decoding (draft, verify in
// one main-model forward, accept, truncate the latent cache). Owns the state
// that outlives a request: which ids the cache holds and their hidden states.
#pragma once

#include "cetus/generate.h"
#include "cetus/tokenizer.h"
#include "backend.h"
#include "host_memory.h"
#include "json_grammar.h"
#include "model.h"
#include "prefix_disk.h"

#include <memory>
#include <optional>

namespace cetus {

class Generator {
public:
    Generator(const Model& model, Backend& backend, const Tokenizer* tokenizer);

    // Throws Error(BadRequest | ContextOverflow) for invalid requests before any work.
    GenerateResult run(const GenerateRequest& request, const TokenSink& sink);

    // Prompt ids a request renders to (template + tokenizer, or its prompt_ids).
    std::vector<int32_t> prompt_ids(const GenerateRequest& request) const;

    void reset();  // forget the cached prefix and the stored ones
    void forget_live();  // forget the cached prefix only (its rows are about to be overwritten)
    int64_t cached_tokens() const { return int64_t(m_cached_ids.size()); }
    // Budget of the prefix store (EngineOptions::prefix_store_bytes); entries beyond it go.
    void set_prefix_store_bytes(uint64_t bytes);
    size_t stored_prefixes() const { return m_saved.size(); }
    // The prefix store's disk tier (EngineOptions::prefix_cache_dir); null: none. Every
    // prefix the store keeps is written there too, and a request takes a file's rows back
    // when they serve it better than the cache and the store in memory.
    void set_prefix_disk(std::unique_ptr<PrefixDisk> disk);
    PrefixDisk* prefix_disk() { return m_disk.get(); }
    // Writes the cached prefix to the disk tier (when it is worth keeping) and waits
    // for the queued writes: before the engine goes (quitting, another model).
    void persist();
    // Forgets every prefix of a conversation (GenerateRequest::cache_tag, not empty):
    // the cached one, the store's, the disk tier's files.
    void forget_tagged(const std::string& tag);

private:
    struct Run;
    struct Stored {
        std::shared_ptr<const SavedPrefix> prefix;
        uint64_t last_used = 0;
    };
    // The live prefix's ids, rows and hidden states, copied out of the cache.
    std::shared_ptr<SavedPrefix> copy_live() const;
    // Before a request replaces most of the cached prefix: keep it, and take a stored
    // prefix back when it serves the request better. Returns the common prefix length
    // of the (possibly restored) cache and ids.
    int64_t reuse_prefix(const std::vector<int32_t>& ids, bool* restored = nullptr, bool* from_disk = nullptr);
    void stash_live();
    uint64_t live_bytes() const;  // what copy_live() holds: rows and hidden states
    // After an answer: writes the cached prefix to the disk tier when it grew enough
    // since the last such write, so a process that is killed (not quit) loses at most
    // that growth. Best effort: a failure is logged, the answer stands. Returns whether
    // it was queued (GenerationStats::prefix_saved).
    bool checkpoint();
    void evict_until(uint64_t limit);  // stored bytes at most limit, least recently used go first
    uint64_t stored_bytes() const;
    const Model& m_model;  // config and MTP count; the forward passes run on m_backend
    Backend& m_backend;
    const Tokenizer* m_tokenizer;
    std::vector<int32_t> m_cached_ids;  // ids whose main-cache rows are valid, in order
    std::string m_live_tag;             // the conversation they belong to (the last request's cache_tag)
    int64_t m_mtp_valid = 0;            // MTP cache rows valid: entry j = (h_j, id j+1)
    int64_t m_on_disk = 0;              // how many of m_cached_ids a disk-tier file (written or queued) holds
    LazyArray<float> m_hidden;          // [capacity, H] post-norm hidden of cached positions
    std::vector<Stored> m_saved;        // the prefix store, least recently used first to go
    std::unique_ptr<PrefixDisk> m_disk;  // its disk tier, if any
    uint64_t m_saved_budget = 0, m_clock = 0;
    // JSON mode's view of the tokenizer, made by the first request that asks for it.
    std::shared_ptr<const JsonConstraint::Vocabulary> m_json_vocabulary;
};

}  // namespace cetus
