// Drafts for speculative decoding looked up in the context itself (prompt lookup
// decoding): the tokens that followed the latest earlier occurrence of the context's
// last few tokens. Text that repeats what came before (code being edited, a quoted
// passage, a summary's names, a list's pattern) is then verified several tokens a step,
// as MTP's drafts are, for models without an MTP module. A guess costs one row of the
// verify batch; a right one saves a step.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace cetus {

constexpr int64_t k_lookup_max_ngram = 4;  // the longest suffix looked for first
constexpr int64_t k_lookup_min_ngram = 1;

// Up to max_drafts ids that followed the latest earlier occurrence of the last m ids of
// ctx, for the largest m in [k_lookup_min_ngram, k_lookup_max_ngram] that occurs
// earlier (the occurrence at the end itself excluded); empty when none does. Past the
// end of ctx the copy reads its own drafts, as if the text went on repeating (an
// occurrence close to the end: a run of one id, a short period).
inline void lookup_drafts(std::span<const int32_t> ctx, int64_t max_drafts, std::vector<int32_t>& drafts) {
    drafts.clear();
    const int64_t n = int64_t(ctx.size());
    if (max_drafts <= 0) return;
    for (int64_t m = std::min(k_lookup_max_ngram, n - 1); m >= k_lookup_min_ngram; --m) {
        const int32_t* key = ctx.data() + n - m;
        // Occurrences starting at i < n - m, latest first; each has a next id (i + m < n).
        for (int64_t i = n - m - 1; i >= 0; --i) {
            int64_t k = 0;
            while (k < m && ctx[size_t(i + k)] == key[k]) ++k;
            if (k < m) continue;
            for (int64_t k = i + m; k < i + m + max_drafts; ++k)
                drafts.push_back(k < n ? ctx[size_t(k)] : drafts[size_t(k - n)]);
            return;
        }
    }
}

}  // namespace cetus
