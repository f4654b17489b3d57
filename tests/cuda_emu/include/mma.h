// The emulator's WMMA (mma.h): every lane holds the whole 16x16 tile in its
// fragment and computes it alone, so no lane depends on how the hardware
// spreads a tile over a warp. Element-wise work on a fragment (the same
// operation on every element, as the API allows) gives the same tile.
#pragma once

#include "cuda_emu.h"

#include <string>

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
    static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
    static constexpr int num_elements = rows * cols;
    T x[num_elements];  // row-major: x[r * cols + c]
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, T v) {
    for (auto& e : f.x) e = v;
}

// What the API demands of a tile's address and stride: 256-bit aligned, ldm a
// multiple of 16 bytes (8 elements of 16 bits, 4 floats).
template <typename T>
void check_tile(const T* p, unsigned ldm, const char* what) {
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
        ::cuda_emu::fail((std::string(what) + ": a tile address not 32-byte aligned").c_str());
    if ((size_t(ldm) * sizeof(T)) % 16 != 0)
        ::cuda_emu::fail((std::string(what) + ": ldm " + std::to_string(ldm) + " not a multiple of 16 bytes").c_str());
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
    using F = fragment<Use, M, N, K, T, Layout>;
    check_tile(p, ldm, "wmma::load_matrix_sync");
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c)
            f.x[r * F::cols + c] = std::is_same_v<Layout, col_major> ? p[size_t(c) * ldm + r] : p[size_t(r) * ldm + c];
}

template <int M, int N, int K, typename T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t layout) {
    check_tile(p, ldm, "wmma::store_matrix_sync");
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c)
            (layout == mem_col_major ? p[size_t(c) * ldm + r] : p[size_t(r) * ldm + c]) = f.x[r * N + c];
}

// D = A B + C, computed once per warp (cuda_emu::warp_once: the lanes meet, their
// fragments must be the same bytes, as the API's warp-uniform arguments make them,
// and the first lane to go on computes the tile for all).
template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB, typename TC>
void mma_sync(fragment<accumulator, M, N, K, TC, void>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC, void>& c) {
    using FA = fragment<matrix_a, M, N, K, TA, LA>;
    using FB = fragment<matrix_b, M, N, K, TB, LB>;
    using FC = fragment<accumulator, M, N, K, TC, void>;
    static_assert(sizeof(FC) <= ::cuda_emu::k_warp_once_bytes, "a tile larger than warp_once holds");
    struct Args {
        const FA* a;
        const FB* b;
        const FC* c;
        FC* out;
    };
    FC out;
    Args args{&a, &b, &c, &out};
    const void* in[3] = {&a, &b, &c};
    const size_t bytes[3] = {sizeof a, sizeof b, sizeof c};
    ::cuda_emu::warp_once(
        in, bytes, 3, &out, sizeof out,
        [](void* p) {
            const Args& x = *static_cast<const Args*>(p);
            for (int i = 0; i < M; ++i)
                for (int j = 0; j < N; ++j) {
                    float s = float(x.c->x[i * N + j]);
                    for (int k = 0; k < K; ++k) s += float(x.a->x[i * K + k]) * float(x.b->x[k * N + j]);
                    x.out->x[i * N + j] = TC(s);
                }
        },
        &args, "wmma::mma_sync");
    d = out;
}

}  // namespace nvcuda::wmma
