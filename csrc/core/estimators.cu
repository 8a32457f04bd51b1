// CUDA per-example estimators of the linear layer (plan in estimators_cuda.h). With x_s = x * s_in,
// dy_s = dy * s_out and the perturbation P = sigma * eps:
//   flipout:  y = x mu^T + (x_s P^T) * s_out + b,
//             dx = dy mu + (dy_s P) * s_in,  dmu = dy^T x,  drho = (dy_s^T x_s) * eps * sigmoid(rho);
//   local reparameterization, with dvar = dy * eps_out / (2 y_std) (0 where y_std is 0):
//             y_std = sqrt(x^2 (sigma^2)^T),  y = x mu^T + y_std * eps_out + b,
//             dx = dy mu + 2 x (dvar sigma^2),  dmu = dy^T x,  drho = (dvar^T x^2) * 2 sigma * sigmoid(rho).
// y and dx take their noise term first; the product with the means then adds to it in its epilogue,
// in the CPU kernels' order ((mean + noise term) + bias).
#include "cuda_common.cuh"
#include "estimators_cuda.h"
#include "linear_cuda.h"
#include "tiled_gemm.cuh"

namespace fusedbnn {
namespace cuda {
namespace {

// Elementwise passes over [0, n) by groups of four elements, one Philox call each: body.group(g, v)
// draws group g's four values (signs or normals), body(i, v[i % 4]) handles element i.
template <class Body>
__global__ void __launch_bounds__(kThreads) groups_kernel(int64_t n, Body body) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; g < groups; g += int64_t{gridDim.x} * blockDim.x) {
    float v[4];
    body.group(static_cast<uint64_t>(g), v);
    for (int64_t j = 0; j < 4 && 4 * g + j < n; ++j) body(4 * g + j, v[j]);
  }
}

template <class Body>
cudaError_t for_groups(int64_t n, const Body& body, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  groups_kernel<<<grid_for((n + 3) / 4), kThreads, 0, stream>>>(n, body);
  return cudaGetLastError();
}

// out[r, :] = in[r, :] * signs[r / rows_per_example, :] over [rows, width], by the groups of the
// signs [examples, width]: x_s and dy_s.
struct SignedCopy {
  NoiseStream signs;
  const float* in;
  float* out;
  int64_t width, rows_per_example;
  __device__ void group(uint64_t g, float v[4]) const { sign_group(signs, g, v); }
  __device__ void operator()(int64_t i, float sign) const {
    const int64_t first = i / width * rows_per_example * width + i % width;
    for (int64_t r = 0; r < rows_per_example; ++r) out[first + r * width] = in[first + r * width] * sign;
  }
};

// P = sigma * eps: the sampling with zero means, as the CPU kernels draw it.
struct Perturbation {
  NoiseStream w_stream;
  const float* rho;
  float* out;
  __device__ void group(uint64_t g, float v[4]) const { device_normal_group(w_stream, g, v); }
  __device__ void operator()(int64_t i, float eps) const { out[i] = sample_one(0.0f, rho[i], eps); }
};

// dvar = dy * eps_out / (2 y_std), 0 where y_std is 0 (the gradient of sqrt there is taken as 0).
struct VarianceGrad {
  NoiseStream eps_out;
  const float* dy;
  const float* y_std;
  float* out;
  __device__ void group(uint64_t g, float v[4]) const { device_normal_group(eps_out, g, v); }
  __device__ void operator()(int64_t i, float eps) const {
    out[i] = y_std[i] == 0.0f ? 0.0f : dy[i] * eps / (2.0f * y_std[i]);
  }
};

// x^2 of an operand, as it is staged.
template <class Op>
struct Squared {
  Op op;
  static constexpr bool kContiguousCols = Op::kContiguousCols;
  __device__ __forceinline__ float operator()(int64_t r, int64_t c) const {
    const float v = op(r, c);
    return v * v;
  }
};

// sigma^2 = softplus(rho)^2 of a rho operand, as it is staged.
template <class Op>
struct Variance {
  Op rho;
  static constexpr bool kContiguousCols = Op::kContiguousCols;
  __device__ __forceinline__ float operator()(int64_t r, int64_t c) const {
    const float sigma = softplus(rho(r, c));
    return sigma * sigma;
  }
};

// The signs of flat elements [f, f + 4) of a sign stream (one group, or the two f straddles).
__device__ __forceinline__ void signs4(const NoiseStream& s, uint64_t f, float v[4]) {
  float lo[4], hi[4] = {};
  sign_group(s, f / 4, lo);
  const int skip = static_cast<int>(f % 4);
  if (skip > 0) sign_group(s, f / 4 + 1, hi);
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = skip + j < 4 ? lo[skip + j] : hi[skip + j - 4];
}

// c = acc * signs[m / rows_per_example, :]: flipout's noise term of y (s_out) or dx (s_in), [rows, cols].
struct SignedStore {
  float* c;
  int64_t cols;
  NoiseStream signs;
  int64_t rows_per_example;
  __device__ __forceinline__ void operator()(int64_t m, int64_t n, const float acc[4]) const {
    float s[4];
    signs4(signs, static_cast<uint64_t>(m / rows_per_example * cols + n), s);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (n + j < cols) c[m * cols + n + j] = acc[j] * s[j];
    }
  }
};

// c = sqrt(acc): y_std.
struct SqrtStore {
  float* c;
  int64_t cols;
  __device__ __forceinline__ void operator()(int64_t m, int64_t n, const float acc[4]) const {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (n + j < cols) c[m * cols + n + j] = sqrtf(acc[j]);
    }
  }
};

// c = 2 x acc: local reparameterization's noise term of dx.
struct InputScaledStore {
  float* c;
  const float* x;
  int64_t cols;
  __device__ __forceinline__ void operator()(int64_t m, int64_t n, const float acc[4]) const {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = m * cols + n + j;
      if (n + j < cols) c[i] = 2.0f * x[i] * acc[j];
    }
  }
};

// The product with the means, added to the noise term: c = (acc + term) + b, where term is c itself
// (flipout, and dx of both) or, with y_std, y_std * eps_out (local reparameterization's y), and b
// the sampled bias when b_mu is set.
struct AddMean {
  float* c;
  int64_t cols;
  const float* y_std;
  NoiseStream eps_out;
  const float* b_mu;
  const float* b_rho;
  NoiseStream b_stream;
  __device__ __forceinline__ void operator()(int64_t m, int64_t n, const float acc[4]) const {
    float e[4] = {}, b_eps[4] = {};
    if (y_std != nullptr) eps4(eps_out, static_cast<uint64_t>(m * cols + n), e);
    if (b_mu != nullptr) eps4(b_stream, static_cast<uint64_t>(n), b_eps);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = m * cols + n + j;
      if (n + j >= cols) break;
      float sum = acc[j] + (y_std != nullptr ? y_std[i] * e[j] : c[i]);
      if (b_mu != nullptr) sum += sample_one(b_mu[n + j], b_rho[n + j], b_eps[j]);
      c[i] = sum;
    }
  }
};

// dw_rho [out, in] from the product d of the weight-shaped noise term: d * eps * sigmoid(rho)
// (flipout: d = dy_s^T x_s) or d * 2 sigma * sigmoid(rho) (local reparameterization: d = dvar^T x^2).
template <LinearEstimator kEstimator>
struct RhoGrad {
  float* drho;
  const float* rho;
  int64_t cols;
  NoiseStream w_stream;
  __device__ __forceinline__ void operator()(int64_t m, int64_t n, const float acc[4]) const {
    float e[4] = {};
    if (kEstimator == LinearEstimator::kFlipout) eps4(w_stream, static_cast<uint64_t>(m * cols + n), e);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = m * cols + n + j;
      if (n + j >= cols) break;
      if (kEstimator == LinearEstimator::kFlipout) {
        drho[i] = acc[j] * e[j] * sigmoid(rho[i]);
      } else {
        const float sigma = softplus(rho[i]);
        drho[i] = acc[j] * (sigma + sigma) * sigmoid(rho[i]);
      }
    }
  }
};

// Every product: 64 x 64 tiles of C (4 x 4 per thread) when they give every multiprocessor a
// block; else, for a small batch against many features (B=32 of 4096: 64 such tiles, half of them
// empty rows), 16-row tiles, splitting the contraction over two thread groups when 16 x 64 still
// leaves multiprocessors idle (lstm.cu picks its per-step tiles the same way).
template <class OpA, class OpB, class Epilogue>
cudaError_t product(int64_t M, int64_t N, int64_t K, const OpA& a, const OpB& b, const Epilogue& epilogue,
                    cudaStream_t stream) {
  const int64_t sms = multiprocessors();
  if ((M + 63) / 64 * ((N + 63) / 64) >= sms) return tiled_gemm<64, 64, 4, 16>(M, N, K, a, b, epilogue, stream);
  if ((M + 15) / 16 * ((N + 63) / 64) >= sms) return tiled_gemm<16, 64, 1, 32>(M, N, K, a, b, epilogue, stream);
  return tiled_gemm<16, 32, 1, 32, 1, 2>(M, N, K, a, b, epilogue, stream);
}

// y = (x mu^T + term) + b, with AddMean's term.
cudaError_t add_forward_mean(const LinearParams& p, const float* y_std, const NoiseStream& eps_out, float* y,
                             cudaStream_t stream) {
  const AddMean add{y, p.out, y_std, eps_out, p.has_bias ? p.b_mu : nullptr, p.b_rho, p.b_stream};
  return product(p.rows, p.out, p.in, Strided<false>{p.x, p.in}, Strided<true>{p.w_mu, p.in}, add, stream);
}

// The gradients every estimator shares: the bias's (linear_backward's, which with no input features
// computes nothing else), dmu = dy^T x, and dx = dy mu added to the noise term already in dx.
cudaError_t bias_grad(const LinearGradParams& g, cudaStream_t stream) {
  if (!g.has_bias) return cudaSuccess;
  LinearGradParams bias_only = g;
  bias_only.in = 0;
  return linear_backward(bias_only, nullptr, stream);
}

cudaError_t mean_grad(const LinearGradParams& g, cudaStream_t stream) {
  return product(g.out, g.in, g.rows, Strided<true>{g.dy, g.out}, Strided<false>{g.x, g.in},
                 StoreEpilogue{g.dw_mu, g.in, g.in, nullptr}, stream);
}

cudaError_t add_dx_mean(const LinearGradParams& g, cudaStream_t stream) {
  const AddMean add{g.dx, g.in, nullptr, NoiseStream{}, nullptr, nullptr, NoiseStream{}};
  return product(g.rows, g.in, g.out, Strided<false>{g.dy, g.out}, Strided<false>{g.w_mu, g.in}, add, stream);
}

size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Scratch cut into float buffers, each 256-byte aligned.
class ScratchFloats {
 public:
  explicit ScratchFloats(void* scratch) : next_(static_cast<char*>(scratch)) {}
  float* take(int64_t n) {
    float* p = reinterpret_cast<float*>(next_);
    next_ += round_up(sizeof(float) * n);
    return p;
  }
  static size_t bytes(std::initializer_list<int64_t> sizes) {
    size_t total = 0;
    for (int64_t n : sizes) total += round_up(sizeof(float) * n);
    return total;
  }

 private:
  char* next_;
};

}  // namespace

size_t estimator_forward_scratch_bytes(LinearEstimator estimator, const LinearParams& p) {
  // flipout: x_s, P
  return estimator == LinearEstimator::kFlipout ? ScratchFloats::bytes({p.rows * p.in, p.out * p.in}) : 0;
}

size_t estimator_backward_scratch_bytes(LinearEstimator estimator, const LinearParams& p) {
  // flipout: x_s, dy_s, P; local reparameterization: dvar
  return estimator == LinearEstimator::kFlipout ? ScratchFloats::bytes({p.rows * p.in, p.rows * p.out, p.out * p.in})
                                                : ScratchFloats::bytes({p.rows * p.out});
}

cudaError_t flipout_linear_forward(const LinearParams& p, const NoiseStream& x_stream, int64_t rows_per_example,
                                   void* scratch, float* y, cudaStream_t stream) {
  if (p.rows == 0 || p.out == 0) return cudaSuccess;
  ScratchFloats buffers(scratch);
  float* x_signed = buffers.take(p.rows * p.in);
  float* perturbation = buffers.take(p.out * p.in);
  const NoiseStream s_in = derived_stream(x_stream, EstimatorStream::kSignsIn);
  const NoiseStream s_out = derived_stream(x_stream, EstimatorStream::kSignsOut);
  const int64_t examples = p.rows / rows_per_example;
  FUSEDBNN_RETURN_IF_FAILED(
      for_groups(examples * p.in, SignedCopy{s_in, p.x, x_signed, p.in, rows_per_example}, stream));
  FUSEDBNN_RETURN_IF_FAILED(for_groups(p.out * p.in, Perturbation{p.w_stream, p.w_rho, perturbation}, stream));
  FUSEDBNN_RETURN_IF_FAILED(product(p.rows, p.out, p.in, Strided<false>{x_signed, p.in},
                                    Strided<true>{perturbation, p.in}, SignedStore{y, p.out, s_out, rows_per_example},
                                    stream));
  return add_forward_mean(p, nullptr, NoiseStream{}, y, stream);
}

cudaError_t flipout_linear_backward(const LinearGradParams& g, const NoiseStream& x_stream, int64_t rows_per_example,
                                    void* scratch, cudaStream_t stream) {
  FUSEDBNN_RETURN_IF_FAILED(bias_grad(g, stream));
  if (g.in == 0) return cudaSuccess;
  ScratchFloats buffers(scratch);
  float* x_signed = buffers.take(g.rows * g.in);
  float* dy_signed = buffers.take(g.rows * g.out);
  float* perturbation = buffers.take(g.out * g.in);
  const NoiseStream s_in = derived_stream(x_stream, EstimatorStream::kSignsIn);
  const NoiseStream s_out = derived_stream(x_stream, EstimatorStream::kSignsOut);
  const int64_t examples = g.rows / rows_per_example;
  FUSEDBNN_RETURN_IF_FAILED(
      for_groups(examples * g.in, SignedCopy{s_in, g.x, x_signed, g.in, rows_per_example}, stream));
  FUSEDBNN_RETURN_IF_FAILED(
      for_groups(examples * g.out, SignedCopy{s_out, g.dy, dy_signed, g.out, rows_per_example}, stream));
  FUSEDBNN_RETURN_IF_FAILED(for_groups(g.out * g.in, Perturbation{g.w_stream, g.w_rho, perturbation}, stream));
  FUSEDBNN_RETURN_IF_FAILED(mean_grad(g, stream));
  FUSEDBNN_RETURN_IF_FAILED(product(g.out, g.in, g.rows, Strided<true>{dy_signed, g.out},
                                    Strided<false>{x_signed, g.in},
                                    RhoGrad<LinearEstimator::kFlipout>{g.dw_rho, g.w_rho, g.in, g.w_stream}, stream));
  FUSEDBNN_RETURN_IF_FAILED(product(g.rows, g.in, g.out, Strided<false>{dy_signed, g.out},
                                    Strided<false>{perturbation, g.in}, SignedStore{g.dx, g.in, s_in, rows_per_example},
                                    stream));
  return add_dx_mean(g, stream);
}

cudaError_t local_reparam_linear_forward(const LinearParams& p, const NoiseStream& x_stream, void*, float* y,
                                         float* y_std, cudaStream_t stream) {
  if (p.rows == 0 || p.out == 0) return cudaSuccess;
  FUSEDBNN_RETURN_IF_FAILED(product(p.rows, p.out, p.in, Squared<Strided<false>>{{p.x, p.in}},
                                    Variance<Strided<true>>{{p.w_rho, p.in}}, SqrtStore{y_std, p.out}, stream));
  return add_forward_mean(p, y_std, derived_stream(x_stream, EstimatorStream::kOutputNoise), y, stream);
}

cudaError_t local_reparam_linear_backward(const LinearGradParams& g, const NoiseStream& x_stream, const float* y_std,
                                          void* scratch, cudaStream_t stream) {
  FUSEDBNN_RETURN_IF_FAILED(bias_grad(g, stream));
  if (g.in == 0) return cudaSuccess;
  float* dvariance = ScratchFloats(scratch).take(g.rows * g.out);
  const NoiseStream eps_out = derived_stream(x_stream, EstimatorStream::kOutputNoise);
  FUSEDBNN_RETURN_IF_FAILED(for_groups(g.rows * g.out, VarianceGrad{eps_out, g.dy, y_std, dvariance}, stream));
  FUSEDBNN_RETURN_IF_FAILED(mean_grad(g, stream));
  FUSEDBNN_RETURN_IF_FAILED(
      product(g.out, g.in, g.rows, Strided<true>{dvariance, g.out}, Squared<Strided<false>>{{g.x, g.in}},
              RhoGrad<LinearEstimator::kLocalReparam>{g.dw_rho, g.w_rho, g.in, g.w_stream}, stream));
  FUSEDBNN_RETURN_IF_FAILED(product(g.rows, g.in, g.out, Strided<false>{dvariance, g.out},
                                    Variance<Strided<false>>{{g.w_rho, g.in}}, InputScaledStore{g.dx, g.x, g.in},
                                    stream));
  return add_dx_mean(g, stream);
}

}  // namespace cuda
}  // namespace fusedbnn
