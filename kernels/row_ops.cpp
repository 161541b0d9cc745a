// The small per-row ops around a CPU decode step's int8 linears (kernels/rows.py has their
// contracts and torch implementations): each is one pass over a few rows, where torch runs
// five to eight ops, and a decode step runs them 6 times a layer.
// Built with -ffp-contract=off: no fused multiply-adds, so the bits are those of the torch ops.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>

namespace {

// rows [n, in] -> ([value rows; residual rows; sentinel], scale [n, 1]): each row divided by its
// max |x|, and what the 7-bit grid (63.5 steps per unit) misses of it, times 2 (engine/linear.py).
std::tuple<at::Tensor, at::Tensor> int8_input(const at::Tensor& rows, const at::Tensor& sentinel) {
  TORCH_CHECK(rows.dim() == 2 && rows.scalar_type() == at::kFloat && sentinel.scalar_type() == at::kFloat &&
              sentinel.dim() == 2 && sentinel.size(0) == 1 && sentinel.size(1) == rows.size(1),
              "int8_input: fp32 rows [n, in] and a sentinel row [1, in]");
  const at::Tensor x = rows.contiguous(), s = sentinel.contiguous();
  const int64_t n = x.size(0), width = x.size(1);
  at::Tensor out = at::empty({2 * n + 1, width}, x.options());
  at::Tensor scale = at::empty({n, 1}, x.options());
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* sp = scale.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = xp + r * width;
      float top = 0.f;
      for (int64_t c = 0; c < width; ++c) top = std::max(top, std::fabs(row[c]));
      top = std::max(top, 1e-30f);
      sp[r] = top;
      float* value = op + r * width;
      float* residual = op + (n + r) * width;
      for (int64_t c = 0; c < width; ++c) {
        value[c] = row[c] / top;
        const float grid = value[c] * 63.5f;
        residual[c] = (grid - std::nearbyint(grid)) * 2.0f;
      }
    }
  });
  std::copy(s.data_ptr<float>(), s.data_ptr<float>() + width, op + 2 * n * width);
  return {out, scale};
}

// fbgemm's result for int8_input's rows -> (value + residual / 127) * scale (+ bias).
at::Tensor int8_output(const at::Tensor& y, const at::Tensor& scale, const std::optional<at::Tensor>& bias) {
  const int64_t n = scale.size(0);
  TORCH_CHECK(y.dim() == 2 && y.scalar_type() == at::kFloat && y.size(0) == 2 * n + 1 && scale.dim() == 2,
              "int8_output: fp32 y [2n + 1, out] and scale [n, 1]");
  const at::Tensor yc = y.contiguous(), sc = scale.contiguous();
  const int64_t width = yc.size(1);
  at::Tensor b;
  if (bias.has_value()) {
    b = bias->contiguous();
    TORCH_CHECK(b.scalar_type() == at::kFloat && b.numel() == width, "int8_output: fp32 bias [out]");
  }
  at::Tensor out = at::empty({n, width}, yc.options());
  const float *yp = yc.data_ptr<float>(), *sp = sc.data_ptr<float>(), *bp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const float inv = 1.0f / 127.0f;
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float *value = yp + r * width, *residual = yp + (n + r) * width;
      float* dst = op + r * width;
      for (int64_t c = 0; c < width; ++c) dst[c] = (value[c] + residual[c] * inv) * sp[r];
      if (bp != nullptr)
        for (int64_t c = 0; c < width; ++c) dst[c] += bp[c];
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(kvsplice, CPU, m) {
  m.impl("int8_input", TORCH_FN(int8_input));
  m.impl("int8_output", TORCH_FN(int8_output));
}
