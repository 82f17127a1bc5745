// Shared pieces of the CPU kernels: 16-lane float vectors (GCC/Clang vector extensions; the
// compiler maps them to AVX-512, AVX2 or SSE, whatever the build flags allow), unaligned
// loads and stores, a horizontal sum and 2^x, and per-thread sums of parameter gradients.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <limits>
#include <vector>

namespace interformer {

typedef float v16 __attribute__((vector_size(64)));
typedef int i16 __attribute__((vector_size(64)));

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kLog2e = 1.44269504088896341f;  // exp(z) = 2^(z log2 e)

template <typename V = v16> inline V load(const float* p) { V r; __builtin_memcpy(&r, p, sizeof(V)); return r; }
template <typename V> inline void store(float* p, V x) { __builtin_memcpy(p, &x, sizeof(V)); }

// lanes swapped in blocks of `step` (8, 4, 2, 1): the steps of a reduction tree
inline v16 halves_swapped(v16 x, int step) {
  switch (step) {
    case 8: return __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    case 4: return __builtin_shufflevector(x, x, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    case 2: return __builtin_shufflevector(x, x, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    default: return __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  }
}

// horizontal max and sum as trees of shuffles: 4 dependent steps instead of 15
inline float max_of(v16 x) {
  for (int step = 8; step >= 1; step /= 2) { const v16 y = halves_swapped(x, step); x = x > y ? x : y; }
  return x[0];
}
inline float sum_of(v16 x) {
  for (int step = 8; step >= 1; step /= 2) x += halves_swapped(x, step);
  return x[0];
}

// 2^x for x <= 0 (scores minus their max or their log-sum-exp, in base 2), 0 below -126
// (masked keys): x = n + f with n = round(x), |f| <= 1/2, and Cephes' degree-6 polynomial for 2^f.
inline v16 exp2_nonpositive(v16 x) {
  const i16 dead = x < -126.f;
  x = dead ? (v16){} - 126.f : x;
  const v16 shifter = (v16){} + 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const v16 shifted = x + shifter;
  const v16 f = x - (shifted - shifter);
  v16 y = f * 1.535336188319500E-4f + 1.339887440266574E-3f;
  y = y * f + 9.618437357674640E-3f;
  y = y * f + 5.550332471162809E-2f;
  y = y * f + 2.402264791363012E-1f;
  y = y * f + 6.931472028550421E-1f;
  y = y * f + 1.f;
  i16 n, bits;
  __builtin_memcpy(&n, &shifted, sizeof(v16));
  __builtin_memcpy(&bits, &y, sizeof(v16));
  bits += (n - 0x4B400000) << 23;  // the integer part, read off the shifted float's mantissa
  __builtin_memcpy(&y, &bits, sizeof(v16));
  return dead ? (v16){} : y;
}

// Per-thread partial sums of a [rows, cols] float block (a parameter's gradient summed over a
// batch): inside at::parallel_for each thread adds into its own copy, with no lock; total()
// sums the copies.
class ThreadSums {
 public:
  ThreadSums(int64_t rows, int64_t cols)
      : rows_(rows), cols_(cols), data_(static_cast<size_t>(at::get_num_threads()) * rows * cols, 0.f) {}
  float* mine() { return data_.data() + static_cast<size_t>(at::get_thread_num()) * rows_ * cols_; }
  at::Tensor total(const at::TensorOptions& options) {
    const int64_t threads = static_cast<int64_t>(data_.size()) / (rows_ * cols_);
    return at::from_blob(data_.data(), {threads, rows_, cols_}, options).sum(0);
  }

 private:
  int64_t rows_, cols_;
  std::vector<float> data_;
};

}  // namespace interformer
