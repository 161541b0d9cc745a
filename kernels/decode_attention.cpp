// Decode attention on x86 CPUs with AVX2: a few query rows against a long fp32 cache.
//
// torch's fp32 bmm (MKL sgemm with 3-7 rows per kv head) reads the cache at 3-5 GB/s on an AVX2
// laptop-class CPU and runs these small products on one thread; this kernel splits the keys over
// torch's threads (flash-decoding): a work item is (kv head, kBlock keys), read in sub-blocks of
// kSub keys that stay in L1 while every row of the group reads them (online softmax per row);
// then a combine per row in block order. A row's result depends only on its own query and the
// keys it sees, never on the other rows of the call nor on the thread count: speculative rows and
// batched drafts give the same bits as one row alone. kernels/native.py builds it;
// kernels/attention.py defines the op and the torch reference it is tested against.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kBlock = 256;  // keys per work item (a thread's share of the keys, in blocks)
constexpr int64_t kSub = 32;  // keys per sub-block: its K and V stay in L1 while every row reads them
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// e^x on the 8 lanes (Cephes' polynomial, as avx_mathfun has it): relative error about 1e-7.
inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-88.3762626647949f));
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// One row's running softmax over the sub-blocks of a work item: max score, sum of e^(s - max)
// and the unnormalised output (flash attention's online rescaling).
template <int D>
struct RowState {
  float top, sum, acc[D];
};

// Adds keys [0, n) of a sub-block (at most kSub, pointers in key/value) to one row's state.
template <int D>
void attend_sub(const float* q, const float* const* key, const float* const* value, int64_t n, float scale,
                RowState<D>& st) {
  constexpr int C = D / 8;
  alignas(32) float scores[kSub];
  __m256 qv[C];
  for (int c = 0; c < C; ++c) qv[c] = _mm256_mul_ps(_mm256_loadu_ps(q + 8 * c), _mm256_set1_ps(scale));
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {  // four keys at once: four independent FMA chains, one reduction
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int c = 0; c < C; ++c) {
      a0 = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(key[j] + 8 * c), a0);
      a1 = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(key[j + 1] + 8 * c), a1);
      a2 = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(key[j + 2] + 8 * c), a2);
      a3 = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(key[j + 3] + 8 * c), a3);
    }
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    _mm_store_ps(scores + j, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  }
  for (; j < n; ++j) {
    __m256 a = _mm256_setzero_ps();
    for (int c = 0; c < C; ++c) a = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(key[j] + 8 * c), a);
    scores[j] = hsum(a);
  }
  for (j = n; j < kSub; ++j) scores[j] = kNegInf;  // e^-inf = 0 past the row's keys
  __m256 mx = _mm256_load_ps(scores);
  for (j = 8; j < kSub; j += 8) mx = _mm256_max_ps(mx, _mm256_load_ps(scores + j));
  const float top = std::max(st.top, hmax(mx));
  const __m256 topv = _mm256_set1_ps(top);
  __m256 sumv = _mm256_setzero_ps();
  for (j = 0; j < kSub; j += 8) {
    const __m256 p = exp256(_mm256_sub_ps(_mm256_load_ps(scores + j), topv));
    _mm256_store_ps(scores + j, p);
    sumv = _mm256_add_ps(sumv, p);
  }
  const float alpha = st.top == kNegInf ? 0.f : std::exp(st.top - top);
  st.sum = st.sum * alpha + hsum(sumv);
  st.top = top;
  __m256 out[C];
  const __m256 av = _mm256_set1_ps(alpha);
  for (int c = 0; c < C; ++c) out[c] = _mm256_mul_ps(_mm256_loadu_ps(st.acc + 8 * c), av);
  for (j = 0; j < n; ++j) {
    const __m256 p = _mm256_set1_ps(scores[j]);
    for (int c = 0; c < C; ++c) out[c] = _mm256_fmadd_ps(p, _mm256_loadu_ps(value[j] + 8 * c), out[c]);
  }
  for (int c = 0; c < C; ++c) _mm256_storeu_ps(st.acc + 8 * c, out[c]);
}

// Query row i of m sees the visible keys j = 0 .. keys - m + i, where visible key j is cache
// slot j below prefix_len and slot j - prefix_len + chunk_start from there (the gap between the
// prefix and the chunk is never read).
template <int D>
at::Tensor decode(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t prefix_len,
                  int64_t chunk_start, int64_t chunk_end, double scale) {
  const int64_t hq = q.size(0), m = q.size(1), hkv = k.size(0), slots = k.size(1);
  const int64_t group = hq / hkv, rows = group * m, keys = prefix_len + chunk_end - chunk_start;
  const int64_t blocks = (keys + kBlock - 1) / kBlock, q_head = q.stride(0), q_row = q.stride(1);
  std::vector<float> maxes(hkv * blocks * rows), sums(hkv * blocks * rows), accs(hkv * blocks * rows * D);
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  at::parallel_for(0, hkv * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<RowState<D>> state(rows);
    const float* key[kSub];
    const float* value[kSub];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t h = item / blocks, lo = item % blocks * kBlock, hi = std::min(lo + kBlock, keys);
      for (auto& st : state) st.top = kNegInf, st.sum = 0.f, std::fill(st.acc, st.acc + D, 0.f);
      for (int64_t sub = lo; sub < hi; sub += kSub) {
        const int64_t sub_end = std::min(sub + kSub, hi);
        for (int64_t j = sub; j < sub_end; ++j) {
          const int64_t at = (h * slots + (j < prefix_len ? j : j - prefix_len + chunk_start)) * D;
          key[j - sub] = kp + at, value[j - sub] = vp + at;
        }
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t head = h * group + r / m, i = r % m;
          const int64_t n = std::min(sub_end, keys - m + i + 1) - sub;  // row i sees keys up to its own slot
          if (n > 0) attend_sub<D>(qp + head * q_head + i * q_row, key, value, n, static_cast<float>(scale), state[r]);
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t at = item * rows + r;
        maxes[at] = state[r].top, sums[at] = state[r].sum;
        std::copy(state[r].acc, state[r].acc + D, &accs[at * D]);
      }
    }
  });
  at::Tensor out = at::empty({hq, m, D}, q.options().memory_format(at::MemoryFormat::Contiguous));
  float* op = out.data_ptr<float>();
  for (int64_t h = 0; h < hkv; ++h) {
    for (int64_t r = 0; r < rows; ++r) {
      float top = kNegInf, total = 0.f, o[D] = {};
      for (int64_t b = 0; b < blocks; ++b) top = std::max(top, maxes[(h * blocks + b) * rows + r]);
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t at = (h * blocks + b) * rows + r;
        if (sums[at] == 0.f) continue;
        const float w = std::exp(maxes[at] - top);
        total += w * sums[at];
        for (int d = 0; d < D; ++d) o[d] += w * accs[at * D + d];
      }
      float* dst = op + ((h * group + r / m) * m + r % m) * D;
      for (int d = 0; d < D; ++d) dst[d] = o[d] / total;
    }
  }
  return out;
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t prefix_len,
                            int64_t chunk_start, int64_t chunk_end, int64_t keys_end, double scale) {
  (void)keys_end;  // the reference's masked reduction length; here every row reads only its own keys
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "decode_attention: fp32 tensors only");
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && k.sizes() == v.sizes() && q.size(2) == k.size(2) &&
              q.size(0) % k.size(0) == 0 && q.stride(2) == 1 && k.is_contiguous() && v.is_contiguous(),
              "decode_attention: q [Hq, m, D] with unit stride in D, contiguous k and v [Hkv, S, D]");
  TORCH_CHECK(0 <= prefix_len && prefix_len <= chunk_start && chunk_start <= chunk_end &&
              chunk_end <= k.size(1) && q.size(1) <= chunk_end - chunk_start,
              "decode_attention: need 0 <= prefix_len <= chunk_start <= chunk_end <= slots, m <= chunk");
  switch (q.size(2)) {
    case 16: return decode<16>(q, k, v, prefix_len, chunk_start, chunk_end, scale);
    case 32: return decode<32>(q, k, v, prefix_len, chunk_start, chunk_end, scale);
    case 64: return decode<64>(q, k, v, prefix_len, chunk_start, chunk_end, scale);
    case 96: return decode<96>(q, k, v, prefix_len, chunk_start, chunk_end, scale);
    case 128: return decode<128>(q, k, v, prefix_len, chunk_start, chunk_end, scale);
  }
  TORCH_CHECK(false, "decode_attention: head_dim 16, 32, 64, 96 or 128, got ", q.size(2));
}

}  // namespace

TORCH_LIBRARY_IMPL(kvsplice, CPU, m) {
  m.impl("decode_attention", TORCH_FN(decode_attention));
}
