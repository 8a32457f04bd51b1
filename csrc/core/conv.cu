// CUDA Bayesian convolution (plan in conv_cuda.h). One tiled product kernel, gemm_kernel, serves the
// three products; each is described by two operand gatherers and a store:
//   y  [pixels of y, out/groups]  = InputPatches  (x)  x MatrixColumns (W)
//   dx [pixels of x, in/groups]   = OutputGradPatches (dy) x KernelRows (W^T per tap)
//   dW [kernel rows, out/groups]  = InputTaps (x)  x MatrixColumns (dy), contraction split
// Operands are read from NHWC tensors; padding, stride and dilation are resolved in the gatherers
// (elements outside the input read as zero and are never loaded).
#include <climits>

#include "conv_cuda.h"
#include "cuda_common.cuh"
#include "gaussian_cuda.h"

namespace fusedbnn {
namespace cuda {
namespace {

// A block computes a 128 x 64 tile of a product: 16 x 16 threads of 8 rows x 4 columns (32 FMAs per
// 3 shared float4 reads, against 16 per 2 for 4 x 4; 128 registers: two blocks per multiprocessor).
constexpr int kTileM = 128;
constexpr int kTileN = 64;
constexpr int kRowsPerThread = kTileM / 16, kColsPerThread = kTileN / 16;
constexpr int kTileK = 16;  // contraction steps per shared-memory stage
constexpr int kPad = 4;     // row padding: keeps float4 reads aligned, spreads the transposed stores over banks

// The sizes the gatherers index with (32-bit: conv_size_error rules out larger ones).
struct Shape {
  int in_h, in_w, in_c, out_h, out_w, out_c;
  int kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
  int cin_g, cout_g;
  int in_pixels, out_pixels;  // per image
  int64_t x_image, y_image;   // elements per image

  explicit Shape(const ConvParams& p)
      : in_h(static_cast<int>(p.in_h)), in_w(static_cast<int>(p.in_w)), in_c(static_cast<int>(p.in_channels)),
        out_h(static_cast<int>(p.out_h)), out_w(static_cast<int>(p.out_w)), out_c(static_cast<int>(p.out_channels)),
        kernel_h(static_cast<int>(p.kernel_h)), kernel_w(static_cast<int>(p.kernel_w)),
        stride_h(static_cast<int>(p.stride_h)), stride_w(static_cast<int>(p.stride_w)),
        dilation_h(static_cast<int>(p.dilation_h)), dilation_w(static_cast<int>(p.dilation_w)),
        pad_top(static_cast<int>(p.pad_top)), pad_left(static_cast<int>(p.pad_left)),
        cin_g(static_cast<int>(p.in_channels / p.groups)), cout_g(static_cast<int>(p.out_channels / p.groups)),
        in_pixels(static_cast<int>(p.in_h * p.in_w)), out_pixels(static_cast<int>(p.out_h * p.out_w)),
        x_image(p.in_h * p.in_w * p.in_channels), y_image(p.out_h * p.out_w * p.out_channels) {}
};

// Operands. Each stages rows (m of A, n of B) against contraction steps k; kAlongK says how a
// thread's four loads of a stage lie: 16 threads along k of one row (when k runs along memory) or
// 64 threads along rows. Row() is computed once per block, at(row, k) per stage.

// A of y: row m = (image, oh, ow), k = (i, j, c) over the group's input channels.
struct InputPatches {
  static constexpr bool kAlongK = true;
  const float* x;
  Shape s;
  struct Row {
    int64_t base;
    int h0, w0;
  };
  __device__ Row row(int group, int m) const {
    const int image = m / s.out_pixels, pixel = m - image * s.out_pixels;
    const int oh = pixel / s.out_w, ow = pixel - oh * s.out_w;
    return {image * s.x_image + group * s.cin_g, oh * s.stride_h - s.pad_top, ow * s.stride_w - s.pad_left};
  }
  __device__ float at(const Row& r, int k) const {
    const int c = k % s.cin_g, tap = k / s.cin_g, i = tap / s.kernel_w, j = tap - i * s.kernel_w;
    const int ih = r.h0 + i * s.dilation_h, iw = r.w0 + j * s.dilation_w;
    if (ih < 0 || ih >= s.in_h || iw < 0 || iw >= s.in_w) return 0.0f;
    return x[r.base + (int64_t{ih} * s.in_w + iw) * s.in_c + c];
  }
};

// A of dW: row m = (i, j, c) of the kernel, k = (image, oh, ow) of y.
struct InputTaps {
  static constexpr bool kAlongK = false;
  const float* x;
  Shape s;
  struct Row {
    int h_offset, w_offset, channel;
  };
  __device__ Row row(int group, int m) const {
    const int c = m % s.cin_g, tap = m / s.cin_g, i = tap / s.kernel_w, j = tap - i * s.kernel_w;
    return {i * s.dilation_h - s.pad_top, j * s.dilation_w - s.pad_left, group * s.cin_g + c};
  }
  __device__ float at(const Row& r, int k) const {
    const int image = k / s.out_pixels, pixel = k - image * s.out_pixels;
    const int oh = pixel / s.out_w, ow = pixel - oh * s.out_w;
    const int ih = oh * s.stride_h + r.h_offset, iw = ow * s.stride_w + r.w_offset;
    if (ih < 0 || ih >= s.in_h || iw < 0 || iw >= s.in_w) return 0.0f;
    return x[image * s.x_image + (int64_t{ih} * s.in_w + iw) * s.in_c + r.channel];
  }
};

// B of y and of dW: row n is column group * cols_per_group + n of a row-major matrix, k its row
// (the kernel as [kernel rows, out], or dy as [pixels of y, out]).
struct MatrixColumns {
  static constexpr bool kAlongK = false;
  const float* data;
  int cols, cols_per_group;
  struct Row {
    int column;
  };
  __device__ Row row(int group, int n) const { return {group * cols_per_group + n}; }
  __device__ float at(const Row& r, int k) const { return data[int64_t{k} * cols + r.column]; }
};

// A of dx: row m = (image, ih, iw) of x, k = (i, j, o) over the group's output channels; the dy
// pixel whose window put tap (i, j) on (ih, iw), zero where there is none.
struct OutputGradPatches {
  static constexpr bool kAlongK = true;
  const float* dy;
  Shape s;
  struct Row {
    int64_t base;
    int h, w;  // padded input coordinates
  };
  __device__ Row row(int group, int m) const {
    const int image = m / s.in_pixels, pixel = m - image * s.in_pixels;
    const int ih = pixel / s.in_w, iw = pixel - ih * s.in_w;
    return {image * s.y_image + group * s.cout_g, ih + s.pad_top, iw + s.pad_left};
  }
  __device__ float at(const Row& r, int k) const {
    const int o = k % s.cout_g, tap = k / s.cout_g, i = tap / s.kernel_w, j = tap - i * s.kernel_w;
    const int h = r.h - i * s.dilation_h, w = r.w - j * s.dilation_w;
    if (h < 0 || w < 0) return 0.0f;
    const int oh = h / s.stride_h, ow = w / s.stride_w;
    if (oh * s.stride_h != h || ow * s.stride_w != w || oh >= s.out_h || ow >= s.out_w) return 0.0f;
    return dy[r.base + (int64_t{oh} * s.out_w + ow) * s.out_c + o];
  }
};

// B of dx: row n = input channel of the group, k = (i, j, o): W[i, j, n, group * cout_g + o].
struct KernelRows {
  static constexpr bool kAlongK = true;
  const float* w;
  Shape s;
  struct Row {
    int64_t offset;
  };
  __device__ Row row(int group, int n) const { return {int64_t{n} * s.out_c + group * s.cout_g}; }
  __device__ float at(const Row& r, int k) const {
    const int o = k % s.cout_g, tap = k / s.cout_g;
    return w[int64_t{tap} * s.cin_g * s.out_c + r.offset + o];
  }
};

// Stores of the products' elements (m, n) of one group and split.
struct StoreOutput {  // y (NHWC) = product + sampled bias
  float* y;
  const float* bias;  // null without bias
  int out_c, cout_g;
  __device__ void operator()(int group, int, int m, int n, float v) const {
    const int o = group * cout_g + n;
    y[int64_t{m} * out_c + o] = bias != nullptr ? v + bias[o] : v;
  }
};

struct StoreInputGrad {  // dx (NHWC)
  float* dx;
  int in_c, cin_g;
  __device__ void operator()(int group, int, int m, int n, float v) const {
    dx[int64_t{m} * in_c + group * cin_g + n] = v;
  }
};

struct StoreKernelGrad {  // dW (the kernel's layout), one copy per split
  float* dw;
  int64_t split_stride;
  int out_c, cout_g;
  __device__ void operator()(int group, int split, int m, int n, float v) const {
    dw[split * split_stride + int64_t{m} * out_c + group * cout_g + n] = v;
  }
};

struct GemmShape {
  int m, n, k;    // per group
  int groups;     // blockIdx.z = split * groups + group
  int split_len;  // contraction steps per split (a multiple of kTileK)
};

// Where a thread's loads of one operand stage go: (row, k) within the [kTileK][kRows] stage.
template <bool kAlongK, int kRows>
struct LoadSlots {
  static constexpr int kCount = kRows * kTileK / kThreads;
  int row[kCount], k[kCount];
  __device__ explicit LoadSlots(int t) {
#pragma unroll
    for (int e = 0; e < kCount; ++e) {
      row[e] = kAlongK ? t / kTileK + kThreads / kTileK * e : t % kRows;
      k[e] = kAlongK ? t % kTileK : t / kRows + kThreads / kRows * e;
    }
  }
};

// C[m, n] = sum over the block's split of A(m, k) B(k, n) for one tile; the next stage's global
// loads are issued before the current stage's arithmetic.
template <class A, class B, class Store>
__global__ void __launch_bounds__(kThreads) gemm_kernel(GemmShape g, A a, B b, Store store) {
  __shared__ __align__(16) float a_stage[kTileK][kTileM + kPad];
  __shared__ __align__(16) float b_stage[kTileK][kTileN + kPad];
  const int t = threadIdx.x;
  const int group = blockIdx.z % g.groups, split = blockIdx.z / g.groups;
  const int m_tiles = (g.m + kTileM - 1) / kTileM;
  const int m0 = static_cast<int>(first_tile(m_tiles)) * kTileM, n0 = static_cast<int>(second_tile(m_tiles)) * kTileN;
  const int k_begin = split * g.split_len;
  const int k_end = g.k - k_begin < g.split_len ? g.k : k_begin + g.split_len;

  using ASlots = LoadSlots<A::kAlongK, kTileM>;
  using BSlots = LoadSlots<B::kAlongK, kTileN>;
  const ASlots a_slots(t);
  const BSlots b_slots(t);
  typename A::Row a_rows[ASlots::kCount];
  typename B::Row b_rows[BSlots::kCount];
  bool a_inside[ASlots::kCount], b_inside[BSlots::kCount];
#pragma unroll
  for (int e = 0; e < ASlots::kCount; ++e) {
    a_inside[e] = m0 + a_slots.row[e] < g.m;
    a_rows[e] = a.row(group, a_inside[e] ? m0 + a_slots.row[e] : 0);
  }
#pragma unroll
  for (int e = 0; e < BSlots::kCount; ++e) {
    b_inside[e] = n0 + b_slots.row[e] < g.n;
    b_rows[e] = b.row(group, b_inside[e] ? n0 + b_slots.row[e] : 0);
  }
  float a_next[ASlots::kCount], b_next[BSlots::kCount];
  const auto fetch = [&](int k0) {
#pragma unroll
    for (int e = 0; e < ASlots::kCount; ++e) {
      const int k = k0 + a_slots.k[e];
      a_next[e] = a_inside[e] && k < k_end ? a.at(a_rows[e], k) : 0.0f;
    }
#pragma unroll
    for (int e = 0; e < BSlots::kCount; ++e) {
      const int k = k0 + b_slots.k[e];
      b_next[e] = b_inside[e] && k < k_end ? b.at(b_rows[e], k) : 0.0f;
    }
  };

  const int tx = t % 16, ty = t / 16;
  float acc[kRowsPerThread][kColsPerThread];
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
    for (int j = 0; j < kColsPerThread; ++j) acc[i][j] = 0.0f;
  }
  fetch(k_begin);
  for (int k0 = k_begin; k0 < k_end; k0 += kTileK) {
#pragma unroll
    for (int e = 0; e < ASlots::kCount; ++e) a_stage[a_slots.k[e]][a_slots.row[e]] = a_next[e];
#pragma unroll
    for (int e = 0; e < BSlots::kCount; ++e) b_stage[b_slots.k[e]][b_slots.row[e]] = b_next[e];
    __syncthreads();
    if (k0 + kTileK < k_end) fetch(k0 + kTileK);
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float av[kRowsPerThread], bv[kColsPerThread];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; i += 4) load4(&a_stage[kk][kRowsPerThread * ty + i], av + i);
      load4(&b_stage[kk][kColsPerThread * tx], bv);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
        for (int j = 0; j < kColsPerThread; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int m = m0 + kRowsPerThread * ty + i;
    if (m >= g.m) break;
#pragma unroll
    for (int j = 0; j < kColsPerThread; ++j) {
      const int n = n0 + kColsPerThread * tx + j;
      if (n < g.n) store(group, split, m, n, acc[i][j]);
    }
  }
}

template <class A, class B, class Store>
cudaError_t run_gemm(const GemmShape& g, int splits, const A& a, const B& b, const Store& store, cudaStream_t stream) {
  if (g.m == 0 || g.n == 0) return cudaSuccess;
  const dim3 grid = tile_grid(ceil_div(g.m, kTileM), ceil_div(g.n, kTileN), int64_t{g.groups} * splits);
  gemm_kernel<<<grid, kThreads, 0, stream>>>(g, a, b, store);
  return cudaGetLastError();
}

// dst[image][c][r] = src[image][r][c] for src [images][rows][cols], through 32 x 32 shared tiles
// (both sides coalesced).
__global__ void __launch_bounds__(kThreads)
    transpose_kernel(const float* src, int64_t images, int rows, int cols, float* dst) {
  __shared__ float tile[32][33];
  const int row_tiles = (rows + 31) / 32, col_tiles = (cols + 31) / 32;
  const int lane = threadIdx.x % 32, lane_row = threadIdx.x / 32;
  const int64_t plane = int64_t{rows} * cols;
  for (int64_t u = blockIdx.x; u < images * row_tiles * col_tiles; u += gridDim.x) {
    const int64_t image = u / (int64_t{row_tiles} * col_tiles);
    const int within = static_cast<int>(u - image * row_tiles * col_tiles);
    const int r0 = within / col_tiles * 32, c0 = within % col_tiles * 32;
    for (int k = lane_row; k < 32; k += kThreads / 32) {
      const int r = r0 + k, c = c0 + lane;
      if (r < rows && c < cols) tile[k][lane] = src[image * plane + int64_t{r} * cols + c];
    }
    __syncthreads();
    for (int k = lane_row; k < 32; k += kThreads / 32) {
      const int c = c0 + k, r = r0 + lane;
      if (c < cols && r < rows) dst[image * plane + int64_t{c} * rows + r] = tile[lane][k];
    }
    __syncthreads();
  }
}

cudaError_t transpose(const float* src, int64_t images, int64_t rows, int64_t cols, float* dst, cudaStream_t stream) {
  const int64_t tiles = images * ceil_div(rows, 32) * ceil_div(cols, 32);
  if (tiles == 0) return cudaSuccess;
  const int blocks = static_cast<int>(std::min<int64_t>(tiles, int64_t{multiprocessors()} * 8));
  transpose_kernel<<<blocks, kThreads, 0, stream>>>(src, images, static_cast<int>(rows), static_cast<int>(cols), dst);
  return cudaGetLastError();
}

// partial[blockIdx.y][c] = sum of matrix[r, c] over the block's rows, for 32 columns per block:
// 8 row lanes of 32 coalesced columns, added in lane order.
__global__ void __launch_bounds__(kThreads)
    column_sums_kernel(const float* matrix, int64_t rows, int cols, int64_t rows_per_split, float* partial) {
  __shared__ float lanes[kThreads / 32][32];
  const int lane = threadIdx.x % 32, lane_row = threadIdx.x / 32;
  const int c = blockIdx.x * 32 + lane;
  const int64_t r_begin = int64_t{blockIdx.y} * rows_per_split;
  const int64_t r_end = rows - r_begin < rows_per_split ? rows : r_begin + rows_per_split;
  float sum = 0.0f;
  if (c < cols) {
    for (int64_t r = r_begin + lane_row; r < r_end; r += kThreads / 32) sum += matrix[r * cols + c];
  }
  lanes[lane_row][lane] = sum;
  __syncthreads();
  if (lane_row == 0 && c < cols) {
    float total = 0.0f;
    for (int k = 0; k < kThreads / 32; ++k) total += lanes[k][lane];
    partial[int64_t{blockIdx.y} * cols + c] = total;
  }
}

// out[i] = sum over splits of partial[z * n + i], in split order.
__global__ void __launch_bounds__(kThreads) sum_splits_kernel(const float* partial, int splits, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    float sum = partial[i];
    for (int z = 1; z < splits; ++z) sum += partial[z * n + i];
    out[i] = sum;
  }
}

cudaError_t sum_splits(const float* partial, int splits, int64_t n, float* out, cudaStream_t stream) {
  if (splits == 1 || n == 0) return cudaSuccess;  // one split is written to `out` itself
  sum_splits_kernel<<<grid_for(n), kThreads, 0, stream>>>(partial, splits, n, out);
  return cudaGetLastError();
}

// How the two reductions over batch and pixels (dW and db) are split across blocks: about two
// blocks per multiprocessor, fewer where the work runs out.
struct Splits {
  int count;
  int64_t len;  // contraction steps (dW: rows of y) per split
};

Splits weight_splits(const ConvParams& p) {
  const int64_t steps = ceil_div(p.batch * p.out_h * p.out_w, kTileK);
  const int64_t tiles = p.groups * ceil_div(p.kernel_h * p.kernel_w * (p.in_channels / p.groups), kTileM) *
                        ceil_div(p.out_channels / p.groups, kTileN);
  const int64_t wanted =
      std::max<int64_t>(1, std::min({ceil_div(2 * multiprocessors(), tiles), steps, kMaxGridYZ / p.groups}));
  const int64_t len = kTileK * std::max<int64_t>(1, ceil_div(steps, wanted));
  return {static_cast<int>(std::max<int64_t>(1, ceil_div(p.batch * p.out_h * p.out_w, len))), len};
}

Splits bias_splits(const ConvParams& p) {
  const int64_t rows = p.batch * p.out_h * p.out_w;
  const int64_t wanted = std::max<int64_t>(1, ceil_div(2 * multiprocessors(), ceil_div(p.out_channels, 32)));
  const int64_t len = std::max<int64_t>(256, ceil_div(rows, std::min<int64_t>(wanted, kMaxGridYZ)));
  return {static_cast<int>(std::max<int64_t>(1, ceil_div(rows, len))), len};
}

// Scratch regions, each 256-byte aligned; absent ones have no bytes.
class ScratchLayout {
 public:
  size_t add(int64_t floats) {
    const size_t offset = bytes_;
    bytes_ += (static_cast<size_t>(floats) * sizeof(float) + 255) / 256 * 256;
    return offset;
  }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_ = 0;
};

// (conv.h's conv_kernel_size lives in conv.cc, which the CUDA library does not build.)
int64_t kernel_size(const ConvParams& p) {
  return p.kernel_h * p.kernel_w * (p.in_channels / p.groups) * p.out_channels;
}
int64_t x_size(const ConvParams& p) { return p.batch * p.in_h * p.in_w * p.in_channels; }
int64_t y_size(const ConvParams& p) { return p.batch * p.out_h * p.out_w * p.out_channels; }

struct ForwardScratch {
  size_t w, bias, x_nhwc, y_nhwc, bytes;
  explicit ForwardScratch(const ConvParams& p) {
    ScratchLayout layout;
    w = layout.add(kernel_size(p));
    bias = layout.add(p.has_bias ? p.out_channels : 0);
    x_nhwc = layout.add(p.channels_last ? 0 : x_size(p));
    y_nhwc = layout.add(p.channels_last ? 0 : y_size(p));
    bytes = layout.bytes();
  }
};

struct BackwardScratch {
  size_t w, x_nhwc, dy_nhwc, dx_nhwc, dw_partial, db_partial, bytes;
  explicit BackwardScratch(const ConvParams& p) {
    ScratchLayout layout;
    w = layout.add(kernel_size(p));
    x_nhwc = layout.add(p.channels_last ? 0 : x_size(p));
    dy_nhwc = layout.add(p.channels_last ? 0 : y_size(p));
    dx_nhwc = layout.add(p.channels_last ? 0 : x_size(p));
    const Splits dw = weight_splits(p), db = bias_splits(p);
    dw_partial = layout.add(dw.count > 1 ? dw.count * kernel_size(p) : 0);
    db_partial = layout.add(p.has_bias && db.count > 1 ? db.count * p.out_channels : 0);
    bytes = layout.bytes();
  }
};

float* region(void* scratch, size_t offset) { return reinterpret_cast<float*>(static_cast<char*>(scratch) + offset); }

}  // namespace

const char* conv_size_error(const ConvParams& p) {
  const int64_t cin_g = p.in_channels / p.groups, cout_g = p.out_channels / p.groups;
  const int64_t counts[] = {
      p.batch * p.in_h * p.in_w,
      p.batch * p.out_h * p.out_w,  // rows of x and y
      p.in_h * p.in_w * p.in_channels,
      p.out_h * p.out_w * p.out_channels,  // one image
      p.kernel_h * p.kernel_w * cin_g * p.out_channels,
      p.kernel_h * p.kernel_w * cout_g * p.out_channels,
      p.in_h + p.pad_top + (p.kernel_h - 1) * p.dilation_h + p.out_h * p.stride_h,  // coordinates
      p.in_w + p.pad_left + (p.kernel_w - 1) * p.dilation_w + p.out_w * p.stride_w,
  };
  for (int64_t count : counts) {
    if (count > INT_MAX / 2) return "the CUDA convolution indexes images, kernels and rows with 32-bit integers";
  }
  if (p.groups > kMaxGridYZ) return "the CUDA convolution takes at most 65535 groups";
  return nullptr;
}

size_t conv_forward_scratch_bytes(const ConvParams& p) { return ForwardScratch(p).bytes; }

size_t conv_backward_scratch_bytes(const ConvParams& p) { return BackwardScratch(p).bytes; }

cudaError_t conv_forward(const ConvParams& p, void* scratch, float* y, cudaStream_t stream) {
  if (y_size(p) == 0) return cudaSuccess;
  const ForwardScratch layout(p);
  const Shape s(p);
  float* w = region(scratch, layout.w);
  FUSEDBNN_RETURN_IF_FAILED(sample_gaussian(p.w_stream, kernel_size(p), p.w_mu, p.w_rho, w, stream));
  float* bias = nullptr;
  if (p.has_bias) {
    bias = region(scratch, layout.bias);
    FUSEDBNN_RETURN_IF_FAILED(sample_gaussian(p.b_stream, p.out_channels, p.b_mu, p.b_rho, bias, stream));
  }
  const float* x = p.x;
  float* y_nhwc = y;
  if (!p.channels_last) {
    float* x_stage = region(scratch, layout.x_nhwc);
    FUSEDBNN_RETURN_IF_FAILED(transpose(p.x, p.batch, p.in_channels, s.in_pixels, x_stage, stream));
    x = x_stage;
    y_nhwc = region(scratch, layout.y_nhwc);
  }
  const int k = static_cast<int>(p.kernel_h * p.kernel_w * s.cin_g);
  FUSEDBNN_RETURN_IF_FAILED(run_gemm(
      GemmShape{static_cast<int>(p.batch * s.out_pixels), s.cout_g, k, static_cast<int>(p.groups), k}, 1,
      InputPatches{x, s}, MatrixColumns{w, s.out_c, s.cout_g}, StoreOutput{y_nhwc, bias, s.out_c, s.cout_g}, stream));
  if (!p.channels_last) FUSEDBNN_RETURN_IF_FAILED(transpose(y_nhwc, p.batch, s.out_pixels, p.out_channels, y, stream));
  return cudaSuccess;
}

cudaError_t conv_backward(const ConvGradParams& p, void* scratch, cudaStream_t stream) {
  const BackwardScratch layout(p);
  const Shape s(p);
  const int groups = static_cast<int>(p.groups);
  float* w = region(scratch, layout.w);
  FUSEDBNN_RETURN_IF_FAILED(sample_gaussian(p.w_stream, kernel_size(p), p.w_mu, p.w_rho, w, stream));
  const float* x = p.x;
  const float* dy_nhwc = p.dy;
  float* dx_nhwc = p.dx;
  if (!p.channels_last) {
    float* x_stage = region(scratch, layout.x_nhwc);
    float* dy_stage = region(scratch, layout.dy_nhwc);
    FUSEDBNN_RETURN_IF_FAILED(transpose(p.x, p.batch, p.in_channels, s.in_pixels, x_stage, stream));
    FUSEDBNN_RETURN_IF_FAILED(transpose(p.dy, p.batch, p.out_channels, s.out_pixels, dy_stage, stream));
    x = x_stage;
    dy_nhwc = dy_stage;
    dx_nhwc = region(scratch, layout.dx_nhwc);
  }

  // dx = patches(dy) W^T, every element written once (zero where no window reaches it).
  const int dx_k = static_cast<int>(p.kernel_h * p.kernel_w * s.cout_g);
  FUSEDBNN_RETURN_IF_FAILED(run_gemm(GemmShape{static_cast<int>(p.batch * s.in_pixels), s.cin_g, dx_k, groups, dx_k}, 1,
                                     OutputGradPatches{dy_nhwc, s}, KernelRows{w, s},
                                     StoreInputGrad{dx_nhwc, s.in_c, s.cin_g}, stream));
  if (!p.channels_last)
    FUSEDBNN_RETURN_IF_FAILED(transpose(dx_nhwc, p.batch, s.in_pixels, p.in_channels, p.dx, stream));

  // dW = patches(x)^T dy over splits of the rows of y, then dw_rho by the fused sampling gradient.
  const int64_t rows = p.batch * s.out_pixels;
  const Splits dw = weight_splits(p);
  float* dw_target = dw.count > 1 ? region(scratch, layout.dw_partial) : p.dw_mu;
  FUSEDBNN_RETURN_IF_FAILED(run_gemm(GemmShape{static_cast<int>(p.kernel_h * p.kernel_w * s.cin_g), s.cout_g,
                                               static_cast<int>(rows), groups, static_cast<int>(dw.len)},
                                     dw.count, InputTaps{x, s}, MatrixColumns{dy_nhwc, s.out_c, s.cout_g},
                                     StoreKernelGrad{dw_target, kernel_size(p), s.out_c, s.cout_g}, stream));
  FUSEDBNN_RETURN_IF_FAILED(sum_splits(dw_target, dw.count, kernel_size(p), p.dw_mu, stream));
  FUSEDBNN_RETURN_IF_FAILED(
      sample_gaussian_grad(p.w_stream, kernel_size(p), p.dw_mu, nullptr, p.w_rho, p.dw_rho, nullptr, stream));
  if (!p.has_bias) return cudaSuccess;

  // db = column sums of dy, in split order.
  const Splits db = bias_splits(p);
  float* db_target = db.count > 1 ? region(scratch, layout.db_partial) : p.db_mu;
  const dim3 grid(static_cast<unsigned>(ceil_div(p.out_channels, 32)), static_cast<unsigned>(db.count));
  column_sums_kernel<<<grid, kThreads, 0, stream>>>(dy_nhwc, rows, s.out_c, db.len, db_target);
  FUSEDBNN_RETURN_IF_FAILED(cudaGetLastError());
  FUSEDBNN_RETURN_IF_FAILED(sum_splits(db_target, db.count, p.out_channels, p.db_mu, stream));
  return sample_gaussian_grad(p.b_stream, p.out_channels, p.db_mu, nullptr, p.b_rho, p.db_rho, nullptr, stream);
}

}  // namespace cuda
}  // namespace fusedbnn
