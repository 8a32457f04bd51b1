// CUDA Gaussian kernels: one pass over mu / rho per op, four elements (one Philox group, one 16-byte
// access per tensor) per thread and step, grid-stride loops over a grid sized to the device.
#include "cuda_common.cuh"
#include "gaussian_cuda.h"

namespace fusedbnn {
namespace cuda {
namespace {

template <int N>
struct In {
  const float* p[N > 0 ? N : 1];
};
template <int N>
struct Out {
  float* p[N];
};

// eps of group g (elements [4g, 4g + 4)) with kNoise, else zeros.
template <bool kNoise>
__device__ void group_noise(const NoiseStream& s, int64_t g, float e[4]) {
  if constexpr (kNoise) {
    device_normal_group(s, static_cast<uint64_t>(g), e);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) e[j] = 0.0f;
  }
}

// Calls body(eps, x, y) for every element: x holds the NIn inputs, y receives the NOut outputs.
// Group g covers elements [4g, 4g + 4); a full group of 16-byte-aligned tensors moves as float4.
template <bool kNoise, int NIn, int NOut, class Body>
__global__ void __launch_bounds__(kThreads)
    map_kernel(NoiseStream s, int64_t n, In<NIn> in, Out<NOut> out, bool aligned, Body body) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; g < groups; g += int64_t{gridDim.x} * blockDim.x) {
    float e[4];
    group_noise<kNoise>(s, g, e);
    const int64_t i0 = 4 * g;
    if (aligned && i0 + 4 <= n) {
      float x[NIn > 0 ? NIn : 1][4], y[NOut][4];
#pragma unroll
      for (int k = 0; k < NIn; ++k) load4(in.p[k] + i0, x[k]);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float xj[NIn > 0 ? NIn : 1], yj[NOut];
#pragma unroll
        for (int k = 0; k < NIn; ++k) xj[k] = x[k][j];
        body(e[j], xj, yj);
#pragma unroll
        for (int k = 0; k < NOut; ++k) y[k][j] = yj[k];
      }
#pragma unroll
      for (int k = 0; k < NOut; ++k) store4(out.p[k] + i0, y[k]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (i0 + j >= n) break;
        float xj[NIn > 0 ? NIn : 1], yj[NOut];
#pragma unroll
        for (int k = 0; k < NIn; ++k) xj[k] = in.p[k][i0 + j];
        body(e[j], xj, yj);
#pragma unroll
        for (int k = 0; k < NOut; ++k) out.p[k][i0 + j] = yj[k];
      }
    }
  }
}

template <int NIn, int NOut, class Body, bool kNoise = true>
cudaError_t launch_map(const NoiseStream& s, int64_t n, In<NIn> in, Out<NOut> out, Body body, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  bool aligned = true;
  for (int k = 0; k < NIn; ++k) aligned = aligned && all_aligned16({in.p[k]});
  for (int k = 0; k < NOut; ++k) aligned = aligned && all_aligned16({out.p[k]});
  map_kernel<kNoise, NIn, NOut><<<grid_for((n + 3) / 4), kThreads, 0, stream>>>(s, n, in, out, aligned, body);
  return cudaGetLastError();
}

struct Normal {
  __device__ void operator()(float e, const float*, float* y) const { y[0] = e; }
};
struct Sample {
  __device__ void operator()(float e, const float* x, float* y) const { y[0] = sample_one(x[0], x[1], e); }
};
struct SampleGrad {  // x: dw, rho
  __device__ void operator()(float e, const float* x, float* y) const { y[0] = x[0] * e * sigmoid(x[1]); }
};
struct SampleGradAndSample {  // x: dw, mu, rho; y: drho, w
  __device__ void operator()(float e, const float* x, float* y) const {
    y[0] = x[0] * e * sigmoid(x[2]);
    y[1] = sample_one(x[1], x[2], e);
  }
};

// The KL terms and their gradients, as gaussian_impl.h computes them: term(e, mu, rho, prior mean).
struct KlTerm {
  float inv_std_prior, log_std_prior;
  __device__ float operator()(float e, float mu, float rho, float mean) const {
    const float sigma = softplus(rho);
    const float z = (fmaf(sigma, e, mu) - mean) * inv_std_prior;
    return (log_std_prior - log_softplus(rho, sigma)) + 0.5f * (z * z - e * e);
  }
};

struct KlAnalyticTerm {
  float inv_2var_prior, log_std_prior_minus_half;
  __device__ float operator()(float, float mu, float rho, float mean) const {
    const float sigma = softplus(rho), d = mu - mean;
    return (log_std_prior_minus_half - log_softplus(rho, sigma)) + fmaf(sigma, sigma, d * d) * inv_2var_prior;
  }
};

struct KlGrad {  // dmu, drho of scale * KlTerm
  float inv_var_prior;
  __device__ void operator()(float e, float scale, float mu, float rho, float mean, float* y) const {
    const float sigma = softplus(rho);
    const float pull = (fmaf(sigma, e, mu) - mean) * (scale * inv_var_prior);
    y[0] = pull;
    y[1] = (pull * e - scale / sigma) * sigmoid(rho);
  }
};

struct KlAnalyticGrad {  // dmu, drho of scale * KlAnalyticTerm
  float inv_var_prior;
  __device__ void operator()(float, float scale, float mu, float rho, float mean, float* y) const {
    const float sigma = softplus(rho), g = scale * inv_var_prior;
    y[0] = (mu - mean) * g;
    y[1] = (sigma * g - scale / sigma) * sigmoid(rho);
  }
};

// A map_kernel body over x = (mu, rho[, per-element prior mean]), y = (dmu, drho): the gradient
// scaled by the device scalar *dkl, the prior mean the third input or *mean.
template <bool kPerElement, class Grad>
struct PriorGradBody {
  Grad grad;
  const float* mean;
  const float* dkl;
  __device__ void operator()(float e, const float* x, float* y) const {
    grad(e, *dkl, x[0], x[1], kPerElement ? x[2] : *mean, y);
  }
};

// A map_kernel body over x = (dw, mu, rho[, per-element prior mean]), y = (dmu, drho): the sampling
// gradient of dw plus the KL's, scaled by *dkl.
template <bool kPerElement>
struct SampleGradKlBody {
  KlGrad grad;
  const float* mean;
  const float* dkl;
  __device__ void operator()(float e, const float* x, float* y) const {
    grad(e, *dkl, x[1], x[2], kPerElement ? x[3] : *mean, y);
    y[0] += x[0];
    y[1] += x[0] * e * sigmoid(x[2]);
  }
};

template <bool kNoise, class Grad>
cudaError_t launch_prior_grad(const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                              const GaussianPrior& prior, Grad grad, const float* dkl, float* dmu, float* drho,
                              cudaStream_t stream) {
  const Out<2> out{{dmu, drho}};
  if (prior.per_element) {
    return launch_map<3, 2, PriorGradBody<true, Grad>, kNoise>(s, n, In<3>{{mu, rho, prior.mean}}, out,
                                                               {grad, prior.mean, dkl}, stream);
  }
  return launch_map<2, 2, PriorGradBody<false, Grad>, kNoise>(s, n, In<2>{{mu, rho}}, out, {grad, prior.mean, dkl},
                                                              stream);
}

// A fixed number of partial sums (never more): the summation order depends on n alone.
constexpr int kKlBlocks = 1024;

template <class T>
__device__ T block_sum(T v, T* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  return shared[0];
}

template <bool kNoise, class Term>
__global__ void __launch_bounds__(kThreads)
    kl_partial_kernel(NoiseStream s, int64_t n, const float* mu, const float* rho, const float* mean, bool per_element,
                      Term term, double* partial) {
  __shared__ double shared[kThreads];
  const int64_t groups = (n + 3) / 4;
  double total = 0.0;
  for (int64_t g = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; g < groups; g += int64_t{gridDim.x} * blockDim.x) {
    float e[4];
    group_noise<kNoise>(s, g, e);
    float group_sum = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = 4 * g + j;
      if (i < n) group_sum += term(e[j], mu[i], rho[i], mean[per_element ? i : 0]);
    }
    total += group_sum;
  }
  const double block_total = block_sum(total, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = block_total;
}

__global__ void __launch_bounds__(kThreads) kl_final_kernel(const double* partial, int count, float* kl) {
  __shared__ double shared[kThreads];
  double total = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) total += partial[i];
  const double sum = block_sum(total, shared);
  if (threadIdx.x == 0) *kl = static_cast<float>(sum);
}

}  // namespace

cudaError_t fill_normal(const NoiseStream& s, int64_t n, float* out, cudaStream_t stream) {
  return launch_map(s, n, In<0>{}, Out<1>{{out}}, Normal{}, stream);
}

cudaError_t sample_gaussian(const NoiseStream& s, int64_t n, const float* mu, const float* rho, float* w,
                            cudaStream_t stream) {
  return launch_map(s, n, In<2>{{mu, rho}}, Out<1>{{w}}, Sample{}, stream);
}

cudaError_t sample_gaussian_grad(const NoiseStream& s, int64_t n, const float* dw, const float* mu, const float* rho,
                                 float* drho, float* w, cudaStream_t stream) {
  if (w == nullptr) return launch_map(s, n, In<2>{{dw, rho}}, Out<1>{{drho}}, SampleGrad{}, stream);
  return launch_map(s, n, In<3>{{dw, mu, rho}}, Out<2>{{drho, w}}, SampleGradAndSample{}, stream);
}

size_t gaussian_kl_scratch_bytes() { return kKlBlocks * sizeof(double); }

namespace {

template <bool kNoise, class Term>
cudaError_t launch_kl_sum(const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                          const GaussianPrior& prior, Term term, void* scratch, float* kl, cudaStream_t stream) {
  const int64_t groups = (n + 3) / 4;
  const int blocks =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(kKlBlocks, (groups + kThreads - 1) / kThreads)));
  double* partial = static_cast<double*>(scratch);
  kl_partial_kernel<kNoise>
      <<<blocks, kThreads, 0, stream>>>(s, n, mu, rho, prior.mean, prior.per_element, term, partial);
  kl_final_kernel<<<1, kThreads, 0, stream>>>(partial, blocks, kl);
  return cudaGetLastError();
}

}  // namespace

cudaError_t gaussian_kl(const NoiseStream& s, int64_t n, const float* mu, const float* rho, const GaussianPrior& prior,
                        void* scratch, float* kl, cudaStream_t stream) {
  const KlTerm term{1.0f / prior.std, logf(prior.std)};
  return launch_kl_sum<true>(s, n, mu, rho, prior, term, scratch, kl, stream);
}

cudaError_t sample_gaussian_kl(const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                               const GaussianPrior& prior, void* scratch, float* w, float* kl, cudaStream_t stream) {
  const cudaError_t status = sample_gaussian(s, n, mu, rho, w, stream);
  if (status != cudaSuccess) return status;
  return gaussian_kl(s, n, mu, rho, prior, scratch, kl, stream);
}

cudaError_t sample_gaussian_grad_kl(const NoiseStream& s, int64_t n, const float* dw, const float* mu, const float* rho,
                                    const GaussianPrior& prior, const float* dkl, float* dmu, float* drho,
                                    cudaStream_t stream) {
  const KlGrad grad{1.0f / (prior.std * prior.std)};
  const Out<2> out{{dmu, drho}};
  if (prior.per_element) {
    return launch_map<4, 2>(s, n, In<4>{{dw, mu, rho, prior.mean}}, out, SampleGradKlBody<true>{grad, prior.mean, dkl},
                            stream);
  }
  return launch_map<3, 2>(s, n, In<3>{{dw, mu, rho}}, out, SampleGradKlBody<false>{grad, prior.mean, dkl}, stream);
}

cudaError_t gaussian_kl_grad(const NoiseStream& s, int64_t n, const float* mu, const float* rho,
                             const GaussianPrior& prior, const float* dkl, float* dmu, float* drho,
                             cudaStream_t stream) {
  const KlGrad grad{1.0f / (prior.std * prior.std)};
  return launch_prior_grad<true>(s, n, mu, rho, prior, grad, dkl, dmu, drho, stream);
}

cudaError_t gaussian_kl_analytic(int64_t n, const float* mu, const float* rho, const GaussianPrior& prior,
                                 void* scratch, float* kl, cudaStream_t stream) {
  const KlAnalyticTerm term{0.5f / (prior.std * prior.std), logf(prior.std) - 0.5f};
  return launch_kl_sum<false>(NoiseStream{}, n, mu, rho, prior, term, scratch, kl, stream);
}

cudaError_t gaussian_kl_analytic_grad(int64_t n, const float* mu, const float* rho, const GaussianPrior& prior,
                                      const float* dkl, float* dmu, float* drho, cudaStream_t stream) {
  const KlAnalyticGrad grad{1.0f / (prior.std * prior.std)};
  return launch_prior_grad<false>(NoiseStream{}, n, mu, rho, prior, grad, dkl, dmu, drho, stream);
}

}  // namespace cuda
}  // namespace fusedbnn
