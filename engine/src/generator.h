// The generator: prompt -> prefill (reusing the cached prefix of the previous
// request) -> decode, plain or with MTP speculative decoding (draft, verify in
// one main-model forward, accept, truncate the latent cache). Owns the state
// that outlives a request: which ids the cache holds and their hidden states.
#pragma once

#include "cetus/generate.h"
#include "cetus/tokenizer.h"
#include "backend.h"
#include "host_memory.h"
#include "model.h"

#include <optional>

namespace cetus {

class Generator {
public:
    Generator(const Model& model, Backend& backend, const Tokenizer* tokenizer);

    // Throws Error(BadRequest | ContextOverflow) for invalid requests before any work.
    GenerateResult run(const GenerateRequest& request, const TokenSink& sink);

    // Prompt ids a request renders to (template + tokenizer, or its prompt_ids).
    std::vector<int32_t> prompt_ids(const GenerateRequest& request) const;

    void reset();  // forget the cached prefix
    int64_t cached_tokens() const { return int64_t(m_cached_ids.size()); }

private:
    struct Run;
    const Model& m_model;  // config and MTP count; the forward passes run on m_backend
    Backend& m_backend;
    const Tokenizer* m_tokenizer;
    std::vector<int32_t> m_cached_ids;  // ids whose main-cache rows are valid, in order
    int64_t m_mtp_valid = 0;            // MTP cache rows valid: entry j = (h_j, id j+1)
    LazyArray<float> m_hidden;          // [capacity, H] post-norm hidden of cached positions
};

}  // namespace cetus
