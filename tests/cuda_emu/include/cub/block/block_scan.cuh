// The emulator's cub::BlockScan: prefix sums over the threads in thread order.
#pragma once

#include "cuda_emu.h"

namespace cub {

template <typename T, int kThreads>
class BlockScan {
public:
    struct TempStorage {
        T slot[kThreads];
    };
    explicit BlockScan(TempStorage& temp) : m_temp(temp) {}

    void ExclusiveSum(T v, T& out) {
        const int t = int(threadIdx.x);
        m_temp.slot[t] = v;
        __syncthreads();
        T s{};
        for (int i = 0; i < t; ++i) s = s + m_temp.slot[i];
        __syncthreads();  // every thread has read the slots before any is reused
        out = s;
    }
    void InclusiveSum(T v, T& out) {
        const int t = int(threadIdx.x);
        m_temp.slot[t] = v;
        __syncthreads();
        T s{};
        for (int i = 0; i <= t; ++i) s = s + m_temp.slot[i];
        __syncthreads();
        out = s;
    }

private:
    TempStorage& m_temp;
};

}  // namespace cub
