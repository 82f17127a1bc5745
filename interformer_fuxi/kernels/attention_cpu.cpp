// Fused self-attention for small heads on the CPU: forward and backward.
//
// One (batch row, head) at a time: its keys and values (at most 128 tokens of 8 or 16
// floats) stay in registers and L1 while each query's scores, softmax and weighted sum are
// computed, with no GEMM call per block. The backward recomputes the probabilities from the
// saved log-sum-exp (of the scores in base 2: the kernel's lse output is for its backward
// only), as flash attention does.
//
// Layout: q, k, v, grad_out are [B, H, N, Dh] with any strides but a contiguous last axis;
// out and the gradients are returned in [B, N, H, Dh] memory (seen as [B, H, N, Dh]), the
// layout the output projection reads. bias is an additive key bias [B, N] (0 or -inf); every
// row needs at least one key with a finite bias.
//
// Plain C++ with GCC/Clang vector extensions (simd.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "simd.h"

namespace {

using namespace interformer;

template <int DH> struct Row;  // one head row of DH floats as one vector
template <> struct Row<8> { typedef float type __attribute__((vector_size(32))); };
template <> struct Row<16> { typedef float type __attribute__((vector_size(64))); };

template <typename V, int DH> inline float dot(V a, V b) {
  const V p = a * b;
  v16 w = {};
  __builtin_memcpy(&w, &p, sizeof(V));  // an 8-wide row fills half the lanes, the rest stay 0
  return sum_of(w);
}

struct View {  // [B, H, N, DH] through its strides
  float* p; int64_t sb, sh, sn;
  explicit View(const at::Tensor& t) : p(t.data_ptr<float>()), sb(t.stride(0)), sh(t.stride(1)), sn(t.stride(2)) {}
  float* row(int64_t b, int64_t h, int64_t n) const { return p + b * sb + h * sh + n * sn; }
};

// One (b, h)'s keys, transposed and scaled for the scores (kt[j][c] holds feature j of keys
// 16c .. 16c+15), and the key bias; the keys are padded to a multiple of 16 lanes.
template <int DH, int NC>
struct Keys {
  using R = typename Row<DH>::type;
  alignas(64) v16 kt[DH][NC];
  alignas(64) v16 bias[NC];
  // padded lanes get pad_bias: -inf for the scores, 0 where the product is not a score
  void load_keys(const View& K, const float* key_bias, int64_t b, int64_t h, int64_t N, float scale,
                 float pad_bias = kNegInf) {
    float* ktf = reinterpret_cast<float*>(kt);
    float* bf = reinterpret_cast<float*>(bias);
    for (int64_t n = 0; n < NC * 16; ++n) {
      const bool valid = n < N;
      bf[n] = valid ? (key_bias ? key_bias[b * N + n] * kLog2e : 0.f) : pad_bias;  // base 2
      const float* kr = valid ? K.row(b, h, n) : nullptr;
      for (int j = 0; j < DH; ++j) ktf[j * NC * 16 + n] = valid ? kr[j] * scale : 0.f;
    }
  }
  // scale * q . k_n + bias_n for the 16 NC keys, for two queries at once
  void scores2(R q0, R q1, v16* s0, v16* s1) const {
    v16 a[NC], b[NC];
    for (int c = 0; c < NC; ++c) a[c] = b[c] = bias[c];
    for (int j = 0; j < DH; ++j) {
      const float x = q0[j], y = q1[j];
      for (int c = 0; c < NC; ++c) { a[c] += x * kt[j][c]; b[c] += y * kt[j][c]; }
    }
    for (int c = 0; c < NC; ++c) { s0[c] = a[c]; s1[c] = b[c]; }
  }
};

template <int DH, int NC>
void load_rows(const View& X, int64_t b, int64_t h, int64_t N, typename Row<DH>::type* rows) {
  using R = typename Row<DH>::type;
  for (int64_t n = 0; n < NC * 16; ++n) rows[n] = n < N ? load<R>(X.row(b, h, n)) : R{};
}

// out[u] = sum_n w[u][n] * rows[n] for four weight vectors over the first n_rows rows (a
// multiple of 4; the rows past the keys are zeros): each row load serves four FMAs, two
// accumulators per output hide the FMA latency
template <int DH>
inline void weighted_sum4(const v16* const* w, const typename Row<DH>::type* rows, int64_t n_rows,
                          typename Row<DH>::type* out) {
  using R = typename Row<DH>::type;
  const float* a = reinterpret_cast<const float*>(w[0]);
  const float* b = reinterpret_cast<const float*>(w[1]);
  const float* c = reinterpret_cast<const float*>(w[2]);
  const float* d = reinterpret_cast<const float*>(w[3]);
  R a0 = {}, a1 = {}, b0 = {}, b1 = {}, c0 = {}, c1 = {}, d0 = {}, d1 = {};
  for (int64_t n = 0; n < n_rows; n += 2) {
    const R r0 = rows[n], r1 = rows[n + 1];
    a0 += a[n] * r0;
    b0 += b[n] * r0;
    c0 += c[n] * r0;
    d0 += d[n] * r0;
    a1 += a[n + 1] * r1;
    b1 += b[n + 1] * r1;
    c1 += c[n + 1] * r1;
    d1 += d[n + 1] * r1;
  }
  out[0] = a0 + a1;
  out[1] = b0 + b1;
  out[2] = c0 + c1;
  out[3] = d0 + d1;
}

// softmax of one query's scores in place; returns the log-sum-exp, and 1 / the sum in inv_sum
template <int NC>
inline float softmax(v16* s, float* inv_sum) {
  v16 mv = s[0];
  for (int c = 1; c < NC; ++c) mv = s[c] > mv ? s[c] : mv;
  const float m = max_of(mv);
  v16 lv = {};
  for (int c = 0; c < NC; ++c) { s[c] = exp2_nonpositive(s[c] - m); lv += s[c]; }
  const float l = sum_of(lv);
  *inv_sum = 1.f / l;
  return m + std::log2(l);
}

template <int DH, int NC>
void forward_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const float* key_bias,
                    const at::Tensor& out, const at::Tensor& lse, float scale) {
  using R = typename Row<DH>::type;
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2);
  const View Q(q), K(k), V(v), O(out);
  float* L = lse.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    Keys<DH, NC> keys;
    alignas(64) R values[NC * 16];
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      keys.load_keys(K, key_bias, b, h, N, scale * kLog2e);
      load_rows<DH, NC>(V, b, h, N, values);
      for (int64_t i = 0; i < N; i += 4) {  // four queries share every value load (two every key load)
        int64_t r[4];
        for (int u = 0; u < 4; ++u) r[u] = i + u < N ? i + u : N - 1;  // past the end: the last again
        alignas(64) v16 s[4][NC];
        keys.scores2(load<R>(Q.row(b, h, r[0])), load<R>(Q.row(b, h, r[1])), s[0], s[1]);
        keys.scores2(load<R>(Q.row(b, h, r[2])), load<R>(Q.row(b, h, r[3])), s[2], s[3]);
        float inv[4];
        for (int u = 0; u < 4; ++u) L[bh * N + r[u]] = softmax<NC>(s[u], &inv[u]);
        const v16* w[4] = {s[0], s[1], s[2], s[3]};
        R o[4];
        weighted_sum4<DH>(w, values, (N + 3) / 4 * 4, o);
        for (int u = 3; u >= 0; --u) store(O.row(b, h, r[u]), o[u] * inv[u]);
      }
    }
  });
}

template <int DH, int NC>
void backward_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const float* key_bias,
                     const at::Tensor& out, const at::Tensor& lse, const at::Tensor& grad_out,
                     const at::Tensor& gq, const at::Tensor& gk, const at::Tensor& gv, float scale) {
  using R = typename Row<DH>::type;
  constexpr int NP = NC * 16;
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2);
  const View Q(q), K(k), V(v), O(out), GO(grad_out), GQ(gq), GK(gk), GV(gv);
  const float* L = lse.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    Keys<DH, NC> keys;    // scores
    Keys<DH, NC> values;  // dO . v_n, the same product with the values as keys
    alignas(64) R key_rows[NP], q_rows[NP], do_rows[NP];
    alignas(64) v16 P[NP][NC], dS[NP][NC];  // per query: probabilities, score gradients
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      keys.load_keys(K, key_bias, b, h, N, scale * kLog2e);
      values.load_keys(V, nullptr, b, h, N, 1.f, 0.f);
      load_rows<DH, NC>(K, b, h, N, key_rows);
      load_rows<DH, NC>(Q, b, h, N, q_rows);
      load_rows<DH, NC>(GO, b, h, N, do_rows);
      // dQ row by row: dq_i = sum_n dS_in k_n, dS = P * (dO V^T - D) * scale
      for (int64_t i = 0; i < N; i += 4) {
        int64_t r[4];
        for (int u = 0; u < 4; ++u) r[u] = i + u < N ? i + u : N - 1;  // past the end: the last again
        keys.scores2(q_rows[r[0]], q_rows[r[1]], P[r[0]], P[r[1]]);
        keys.scores2(q_rows[r[2]], q_rows[r[3]], P[r[2]], P[r[3]]);
        values.scores2(do_rows[r[0]], do_rows[r[1]], dS[r[0]], dS[r[1]]);
        values.scores2(do_rows[r[2]], do_rows[r[3]], dS[r[2]], dS[r[3]]);
        for (int64_t row = i; row <= r[3]; ++row) {
          const float D = dot<R, DH>(do_rows[row], load<R>(O.row(b, h, row)));
          const float lse_r = L[bh * N + row];
          for (int c = 0; c < NC; ++c) {
            P[row][c] = exp2_nonpositive(P[row][c] - lse_r);
            dS[row][c] = P[row][c] * (dS[row][c] - D) * scale;
          }
        }
        const v16* w[4] = {dS[r[0]], dS[r[1]], dS[r[2]], dS[r[3]]};
        R g[4];
        weighted_sum4<DH>(w, key_rows, (N + 3) / 4 * 4, g);
        for (int u = 3; u >= 0; --u) store(GQ.row(b, h, r[u]), g[u]);
      }
      // dK = dS^T Q and dV = P^T dO, KB keys at a time (their accumulators fill the registers)
      constexpr int KB = 8;
      for (int64_t n = 0; n < N; n += KB) {
        R dk[KB] = {}, dv[KB] = {};
        for (int64_t i = 0; i < N; ++i) {
          const float* ds = reinterpret_cast<const float*>(dS[i]) + n;
          const float* p = reinterpret_cast<const float*>(P[i]) + n;
          for (int u = 0; u < KB; ++u) {
            dk[u] += ds[u] * q_rows[i];
            dv[u] += p[u] * do_rows[i];
          }
        }
        for (int u = 0; u < KB && n + u < N; ++u) {
          store(GK.row(b, h, n + u), dk[u]);
          store(GV.row(b, h, n + u), dv[u]);
        }
      }
    }
  });
}

using Forward = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const float*,
                         const at::Tensor&, const at::Tensor&, float);
using Backward = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, const float*,
                          const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&, const at::Tensor&, const at::Tensor&, float);

template <int DH, int... NC>
struct Kernels {
  static constexpr Forward forward[] = {forward_kernel<DH, NC>...};
  static constexpr Backward backward[] = {backward_kernel<DH, NC>...};
};
using K8 = Kernels<8, 1, 2, 3, 4, 5, 6, 7, 8>;
using K16 = Kernels<16, 1, 2, 3, 4, 5, 6, 7, 8>;
constexpr int64_t kMaxTokens = 128;

// (wider heads keep PyTorch's flash kernel: its GEMMs pay off there, and 32 lanes per row
// would not fit this kernel's registers)
template <typename Table>
auto pick(int64_t DH, int64_t N, Table t8, Table t16) {
  TORCH_CHECK(N >= 1 && N <= kMaxTokens, "attention_cpu: 1 to ", kMaxTokens, " tokens, got ", N);
  const int64_t c = (N + 15) / 16 - 1;
  if (DH == 8) return t8[c];
  TORCH_CHECK(DH == 16, "attention_cpu: head dim 8 or 16, got ", DH);
  return t16[c];
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4 && t.scalar_type() == at::kFloat && t.device().is_cpu() && t.stride(3) == 1,
              "attention_cpu: ", name, " must be a float32 CPU [B, H, N, Dh] tensor with a contiguous last axis");
}

at::Tensor heads_view(const at::Tensor& like) {  // [B, N, H, Dh] memory seen as [B, H, N, Dh]
  return at::empty({like.size(0), like.size(2), like.size(1), like.size(3)}, like.options()).transpose(1, 2);
}

const float* bias_ptr(const c10::optional<at::Tensor>& bias, const at::Tensor& q) {
  if (!bias.has_value()) return nullptr;
  TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->is_contiguous() && bias->dim() == 2 &&
                  bias->size(0) == q.size(0) && bias->size(1) == q.size(2),
              "attention_cpu: bias must be a contiguous float32 [B, N] tensor");
  return bias->data_ptr<float>();
}

std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const c10::optional<at::Tensor>& bias, double scale) {
  check(q, "q"); check(k, "k"); check(v, "v");
  TORCH_CHECK(q.sizes() == k.sizes() && q.sizes() == v.sizes(), "attention_cpu: q, k, v shapes differ");
  at::Tensor out = heads_view(q);
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  pick(q.size(3), q.size(2), K8::forward, K16::forward)(
      q, k, v, bias_ptr(bias, q), out, lse, static_cast<float>(scale));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const c10::optional<at::Tensor>& bias,
    const at::Tensor& out, const at::Tensor& lse, const at::Tensor& grad_out, double scale) {
  check(q, "q"); check(k, "k"); check(v, "v"); check(out, "out"); check(grad_out, "grad_out");
  at::Tensor gq = heads_view(q), gk = heads_view(q), gv = heads_view(q);
  pick(q.size(3), q.size(2), K8::backward, K16::backward)(
      q, k, v, bias_ptr(bias, q), out, lse.contiguous(), grad_out, gq, gk, gv, static_cast<float>(scale));
  return {gq, gk, gv};
}

}  // namespace

TORCH_LIBRARY(interformer_attention, m) {
  m.def("forward(Tensor q, Tensor k, Tensor v, Tensor? bias, float scale) -> (Tensor, Tensor)");
  m.def("backward(Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor out, Tensor lse, Tensor grad_out, "
        "float scale) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(interformer_attention, CPU, m) {
  m.impl("forward", &attention_forward);
  m.impl("backward", &attention_backward);
}
