// The Sequence Arch's PFFN block on the CPU, forward and backward, one token at a time:
//
//   out_n = S_n + W^T (X_sum LN(S_n)),   LN(s) = (s - mean(s)) / sqrt(var(s) + eps) * gamma + beta
//
// with X_sum [B, M, D] the row's summary tokens and W [M, D] the linear form's weight (its
// W_pffn = X_sum^T W has rank M). Unfused, the block is a LayerNorm, two skinny products and a
// residual addition, each a pass over the [B, N, D] tokens in memory, and as many again
// backward. Here a token is read, normalised, projected and written back in registers: the
// forward reads S once and writes out once; the backward recomputes the normalisation and
// reads S and the output gradient once, and writes S's gradient once.
//
// S, X_sum and grad_out are contiguous float32; D is a multiple of 16 up to 256, M at most 16.
// The parameter gradients (W, gamma, beta) are summed per thread, then over threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "simd.h"

namespace {

using namespace interformer;

constexpr int kMaxVectors = 16;  // D <= 256
constexpr int kMaxRank = 16;     // M <= 16

// One token's normalisation: xhat = (x - mean) * rstd and the affine s = xhat * gamma + beta.
struct Token {
  v16 x[kMaxVectors], xhat[kMaxVectors], s[kMaxVectors];
  float rstd;
  void normalise(const float* row, int nv, const v16* gamma, const v16* beta, float eps) {
    v16 acc = {};
    for (int v = 0; v < nv; ++v) { x[v] = load(row + 16 * v); acc += x[v]; }
    const float mean = sum_of(acc) / (16 * nv);
    v16 sq = {};
    for (int v = 0; v < nv; ++v) { xhat[v] = x[v] - mean; sq += xhat[v] * xhat[v]; }
    rstd = 1.f / std::sqrt(sum_of(sq) / (16 * nv) + eps);
    for (int v = 0; v < nv; ++v) { xhat[v] *= rstd; s[v] = xhat[v] * gamma[v] + beta[v]; }
  }
};

// t[m] = a . rows[m] for the M rows of D floats
inline void dots(const v16* a, const v16 (*rows)[kMaxVectors], int nv, int M, float* t) {
  for (int m = 0; m < M; ++m) {
    v16 acc = {};
    for (int v = 0; v < nv; ++v) acc += a[v] * rows[m][v];
    t[m] = sum_of(acc);
  }
}

struct Shapes {
  int64_t B, N;
  int nv, M;
};

Shapes check(const at::Tensor& S, const at::Tensor& X_sum, const at::Tensor& W, const at::Tensor& gamma,
             const at::Tensor& beta) {
  for (const at::Tensor* t : {&S, &X_sum, &W, &gamma, &beta})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu() && t->is_contiguous(),
                "pffn_block_cpu: contiguous float32 CPU tensors expected");
  TORCH_CHECK(S.dim() == 3 && X_sum.dim() == 3 && W.dim() == 2, "pffn_block_cpu: S [B, N, D], X_sum [B, M, D], W [M, D]");
  const int64_t D = S.size(2), M = W.size(0);
  TORCH_CHECK(D % 16 == 0 && D <= 16 * kMaxVectors, "pffn_block_cpu: D a multiple of 16 up to 256, got ", D);
  TORCH_CHECK(M >= 1 && M <= kMaxRank, "pffn_block_cpu: 1 to 16 summary tokens, got ", M);
  TORCH_CHECK(X_sum.size(0) == S.size(0) && X_sum.size(1) == M && X_sum.size(2) == D && W.size(1) == D &&
                  gamma.numel() == D && beta.numel() == D,
              "pffn_block_cpu: shapes differ");
  return {S.size(0), S.size(1), static_cast<int>(D / 16), static_cast<int>(M)};
}

void load_rows(const float* p, int rows, int nv, v16 (*out)[kMaxVectors]) {
  for (int m = 0; m < rows; ++m)
    for (int v = 0; v < nv; ++v) out[m][v] = load(p + (m * nv + v) * 16);
}

at::Tensor pffn_block_forward(const at::Tensor& S, const at::Tensor& X_sum, const at::Tensor& W,
                              const at::Tensor& gamma, const at::Tensor& beta, double eps) {
  const Shapes sh = check(S, X_sum, W, gamma, beta);
  at::Tensor out = at::empty_like(S);
  const float *s_ptr = S.data_ptr<float>(), *x_ptr = X_sum.data_ptr<float>();
  float* o_ptr = out.data_ptr<float>();
  const int nv = sh.nv, M = sh.M;
  const int64_t D = 16 * nv, N = sh.N;
  v16 w[kMaxRank][kMaxVectors], g[1][kMaxVectors], bt[1][kMaxVectors];
  load_rows(W.data_ptr<float>(), M, nv, w);
  load_rows(gamma.data_ptr<float>(), 1, nv, g);
  load_rows(beta.data_ptr<float>(), 1, nv, bt);
  at::parallel_for(0, sh.B, 1, [&](int64_t begin, int64_t end) {
    v16 xs[kMaxRank][kMaxVectors];
    Token tok;
    float t[kMaxRank];
    for (int64_t b = begin; b < end; ++b) {
      load_rows(x_ptr + b * M * D, M, nv, xs);
      for (int64_t n = 0; n < N; ++n) {
        const int64_t row = (b * N + n) * D;
        tok.normalise(s_ptr + row, nv, g[0], bt[0], static_cast<float>(eps));
        dots(tok.s, xs, nv, M, t);
        for (int v = 0; v < nv; ++v) {
          v16 o = tok.x[v];
          for (int m = 0; m < M; ++m) o += t[m] * w[m][v];
          store(o_ptr + row + 16 * v, o);
        }
      }
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> pffn_block_backward(
    const at::Tensor& S, const at::Tensor& X_sum, const at::Tensor& W, const at::Tensor& gamma,
    const at::Tensor& beta, double eps, const at::Tensor& grad_out) {
  const Shapes sh = check(S, X_sum, W, gamma, beta);
  TORCH_CHECK(grad_out.sizes() == S.sizes() && grad_out.is_contiguous() && grad_out.scalar_type() == at::kFloat,
              "pffn_block_cpu: grad_out must be a contiguous float32 tensor of S's shape");
  at::Tensor gS = at::empty_like(S), gX = at::empty_like(X_sum);
  const int nv = sh.nv, M = sh.M;
  const int64_t D = 16 * nv, N = sh.N;
  const float *s_ptr = S.data_ptr<float>(), *x_ptr = X_sum.data_ptr<float>(), *go_ptr = grad_out.data_ptr<float>();
  float *gs_ptr = gS.data_ptr<float>(), *gx_ptr = gX.data_ptr<float>();
  v16 w[kMaxRank][kMaxVectors], g[1][kMaxVectors], bt[1][kMaxVectors];
  load_rows(W.data_ptr<float>(), M, nv, w);
  load_rows(gamma.data_ptr<float>(), 1, nv, g);
  load_rows(beta.data_ptr<float>(), 1, nv, bt);
  // per-thread sums of the parameter gradients: [gW (M rows) | ggamma | gbeta] x D
  ThreadSums partial(M + 2, D);
  at::parallel_for(0, sh.B, 1, [&](int64_t begin, int64_t end) {
    float* mine = partial.mine();
    v16 xs[kMaxRank][kMaxVectors], gw[kMaxRank][kMaxVectors], gxs[kMaxRank][kMaxVectors];
    v16 ggamma[kMaxVectors], gbeta[kMaxVectors], G[kMaxVectors], gxh[kMaxVectors];
    load_rows(mine, M, nv, gw);
    load_rows(mine + M * D, 1, nv, reinterpret_cast<v16(*)[kMaxVectors]>(ggamma));
    load_rows(mine + (M + 1) * D, 1, nv, reinterpret_cast<v16(*)[kMaxVectors]>(gbeta));
    Token tok;
    float t[kMaxRank], gt[kMaxRank];
    for (int64_t b = begin; b < end; ++b) {
      load_rows(x_ptr + b * M * D, M, nv, xs);
      for (int m = 0; m < M; ++m)
        for (int v = 0; v < nv; ++v) gxs[m][v] = v16{};
      for (int64_t n = 0; n < N; ++n) {
        const int64_t row = (b * N + n) * D;
        tok.normalise(s_ptr + row, nv, g[0], bt[0], static_cast<float>(eps));
        dots(tok.s, xs, nv, M, t);
        for (int v = 0; v < nv; ++v) G[v] = load(go_ptr + row + 16 * v);
        dots(G, w, nv, M, gt);  // the output gradient's coordinates along W's rows
        v16 a = {}, c = {};
        for (int v = 0; v < nv; ++v) {
          v16 gs = {};
          for (int m = 0; m < M; ++m) {
            gw[m][v] += t[m] * G[v];
            gxs[m][v] += gt[m] * tok.s[v];
            gs += gt[m] * xs[m][v];
          }
          ggamma[v] += gs * tok.xhat[v];
          gbeta[v] += gs;
          gxh[v] = gs * g[0][v];
          a += gxh[v];
          c += gxh[v] * tok.xhat[v];
        }
        const float mean_g = sum_of(a) / D, mean_gx = sum_of(c) / D;
        for (int v = 0; v < nv; ++v)  // LayerNorm's backward, plus the residual's gradient
          store(gs_ptr + row + 16 * v, G[v] + tok.rstd * (gxh[v] - mean_g - tok.xhat[v] * mean_gx));
      }
      for (int m = 0; m < M; ++m)
        for (int v = 0; v < nv; ++v) store(gx_ptr + (b * M + m) * D + 16 * v, gxs[m][v]);
    }
    for (int m = 0; m < M; ++m)
      for (int v = 0; v < nv; ++v) store(mine + m * D + 16 * v, gw[m][v]);
    for (int v = 0; v < nv; ++v) {
      store(mine + M * D + 16 * v, ggamma[v]);
      store(mine + (M + 1) * D + 16 * v, gbeta[v]);
    }
  });
  at::Tensor sums = partial.total(S.options());
  return {gS, gX, sums.narrow(0, 0, M).clone(), sums[M].clone(), sums[M + 1].clone()};
}

}  // namespace

TORCH_LIBRARY(interformer_pffn_block, m) {
  m.def("forward(Tensor S, Tensor X_sum, Tensor W, Tensor gamma, Tensor beta, float eps) -> Tensor");
  m.def("backward(Tensor S, Tensor X_sum, Tensor W, Tensor gamma, Tensor beta, float eps, Tensor grad_out) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(interformer_pffn_block, CPU, m) {
  m.impl("forward", &pffn_block_forward);
  m.impl("backward", &pffn_block_backward);
}
