// PMA's pooling on the CPU, forward and backward, one batch row at a time:
//
//   w[j] = softmax_n(scale * S_n . q_j + bias_n),   pooled_j = sum_n w[j][n] S_n
//
// for the J = heads x seeds queries q (folded into the key projection, so shared by every
// row). Unfused, this is a skinny product [B N, d] x [d, J], a softmax over N, a batched
// product, and backward three more skinny products, each a pass over S in memory. Here a
// row's N tokens are read once, its scores and weights stay in L1, and the backward writes
// S's gradient once. A token's J scores are one vector (lanes = queries): q is held
// transposed, so no score needs a horizontal sum, and the softmax over n runs lane-wise.
// Optionally it also returns tokens of S at given positions (the Cross Arch's CLS and recent
// tokens), whose gradient the backward adds into S's: no zeroed buffer of S's size for them.
//
// S is contiguous float32 [B, N, D] with D a multiple of 16 up to 256; q [J, D] with J at most
// 16; bias [B, N] float32 (0 or -inf; every row needs a finite one); N at most 1024.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "simd.h"

namespace {

using namespace interformer;

constexpr int kMaxVectors = 16;  // D <= 256
constexpr int kMaxQueries = 16;  // J <= 16: one lane per query
constexpr int kMaxTokens = 1024;

// rows [J, D] transposed: out[c] holds feature c of every row (lanes past J are 0)
void transposed(const float* rows, int J, int64_t D, v16* out) {
  for (int64_t c = 0; c < D; ++c) {
    v16 x = {};
    for (int j = 0; j < J; ++j) x[j] = rows[j * D + c];
    out[c] = x;
  }
}

// the J products a . rows[j] as one vector, from the rows transposed (4 accumulators)
inline v16 products(const float* a, const v16* rows_t, int64_t D) {
  v16 x0 = {}, x1 = {}, x2 = {}, x3 = {};
  for (int64_t c = 0; c < D; c += 4) {
    x0 += a[c] * rows_t[c];
    x1 += a[c + 1] * rows_t[c + 1];
    x2 += a[c + 2] * rows_t[c + 2];
    x3 += a[c + 3] * rows_t[c + 3];
  }
  return (x0 + x1) + (x2 + x3);
}

struct Shapes {
  int64_t B, N;
  int nv, J;
};

Shapes check(const at::Tensor& S, const at::Tensor& q, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(S.scalar_type() == at::kFloat && q.scalar_type() == at::kFloat && S.device().is_cpu() &&
                  q.device().is_cpu() && S.is_contiguous() && q.is_contiguous() && S.dim() == 3 && q.dim() == 2,
              "seed_pool_cpu: contiguous float32 CPU tensors S [B, N, D] and q [J, D] expected");
  const int64_t D = S.size(2), J = q.size(0);
  TORCH_CHECK(D % 16 == 0 && D <= 16 * kMaxVectors && q.size(1) == D, "seed_pool_cpu: D a multiple of 16 up to 256");
  TORCH_CHECK(J >= 1 && J <= kMaxQueries, "seed_pool_cpu: 1 to 16 queries, got ", J);
  TORCH_CHECK(S.size(1) >= 1 && S.size(1) <= kMaxTokens, "seed_pool_cpu: 1 to 1024 tokens, got ", S.size(1));
  if (bias.has_value())
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() && bias->dim() == 2 &&
                    bias->size(0) == S.size(0) && bias->size(1) == S.size(1),
                "seed_pool_cpu: bias must be a contiguous float32 [B, N] tensor");
  return {S.size(0), S.size(1), static_cast<int>(D / 16), static_cast<int>(J)};
}

void check_index(const c10::optional<at::Tensor>& index, const Shapes& sh) {
  if (!index.has_value()) return;
  TORCH_CHECK(index->scalar_type() == at::kLong && index->is_contiguous() && index->dim() == 2 &&
                  index->size(0) == sh.B,
              "seed_pool_cpu: index must be a contiguous int64 [B, G] tensor");
  const int64_t* p = index->data_ptr<int64_t>();
  for (int64_t i = 0; i < index->numel(); ++i)
    TORCH_CHECK(p[i] >= 0 && p[i] < sh.N, "seed_pool_cpu: index out of range");
}

// pooled [B, J, D], the weights [B, N, 16] (lane j: query j; for the backward), and the
// tokens at index [B, G] ([B, G, D]; empty without an index)
std::tuple<at::Tensor, at::Tensor, at::Tensor> seed_pool_forward(const at::Tensor& S, const at::Tensor& q,
                                                                const c10::optional<at::Tensor>& bias, double scale,
                                                                const c10::optional<at::Tensor>& index) {
  const Shapes sh = check(S, q, bias);
  check_index(index, sh);
  const int nv = sh.nv, J = sh.J;
  const int64_t N = sh.N, D = 16 * nv;
  at::Tensor pooled = at::empty({sh.B, J, D}, S.options());
  at::Tensor weights = at::empty({sh.B, N, 16}, S.options());
  const float* s_ptr = S.data_ptr<float>();
  const float* b_ptr = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  float *p_ptr = pooled.data_ptr<float>(), *w_ptr = weights.data_ptr<float>();
  std::vector<v16> q_t(D);
  transposed(q.data_ptr<float>(), J, D, q_t.data());
  const float scale2 = static_cast<float>(scale) * kLog2e;  // scores in base 2
  at::parallel_for(0, sh.B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* Sb = s_ptr + b * N * D;
      v16* w = reinterpret_cast<v16*>(w_ptr + b * N * 16);
      v16 m = (v16){} + kNegInf;
      for (int64_t n = 0; n < N; ++n) {
        w[n] = products(Sb + n * D, q_t.data(), D) * scale2 + (b_ptr ? b_ptr[b * N + n] * kLog2e : 0.f);
        m = w[n] > m ? w[n] : m;
      }
      v16 l = {};
      for (int64_t n = 0; n < N; ++n) { w[n] = exp2_nonpositive(w[n] - m); l += w[n]; }
      const v16 inv = 1.f / l;
      for (int64_t n = 0; n < N; ++n) w[n] *= inv;
      for (int j = 0; j < J; j += 2) {  // two queries share every token load
        const bool two = j + 1 < J;
        v16 a[kMaxVectors] = {}, c[kMaxVectors] = {};
        for (int64_t n = 0; n < N; ++n) {
          const float wa = w[n][j], wc = two ? w[n][j + 1] : 0.f;
          for (int v = 0; v < nv; ++v) {
            const v16 x = load(Sb + n * D + 16 * v);
            a[v] += wa * x;
            c[v] += wc * x;
          }
        }
        for (int v = 0; v < nv; ++v) {
          store(p_ptr + (b * J + j) * D + 16 * v, a[v]);
          if (two) store(p_ptr + (b * J + j + 1) * D + 16 * v, c[v]);
        }
      }
    }
  });
  at::Tensor gathered = index.has_value() ? at::empty({sh.B, index->size(1), D}, S.options())
                                           : at::empty({0}, S.options());
  if (index.has_value()) {
    const int64_t G = index->size(1);
    const int64_t* ix = index->data_ptr<int64_t>();
    float* g_ptr = gathered.data_ptr<float>();
    for (int64_t b = 0; b < sh.B; ++b)
      for (int64_t g = 0; g < G; ++g)
        std::copy(s_ptr + (b * N + ix[b * G + g]) * D, s_ptr + (b * N + ix[b * G + g] + 1) * D, g_ptr + (b * G + g) * D);
  }
  return {pooled, weights, gathered};
}

// gradients of S [B, N, D] and q [J, D]; grad_gathered [B, G, D] (the tokens at index) is
// added into S's
std::tuple<at::Tensor, at::Tensor> seed_pool_backward(const at::Tensor& S, const at::Tensor& q,
                                                     const at::Tensor& weights, const at::Tensor& grad_pooled,
                                                     double scale, const c10::optional<at::Tensor>& index,
                                                     const c10::optional<at::Tensor>& grad_gathered) {
  const Shapes sh = check(S, q, c10::nullopt);
  check_index(index, sh);
  TORCH_CHECK(index.has_value() == grad_gathered.has_value(), "seed_pool_cpu: index and grad_gathered go together");
  const int64_t G = index.has_value() ? index->size(1) : 0;
  if (G > 0)
    TORCH_CHECK(grad_gathered->is_contiguous() && grad_gathered->scalar_type() == at::kFloat &&
                    grad_gathered->sizes() == at::IntArrayRef({sh.B, G, 16 * sh.nv}),
                "seed_pool_cpu: grad_gathered must be a contiguous float32 [B, G, D] tensor");
  const int64_t* ix = G > 0 ? index->data_ptr<int64_t>() : nullptr;
  const float* gg_ptr = G > 0 ? grad_gathered->data_ptr<float>() : nullptr;
  const int nv = sh.nv, J = sh.J;
  const int64_t N = sh.N, D = 16 * nv;
  TORCH_CHECK(weights.is_contiguous() && weights.sizes() == at::IntArrayRef({sh.B, N, 16}) &&
                  grad_pooled.is_contiguous() && grad_pooled.sizes() == at::IntArrayRef({sh.B, J, D}),
              "seed_pool_cpu: weights [B, N, 16] and grad_pooled [B, J, D], contiguous");
  at::Tensor gS = at::empty_like(S);
  const float *s_ptr = S.data_ptr<float>(), *g_ptr = grad_pooled.data_ptr<float>();
  const v16* w_all = reinterpret_cast<const v16*>(weights.data_ptr<float>());
  float* gs_ptr = gS.data_ptr<float>();
  const float* q_ptr = q.data_ptr<float>();
  ThreadSums partial(J, D);  // q's gradient
  at::parallel_for(0, sh.B, 1, [&](int64_t begin, int64_t end) {
    float* gq = partial.mine();
    std::vector<v16> gp_t(D), gsc(N);  // g_pooled transposed; the row's score gradients (lanes = queries)
    for (int64_t b = begin; b < end; ++b) {
      const float* Sb = s_ptr + b * N * D;
      const float* gp = g_ptr + b * J * D;
      const v16* w = w_all + b * N;
      transposed(gp, J, D, gp_t.data());
      // g_w[n] = (S_n . g_pooled_j)_j, then the softmax's backward lane-wise
      v16 c = {};
      for (int64_t n = 0; n < N; ++n) {
        gsc[n] = products(Sb + n * D, gp_t.data(), D);
        c += w[n] * gsc[n];
      }
      for (int64_t n = 0; n < N; ++n) gsc[n] = w[n] * (gsc[n] - c) * static_cast<float>(scale);
      // g_S_n = sum_j g_scores[n][j] q_j + w[n][j] g_pooled_j;  g_q_j += sum_n g_scores[n][j] S_n
      for (int64_t n = 0; n < N; ++n) {
        for (int v = 0; v < nv; ++v) {
          v16 g = {};
          const v16 x = load(Sb + n * D + 16 * v);
          for (int j = 0; j < J; ++j) {
            g += gsc[n][j] * load(q_ptr + j * D + 16 * v) + w[n][j] * load(gp + j * D + 16 * v);
            float* acc = gq + j * D + 16 * v;
            store(acc, load(acc) + gsc[n][j] * x);
          }
          store(gs_ptr + (b * N + n) * D + 16 * v, g);
        }
      }
      for (int64_t g = 0; g < G; ++g) {  // the gathered tokens' gradients, into their rows
        float* row = gs_ptr + (b * N + ix[b * G + g]) * D;
        for (int v = 0; v < nv; ++v) store(row + 16 * v, load(row + 16 * v) + load(gg_ptr + (b * G + g) * D + 16 * v));
      }
    }
  });
  at::Tensor gq = partial.total(S.options());
  return {gS, gq};
}

}  // namespace

TORCH_LIBRARY(interformer_seed_pool, m) {
  m.def("forward(Tensor S, Tensor q, Tensor? bias, float scale, Tensor? index) -> (Tensor, Tensor, Tensor)");
  m.def("backward(Tensor S, Tensor q, Tensor weights, Tensor grad_pooled, float scale, Tensor? index, "
        "Tensor? grad_gathered) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(interformer_seed_pool, CPU, m) {
  m.impl("forward", &seed_pool_forward);
  m.impl("backward", &seed_pool_backward);
}
