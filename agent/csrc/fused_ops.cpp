// Fused CPU kernels for the transformer's training and inference steps, as libtorch autograd
// functions behind a C interface for `agent::fused_ops` (Rust).
//
// Why: libtorch's composite RMSNorm runs five kernels forward and about ten backward, each a
// full pass over the activations; for the tiny models of this project (width 64-256) that is
// ~17% of a DPT training step (perf; README, "Throughput"); the rotary embedding is seven
// kernels forward and about twelve backward. One pass forward and one pass backward do the same
// arithmetic (up to float summation order).
//
// Only f32 tensors on the CPU come here; the Rust side keeps the composite form for every other
// device and dtype. The backward is not itself differentiable (no method here needs second
// derivatives).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

thread_local std::string last_error;

// Rows per parallel task: a row is D floats (64-256 here), so a task is a few hundred KiB.
constexpr int64_t kGrain = 256;

// Dot product with 8 independent accumulators (vectorises without -ffast-math).
inline float dot(const float* a, const float* b, int64_t d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= d; k += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[k + j] * b[k + j];
  float s = 0;
  for (; k < d; ++k) s += a[k] * b[k];
  return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// RMSNorm over the last dimension: y = x * r * w, r = 1 / sqrt(mean(x^2) + eps) per row.
struct RmsNormFn : public torch::autograd::Function<RmsNormFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& w,
                            double eps) {
    const int64_t d = x_in.size(-1);
    const at::Tensor x = x_in.contiguous().view({-1, d});  // [N, D]
    const at::Tensor wc = w.contiguous();                  // [D]
    const int64_t n = x.size(0);
    at::Tensor y = at::empty_like(x);                     // [N, D]
    at::Tensor inv = at::empty({n}, x.options());          // [N]
    const float* xp = x.data_ptr<float>();
    const float* wp = wc.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    float* ip = inv.data_ptr<float>();
    const float fd = static_cast<float>(d);
    const float feps = static_cast<float>(eps);
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const float* xr = xp + row * d;
        float* yr = yp + row * d;
        const float r = 1.0f / std::sqrt(dot(xr, xr, d) / fd + feps);
        ip[row] = r;
        for (int64_t k = 0; k < d; ++k) yr[k] = (xr[k] * r) * wp[k];
      }
    });
    ctx->save_for_backward({x, wc, inv});
    return y.view(x_in.sizes());
  }

  // dx = r * (g - x * r^2 * mean(g * x)) with g = dy * w;  dw = sum over rows of dy * x * r.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];    // [N, D]
    const at::Tensor& w = saved[1];    // [D]
    const at::Tensor& inv = saved[2];  // [N]
    const int64_t n = x.size(0), d = x.size(1);
    const at::Tensor dy = grads[0].contiguous().view({n, d});
    at::Tensor dx = at::empty_like(x);
    // One partial dw per task, summed in task order afterwards: the same result for the same
    // thread count, whatever the scheduling.
    const int64_t tasks = (n + kGrain - 1) / kGrain;
    std::vector<float> partial(static_cast<size_t>(std::max<int64_t>(tasks, 1) * d), 0.0f);
    const float* xp = x.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    const float* ip = inv.data_ptr<float>();
    const float* gp = dy.data_ptr<float>();
    float* dxp = dx.data_ptr<float>();
    const float fd = static_cast<float>(d);
    at::parallel_for(0, tasks, 1, [&](int64_t t_begin, int64_t t_end) {
      std::vector<float> g(static_cast<size_t>(d));
      for (int64_t t = t_begin; t < t_end; ++t) {
        float* dw = partial.data() + t * d;
        const int64_t row_end = std::min(n, (t + 1) * kGrain);
        for (int64_t row = t * kGrain; row < row_end; ++row) {
          const float* xr = xp + row * d;
          const float* dyr = gp + row * d;
          float* dxr = dxp + row * d;
          const float r = ip[row];
          for (int64_t k = 0; k < d; ++k) {
            g[k] = dyr[k] * wp[k];
            dw[k] += dyr[k] * (xr[k] * r);
          }
          const float c = r * r * dot(g.data(), xr, d) / fd;
          for (int64_t k = 0; k < d; ++k) dxr[k] = r * (g[k] - xr[k] * c);
        }
      }
    });
    at::Tensor dw = at::zeros({d}, x.options());
    float* dwp = dw.data_ptr<float>();
    for (int64_t t = 0; t < tasks; ++t)
      for (int64_t k = 0; k < d; ++k) dwp[k] += partial[t * d + k];
    return {dx.view(grads[0].sizes()), dw, at::Tensor()};
  }
};

// Rotary embedding of x [B, H, T, hd] (last dimension contiguous) by angles whose cos and sin
// are [B, 1, T, hd/2] (broadcast over heads), half-split pairs (dim i with dim i + hd/2):
//   y1 = x1 c - x2 s,  y2 = x1 s + x2 c;  backward rotates the gradient by the opposite angle.
// One pass each way, reading x in whatever batch/head/time strides it has (q and k come as a
// transposed view of the projection).
struct RotaryFn : public torch::autograd::Function<RotaryFn> {
  // out = rotate(x, sign * angle), written contiguous [B, H, T, hd].
  static at::Tensor rotate(const at::Tensor& x_in, const at::Tensor& cos, const at::Tensor& sin,
                           float sign) {
    const at::Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
    const int64_t b = x.size(0), h = x.size(1), t = x.size(2), hd = x.size(3), half = hd / 2;
    const int64_t sb = x.stride(0), sh = x.stride(1), st = x.stride(2);
    at::Tensor y = at::empty({b, h, t, hd}, x.options());
    const float* xp = x.data_ptr<float>();
    const float* cp = cos.data_ptr<float>();  // [B, T, half] contiguous
    const float* sp = sin.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, b * h * t, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t bi = row / (h * t), hi = (row / t) % h, ti = row % t;
        const float* x1 = xp + bi * sb + hi * sh + ti * st;
        const float* x2 = x1 + half;
        const float* c = cp + (bi * t + ti) * half;
        const float* s = sp + (bi * t + ti) * half;
        float* y1 = yp + row * hd;
        float* y2 = y1 + half;
        for (int64_t i = 0; i < half; ++i) {
          const float si = sign * s[i];
          y1[i] = x1[i] * c[i] - x2[i] * si;
          y2[i] = x1[i] * si + x2[i] * c[i];
        }
      }
    });
    return y;
  }

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin) {
    const int64_t b = x.size(0), t = x.size(2), half = x.size(3) / 2;
    const at::Tensor c = cos.expand({b, 1, t, half}).contiguous();
    const at::Tensor s = sin.expand({b, 1, t, half}).contiguous();
    ctx->save_for_backward({c, s});
    return rotate(x, c, s, 1.0f);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    return {rotate(grads[0], saved[0], saved[1], -1.0f), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// RMSNorm of x (f32, CPU, any shape [..., D]) with weight w [D]; a new tensor owned by the
// caller, or nullptr with the message in icrl_fused_last_error().
at::Tensor* icrl_fused_rms_norm(const at::Tensor* x, const at::Tensor* w, double eps) {
  try {
    return new at::Tensor(RmsNormFn::apply(*x, *w, eps));
  } catch (const std::exception& e) {
    last_error = e.what();
    return nullptr;
  }
}

// Rotary embedding of x (f32, CPU, [B, H, T, hd] with hd even) by cos/sin [B, 1, T, hd/2];
// a new tensor owned by the caller, or nullptr with the message in icrl_fused_last_error().
at::Tensor* icrl_fused_rotary(const at::Tensor* x, const at::Tensor* cos, const at::Tensor* sin) {
  try {
    return new at::Tensor(RotaryFn::apply(*x, *cos, *sin));
  } catch (const std::exception& e) {
    last_error = e.what();
    return nullptr;
  }
}

const char* icrl_fused_last_error() { return last_error.c_str(); }

}  // extern "C"
