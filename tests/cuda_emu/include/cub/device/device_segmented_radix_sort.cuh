// The emulator's cub::DeviceSegmentedRadixSort (pairs, float keys, descending):
// a stable sort of each segment, ordered as CUB's radix sort orders float bits.
#pragma once

#include "cuda_emu.h"

#include <cstddef>

namespace cuda_emu {
cudaError_t segmented_sort_pairs_descending(void* temp, size_t& temp_bytes, const float* keys_in, float* keys_out,
                                            const int32_t* values_in, int32_t* values_out, int num_items,
                                            int num_segments, const int32_t* begin, const int32_t* end, int begin_bit,
                                            int end_bit, cudaStream_t s);
}  // namespace cuda_emu

namespace cub {

struct DeviceSegmentedRadixSort {
    static cudaError_t SortPairsDescending(void* temp, size_t& temp_bytes, const float* keys_in, float* keys_out,
                                           const int32_t* values_in, int32_t* values_out, int num_items,
                                           int num_segments, const int32_t* begin, const int32_t* end,
                                           int begin_bit = 0, int end_bit = 32, cudaStream_t s = nullptr) {
        return ::cuda_emu::segmented_sort_pairs_descending(temp, temp_bytes, keys_in, keys_out, values_in, values_out,
                                                           num_items, num_segments, begin, end, begin_bit, end_bit, s);
    }
};

}  // namespace cub
