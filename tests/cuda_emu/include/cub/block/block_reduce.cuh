// The emulator's cub::BlockReduce: thread 0 combines every thread's value in
// thread order; as in CUB, only thread 0's result is defined (the others get
// their own input back, so code that reads it elsewhere fails its tests).
#pragma once

#include "cuda_emu.h"

namespace cub {

template <typename T, int kThreads>
class BlockReduce {
public:
    struct TempStorage {
        T slot[kThreads];
    };
    explicit BlockReduce(TempStorage& temp) : m_temp(temp) {}

    template <typename Op>
    T Reduce(T v, Op op) {
        return Reduce(v, op, kThreads);
    }
    template <typename Op>
    T Reduce(T v, Op op, int valid) {
        const int t = int(threadIdx.x);
        m_temp.slot[t] = v;
        __syncthreads();
        if (t != 0) return v;
        T r = m_temp.slot[0];
        for (int i = 1; i < valid; ++i) r = op(r, m_temp.slot[i]);
        return r;
    }
    T Sum(T v) {
        return Reduce(v, [](const T& a, const T& b) { return a + b; });
    }

private:
    TempStorage& m_temp;
};

}  // namespace cub
