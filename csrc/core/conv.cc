#include "conv.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "gaussian.h"
#include "gemm.h"

namespace fusedbnn {

std::string conv_axis(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, ConvPadding padding,
                      int64_t explicit_before, int64_t explicit_after, int64_t* out, int64_t* pad_before) {
  const int64_t window = (kernel - 1) * dilation + 1;
  if (padding == ConvPadding::kSame) {
    *out = ceil_div(in, stride);
    const int64_t total = std::max<int64_t>((*out - 1) * stride + window - in, 0);
    *pad_before = total / 2;
    return "";
  }
  const int64_t before = padding == ConvPadding::kExplicit ? explicit_before : 0;
  const int64_t after = padding == ConvPadding::kExplicit ? explicit_after : 0;
  if (before < 0 || after < 0) return "explicit paddings must be non-negative";
  const int64_t padded = in + before + after;
  if (padded < window) {
    return "the padded input (" + std::to_string(padded) + ") is smaller than the dilated kernel window (" +
           std::to_string(window) + "): the output size would be negative";
  }
  *out = (padded - window) / stride + 1;
  *pad_before = before;
  return "";
}

namespace {

// Floats of im2col buffer a chunk aims for: chunks hold whole images, so that dx rows can be
// gathered within one chunk; the chunk grid depends on the sizes alone.
constexpr int64_t kChunkFloats = int64_t{1} << 20;

// The tile width of dW^T's k_g columns (GemmArgs::min_tile): every tile packs the chunk's dy
// again, so the fewest tiles at least 256 wide, of equal widths (576: 2 x 288, 320: 1 x 320).
int64_t weight_grad_tile(int64_t k_g) {
  const int64_t tiles = std::max<int64_t>(1, k_g / 256);
  return (ceil_div(k_g, tiles) + 15) / 16 * 16;
}

// Derived sizes, the element strides of x (dx) in its layout, and the chunking.
struct Geometry {
  int64_t cin_g, cout_g, k_g;  // per group: input channels, output channels, kernel rows
  int64_t cols_width;          // groups * k_g: one im2col row, group-major
  int64_t pixels;              // out_h * out_w
  int64_t images_per_chunk;
  int64_t xs_b, xs_h, xs_w, xs_c;
  int64_t ys_b;  // y's image stride (either layout)
  bool channels_last;
  bool depthwise;    // one input channel per group: direct loops over x, no im2col or GEMM
  bool direct;       // 1x1, stride 1, unpadded NHWC: x itself is the im2col matrix
  bool via_dy_cols;  // stride 1 (not direct): the backward may take dx and dW from dy's im2col

  explicit Geometry(const ConvParams& p) {
    cin_g = p.in_channels / p.groups;
    cout_g = p.out_channels / p.groups;
    k_g = p.kernel_h * p.kernel_w * cin_g;
    cols_width = p.groups * k_g;
    pixels = p.out_h * p.out_w;
    images_per_chunk =
        std::clamp<int64_t>(kChunkFloats / std::max<int64_t>(pixels * cols_width, 1), 1, std::max<int64_t>(p.batch, 1));
    const int64_t hw = p.in_h * p.in_w;
    channels_last = p.channels_last;
    if (p.channels_last) {
      xs_c = 1, xs_w = p.in_channels, xs_h = p.in_w * p.in_channels;
    } else {
      xs_c = hw, xs_w = 1, xs_h = p.in_w;
    }
    xs_b = hw * p.in_channels;
    ys_b = pixels * p.out_channels;
    depthwise = p.groups > 1 && cin_g == 1;
    direct = !depthwise && p.channels_last && p.kernel_h == 1 && p.kernel_w == 1 && p.stride_h == 1 &&
             p.stride_w == 1 && p.pad_top == 0 && p.pad_left == 0 && p.out_h == p.in_h && p.out_w == p.in_w;
    via_dy_cols = !depthwise && !direct && p.stride_h == 1 && p.stride_w == 1;
  }

  int64_t chunk_rows() const { return images_per_chunk * pixels; }
  // Rows of a chunk-sized [rows, out_channels] buffer for y or dy; NHWC uses y itself.
  int64_t channel_buffer(const ConvParams& p) const { return p.channels_last ? 0 : chunk_rows() * p.out_channels; }
  // im2col of a chunk, after (NCHW) the chunk's images transposed to NHWC for im2col to read.
  int64_t nhwc_stage() const { return direct || channels_last ? 0 : images_per_chunk * xs_b; }
  int64_t im2col_floats() const { return direct || depthwise ? 0 : chunk_rows() * cols_width; }
  int64_t cols_buffer() const { return im2col_floats() + nhwc_stage(); }
};

// Rows [r0, r1) of the im2col matrix of a chunk whose images start at `x` (NHWC): row (image, oh,
// ow), column (g, i, j, c) holds x[image, oh*sh - pad_top + i*dh, ow*sw - pad_left + j*dw, g*cin_g + c].
void im2col_rows(const ConvParams& p, const Geometry& g, const float* x, int64_t r0, int64_t r1, float* cols) {
  const int64_t xs_w = p.in_channels, xs_h = p.in_w * p.in_channels;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t image = r / g.pixels, pixel = r % g.pixels;
    const int64_t oh = pixel / p.out_w, ow = pixel % p.out_w;
    const float* x_image = x + image * g.xs_b;
    float* row = cols + r * g.cols_width;
    for (int64_t grp = 0; grp < p.groups; ++grp) {
      for (int64_t i = 0; i < p.kernel_h; ++i) {
        const int64_t ih = oh * p.stride_h - p.pad_top + i * p.dilation_h;
        for (int64_t j = 0; j < p.kernel_w; ++j) {
          const int64_t iw = ow * p.stride_w - p.pad_left + j * p.dilation_w;
          float* dst = row + grp * g.k_g + (i * p.kernel_w + j) * g.cin_g;
          if (ih < 0 || ih >= p.in_h || iw < 0 || iw >= p.in_w) {
            std::fill(dst, dst + g.cin_g, 0.0f);
            continue;
          }
          std::memcpy(dst, x_image + ih * xs_h + iw * xs_w + grp * g.cin_g, g.cin_g * sizeof(float));
        }
      }
    }
  }
}

// The chunk's images in NHWC: x itself, or (NCHW) a transposed copy in the end of cols_buffer.
const float* chunk_nhwc(const ParallelFor& pf, const ConvParams& p, const Geometry& g, int64_t image0, int64_t images,
                        float* cols_buffer) {
  const float* x = p.x + image0 * g.xs_b;
  if (g.nhwc_stage() > 0) {
    // NCHW: im2col reading across channel planes is 2-3x slower than transposing first.
    float* stage = cols_buffer + g.im2col_floats();
    const int64_t hw = p.in_h * p.in_w;
    pf(images * p.in_h, p.in_w * p.in_channels, [&](int64_t first, int64_t last) {
      for (int64_t u = first; u < last; ++u) {
        const int64_t image = u / p.in_h, h = u % p.in_h;
        float* dst = stage + image * g.xs_b + h * p.in_w * p.in_channels;
        const float* src = x + image * g.xs_b + h * p.in_w;
        for (int64_t c = 0; c < p.in_channels; ++c)
          for (int64_t w = 0; w < p.in_w; ++w) dst[w * p.in_channels + c] = src[c * hw + w];
      }
    });
    x = stage;
  }
  return x;
}

// The chunk's im2col matrix (x itself in the direct case), with row stride cols_width.
const float* chunk_cols(const ParallelFor& pf, const ConvParams& p, const Geometry& g, int64_t image0, int64_t rows,
                        float* cols_buffer) {
  const float* x = chunk_nhwc(pf, p, g, image0, rows / g.pixels, cols_buffer);
  if (g.direct) return x;
  pf(rows, 4 * g.cols_width, [&](int64_t r0, int64_t r1) { im2col_rows(p, g, x, r0, r1, cols_buffer); });
  return cols_buffer;
}

// Calls fn(row, tap, input pixel) for the valid taps of output rows [r0, r1) of a chunk whose
// images start at the NHWC `x`: the traversal of im2col_rows without the copy.
template <typename Fn>
void for_each_tap(const ConvParams& p, const Geometry& g, const float* x, int64_t r0, int64_t r1, Fn fn) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t image = r / g.pixels, pixel = r % g.pixels;
    const int64_t oh = pixel / p.out_w, ow = pixel % p.out_w;
    for (int64_t i = 0; i < p.kernel_h; ++i) {
      const int64_t ih = oh * p.stride_h - p.pad_top + i * p.dilation_h;
      if (ih < 0 || ih >= p.in_h) continue;
      for (int64_t j = 0; j < p.kernel_w; ++j) {
        const int64_t iw = ow * p.stride_w - p.pad_left + j * p.dilation_w;
        if (iw < 0 || iw >= p.in_w) continue;
        fn(r, i * p.kernel_w + j, x + image * g.xs_b + (ih * p.in_w + iw) * p.in_channels);
      }
    }
  }
}

// Depthwise: output channel c*m + k (m = cout_g) reads input channel c alone, so
// y[r, c*m + k] = sum over taps t of x[tap pixel, c] * W[t, c*m + k], in tap order.
void depthwise_forward_rows(const ConvParams& p, const Geometry& g, const float* x, const float* w, int64_t r0,
                            int64_t r1, float* y_rows) {
  const int64_t out = p.out_channels, m = g.cout_g;
  std::fill(y_rows + r0 * out, y_rows + r1 * out, 0.0f);
  for_each_tap(p, g, x, r0, r1, [&](int64_t r, int64_t t, const float* pixel) {
    float* y = y_rows + r * out;
    const float* wt = w + t * out;
    if (m == 1) {  // the common case, as one vectorisable loop
      for (int64_t c = 0; c < p.in_channels; ++c) y[c] += pixel[c] * wt[c];
      return;
    }
    for (int64_t c = 0; c < p.in_channels; ++c)
      for (int64_t k = 0; k < m; ++k) y[c * m + k] += pixel[c] * wt[c * m + k];
  });
}

// Depthwise kernel gradient of one chunk for taps [t0, t1): dW[t, o] = sum over rows in order.
void depthwise_kernel_grad(const ConvParams& p, const Geometry& g, const float* x, const float* dy_rows, int64_t rows,
                           int64_t t0, int64_t t1, float* dw) {
  const int64_t out = p.out_channels, m = g.cout_g;
  std::fill(dw + t0 * out, dw + t1 * out, 0.0f);
  for_each_tap(p, g, x, 0, rows, [&](int64_t r, int64_t t, const float* pixel) {
    if (t < t0 || t >= t1) return;
    float* dwt = dw + t * out;
    const float* dy = dy_rows + r * out;
    if (m == 1) {
      for (int64_t c = 0; c < p.in_channels; ++c) dwt[c] += pixel[c] * dy[c];
      return;
    }
    for (int64_t c = 0; c < p.in_channels; ++c)
      for (int64_t k = 0; k < m; ++k) dwt[c * m + k] += pixel[c] * dy[c * m + k];
  });
}

// dx for input rows [u0, u1) of the chunk (unit = image * in_h + ih): for every output row and
// tap that read an input pixel, in a fixed order over (i, j), add(row, tap, dx of the pixel) adds
// the contribution; the transpose of im2col_rows.
template <typename Add>
void gather_dx_rows(const ConvParams& p, const Geometry& g, int64_t image0, int64_t u0, int64_t u1, float* dx,
                    Add add) {
  // Input column iw, read by output column ow through kernel column j, in (iw, j) order: the
  // same for every row, so the divisions leave the inner loop.
  struct ColumnTap {
    int64_t iw, j, ow;
  };
  std::vector<ColumnTap> column_taps;
  for (int64_t iw = 0; iw < p.in_w; ++iw) {
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const int64_t w_num = iw + p.pad_left - j * p.dilation_w;
      if (w_num < 0 || w_num % p.stride_w != 0 || w_num / p.stride_w >= p.out_w) continue;
      column_taps.push_back({iw, j, w_num / p.stride_w});
    }
  }
  std::vector<float> acc(p.in_w * p.in_channels);
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t local = u / p.in_h, ih = u % p.in_h;
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t i = 0; i < p.kernel_h; ++i) {
      const int64_t h_num = ih + p.pad_top - i * p.dilation_h;
      if (h_num < 0 || h_num % p.stride_h != 0 || h_num / p.stride_h >= p.out_h) continue;
      const int64_t row0 = local * g.pixels + h_num / p.stride_h * p.out_w;
      for (const ColumnTap& t : column_taps) add(row0 + t.ow, i * p.kernel_w + t.j, acc.data() + t.iw * p.in_channels);
    }
    float* dx_row = dx + (image0 + local) * g.xs_b + ih * g.xs_h;
    if (p.channels_last) {
      std::memcpy(dx_row, acc.data(), acc.size() * sizeof(float));
    } else {
      for (int64_t c = 0; c < p.in_channels; ++c)
        for (int64_t iw = 0; iw < p.in_w; ++iw) dx_row[c * g.xs_c + iw] = acc[iw * p.in_channels + c];
    }
  }
}

// Copies between y (either layout) and a chunk's [rows, out_channels] matrix, by (image, channel).
void nchw_to_rows(const ParallelFor& pf, const ConvParams& p, const Geometry& g, const float* y, int64_t images,
                  float* rows) {
  pf(images * p.out_channels, g.pixels, [&](int64_t first, int64_t last) {
    for (int64_t u = first; u < last; ++u) {
      const float* src = y + u * g.pixels;  // image u / C, channel u % C: consecutive planes
      const int64_t image = u / p.out_channels, o = u % p.out_channels;
      for (int64_t pix = 0; pix < g.pixels; ++pix) rows[(image * g.pixels + pix) * p.out_channels + o] = src[pix];
    }
  });
}

void rows_to_nchw(const ParallelFor& pf, const ConvParams& p, const Geometry& g, const float* rows, int64_t images,
                  float* y) {
  pf(images * p.out_channels, g.pixels, [&](int64_t first, int64_t last) {
    for (int64_t u = first; u < last; ++u) {
      float* dst = y + u * g.pixels;
      const int64_t image = u / p.out_channels, o = u % p.out_channels;
      for (int64_t pix = 0; pix < g.pixels; ++pix) dst[pix] = rows[(image * g.pixels + pix) * p.out_channels + o];
    }
  });
}

// With stride 1, dx is the stride-1 convolution of dy (NHWC) with the kernel flipped in space and
// transposed per group, [kh, kw, cout_g, in_channels], padded by (k - 1) * d - pad: one im2col and
// one product of the forward's shape, instead of d(cols) = dy W^T (which Eigen zeroes first) and
// its gather. Row q of that im2col holds, at (flipped tap, o), the dy element whose output read
// x[q] through the tap, so it also gives dW, as x^T @ im2col(dy): no im2col of x.
ConvParams dx_conv_params(const ConvParams& p) {
  ConvParams q = p;
  q.in_h = p.out_h, q.in_w = p.out_w, q.in_channels = p.out_channels;
  q.out_h = p.in_h, q.out_w = p.in_w, q.out_channels = p.in_channels;
  q.pad_top = (p.kernel_h - 1) * p.dilation_h - p.pad_top;
  q.pad_left = (p.kernel_w - 1) * p.dilation_w - p.pad_left;
  q.channels_last = true;
  return q;
}

// W'[i', j', o, grp * cin_g + c] = W[kh - 1 - i', kw - 1 - j', c, grp * cout_g + o].
void flip_kernel(const ParallelFor& pf, const ConvParams& p, const Geometry& g, const float* w, float* flipped) {
  const int64_t taps = p.kernel_h * p.kernel_w;
  pf(taps, g.cin_g * p.out_channels, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* src = w + (taps - 1 - t) * g.cin_g * p.out_channels;
      float* dst = flipped + t * g.cout_g * p.in_channels;
      for (int64_t grp = 0; grp < p.groups; ++grp)
        for (int64_t o = 0; o < g.cout_g; ++o)
          for (int64_t c = 0; c < g.cin_g; ++c)
            dst[o * p.in_channels + grp * g.cin_g + c] = src[c * p.out_channels + grp * g.cout_g + o];
    }
  });
}

// Whether v[0, n) holds no NaN or Inf (branch-free, so that the compiler vectorises it).
bool all_finite(const ParallelFor& pf, const float* v, int64_t n) {
  constexpr int64_t kBlock = 1 << 14;
  std::atomic<bool> finite{true};
  pf(ceil_div(n, kBlock), kBlock, [&](int64_t b0, int64_t b1) {
    uint32_t non_finite = 0;
    for (int64_t i = b0 * kBlock, end = std::min(n, b1 * kBlock); i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, v + i, sizeof(bits));
      non_finite |= (bits & 0x7f800000u) == 0x7f800000u;  // exponent all ones
    }
    if (non_finite) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load();
}

// Scratch of the backward's dx: d(cols), or (via_dy_cols) the flipped kernel, the im2col of dy and
// (NCHW) dx rows in NHWC; via_dy_cols can fall back to d(cols) (see conv_backward).
int64_t dx_scratch(const ConvParams& p, const Geometry& g) {
  if (!g.via_dy_cols) return g.im2col_floats();
  const Geometry gq(dx_conv_params(p));
  const int64_t rows = g.images_per_chunk * gq.pixels;
  return std::max(g.im2col_floats(),
                  conv_kernel_size(p) + rows * gq.cols_width + (p.channels_last ? 0 : rows * p.in_channels));
}

}  // namespace

int64_t conv_kernel_size(const ConvParams& p) {
  return p.kernel_h * p.kernel_w * (p.in_channels / p.groups) * p.out_channels;
}

int64_t conv_forward_workspace(const ConvParams& p) {
  const Geometry g(p);
  return conv_kernel_size(p) + p.out_channels + g.cols_buffer() + g.channel_buffer(p);
}

int64_t conv_backward_workspace(const ConvParams& p) {
  const Geometry g(p);
  // kernel, dW^T summed over the chunks (depthwise: partial dW of a chunk), im2col, dx's scratch,
  // dy rows (NCHW).
  return 2 * conv_kernel_size(p) + g.cols_buffer() + dx_scratch(p, g) + g.channel_buffer(p);
}

void conv_forward(const ParallelFor& pf, const ConvParams& p, float* workspace, float* y) {
  const Geometry g(p);
  float* w = workspace;
  float* b = w + conv_kernel_size(p);
  float* cols_buffer = b + p.out_channels;
  float* y_rows_buffer = cols_buffer + g.cols_buffer();
  if (p.batch == 0 || g.pixels == 0) return;
  sample_gaussian(pf, p.w_stream, conv_kernel_size(p), p.w_mu, p.w_rho, w);
  if (p.has_bias) sample_gaussian(serial_for(), p.b_stream, p.out_channels, p.b_mu, p.b_rho, b);

  for (int64_t image0 = 0; image0 < p.batch; image0 += g.images_per_chunk) {
    const int64_t images = std::min(g.images_per_chunk, p.batch - image0), rows = images * g.pixels;
    float* y_rows = p.channels_last ? y + image0 * g.ys_b : y_rows_buffer;
    if (g.depthwise) {
      const float* x = chunk_nhwc(pf, p, g, image0, images, cols_buffer);
      pf(rows, p.out_channels * p.kernel_h * p.kernel_w,
         [&](int64_t r0, int64_t r1) { depthwise_forward_rows(p, g, x, w, r0, r1, y_rows); });
    } else {
      const float* cols = chunk_cols(pf, p, g, image0, rows, cols_buffer);
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        // y[:, group] = cols[:, group] @ W[:, group]
        gemm(pf, GemmArgs{rows, g.cout_g, g.k_g, cols + grp * g.k_g, g.cols_width, false, w + grp * g.cout_g,
                          p.out_channels, false, y_rows + grp * g.cout_g, p.out_channels});
      }
    }
    if (p.has_bias) {
      pf(rows, p.out_channels, [&](int64_t first, int64_t last) {
        for (int64_t r = first; r < last; ++r)
          for (int64_t o = 0; o < p.out_channels; ++o) y_rows[r * p.out_channels + o] += b[o];
      });
    }
    if (!p.channels_last) rows_to_nchw(pf, p, g, y_rows, images, y + image0 * g.ys_b);
  }
}

void conv_backward(const ParallelFor& pf, const ConvGradParams& p, float* workspace) {
  const Geometry g(p);
  const int64_t kernel_size = conv_kernel_size(p);
  float* w = workspace;
  // depthwise: one chunk's dW; via_dy_cols: dW'^T of the flipped kernel, per group [cin_g, taps *
  // cout_g]; else dW^T, per group [cout_g, k_g]
  float* dw_part = w + kernel_size;
  float* cols_buffer = dw_part + kernel_size;
  float* dx_buffer = cols_buffer + g.cols_buffer();  // see dx_scratch
  float* dy_rows_buffer = dx_buffer + dx_scratch(p, g);
  const ConvParams q = dx_conv_params(p);  // via_dy_cols
  const Geometry gq(q);
  float* w_flipped = dx_buffer;
  float* dy_cols = w_flipped + kernel_size;
  float* dx_rows_buffer = dy_cols + g.images_per_chunk * gq.pixels * gq.cols_width;

  sample_gaussian(pf, p.w_stream, kernel_size, p.w_mu, p.w_rho, w);
  // dy's padding times a NaN or Inf weight (dx) or input (dW) would make a gradient non-finite
  // where that value never reaches (0 * Inf = NaN): such calls take the im2col of x and the
  // gather, which skip taps outside the input.
  const bool via_dy_cols = g.via_dy_cols && all_finite(pf, w, kernel_size) && all_finite(pf, p.x, p.batch * g.xs_b);
  if (via_dy_cols) flip_kernel(pf, p, g, w, w_flipped);
  std::fill(p.dw_mu, p.dw_mu + kernel_size, 0.0f);
  if (p.has_bias) std::fill(p.db_mu, p.db_mu + p.out_channels, 0.0f);
  if (g.pixels == 0) std::fill(p.dx, p.dx + p.batch * g.xs_b, 0.0f);

  for (int64_t image0 = 0; g.pixels > 0 && image0 < p.batch; image0 += g.images_per_chunk) {
    const int64_t images = std::min(g.images_per_chunk, p.batch - image0), rows = images * g.pixels;
    const float* dy_rows = p.dy + image0 * g.ys_b;
    if (!p.channels_last) {
      nchw_to_rows(pf, p, g, dy_rows, images, dy_rows_buffer);
      dy_rows = dy_rows_buffer;
    }
    if (g.depthwise) {
      // dW += this chunk's part, chunk partials added in chunk order.
      float* dw_target = image0 == 0 ? p.dw_mu : dw_part;
      const float* x = chunk_nhwc(pf, p, g, image0, images, cols_buffer);
      pf(p.kernel_h * p.kernel_w, rows * p.out_channels,
         [&](int64_t t0, int64_t t1) { depthwise_kernel_grad(p, g, x, dy_rows, rows, t0, t1, dw_target); });
      if (image0 > 0) {
        pf(kernel_size, 1, [&](int64_t first, int64_t last) {
          for (int64_t e = first; e < last; ++e) p.dw_mu[e] += dw_part[e];
        });
      }
    } else if (via_dy_cols) {
      // dW'[:, group]^T (+)= x[:, group]^T @ im2col(dy)[:, group], summed over the chunks in order.
      const float* x = chunk_nhwc(pf, p, g, image0, images, cols_buffer);
      const int64_t dx_rows = images * gq.pixels;
      pf(dx_rows, 4 * gq.cols_width, [&](int64_t r0, int64_t r1) { im2col_rows(q, gq, dy_rows, r0, r1, dy_cols); });
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        gemm(pf, GemmArgs{g.cin_g, gq.k_g, dx_rows, x + grp * g.cin_g, p.in_channels, true, dy_cols + grp * gq.k_g,
                          gq.cols_width, false, dw_part + grp * g.cin_g * gq.k_g, gq.k_g, image0 > 0,
                          weight_grad_tile(gq.k_g)});
      }
    } else {
      // dW[:, group]^T (+)= dy[:, group]^T @ cols[:, group], summed over the chunks in order. As
      // dW^T the product's narrow side (cout_g) is the packed left operand: gemm cuts the k_g
      // columns, and wide tiles pack dy less often (benchmarks/NOTES.md).
      const float* cols = chunk_cols(pf, p, g, image0, rows, cols_buffer);
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        gemm(pf, GemmArgs{g.cout_g, g.k_g, rows, dy_rows + grp * g.cout_g, p.out_channels, true, cols + grp * g.k_g,
                          g.cols_width, false, dw_part + grp * g.cout_g * g.k_g, g.k_g, image0 > 0,
                          weight_grad_tile(g.k_g)});
      }
    }
    if (p.has_bias) {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = 0; o < p.out_channels; ++o) p.db_mu[o] += dy_rows[r * p.out_channels + o];
    }
    if (g.depthwise) {
      // dx[pixel, c] += sum over k of dy[row, c*m + k] * W[tap, c*m + k]
      pf(images * p.in_h, p.in_w * p.out_channels * p.kernel_h * p.kernel_w, [&](int64_t u0, int64_t u1) {
        gather_dx_rows(p, g, image0, u0, u1, p.dx, [&](int64_t row, int64_t tap, float* pixel) {
          const float* d = dy_rows + row * p.out_channels;
          const float* wt = w + tap * p.out_channels;
          if (g.cout_g == 1) {
            for (int64_t c = 0; c < p.in_channels; ++c) pixel[c] += d[c] * wt[c];
            return;
          }
          for (int64_t c = 0; c < p.in_channels; ++c) {
            float sum = 0.0f;
            for (int64_t k = 0; k < g.cout_g; ++k) sum += d[c * g.cout_g + k] * wt[c * g.cout_g + k];
            pixel[c] += sum;
          }
        });
      });
      continue;
    }
    if (via_dy_cols) {
      // dx[:, group] = im2col(dy)[:, group] @ W'[:, group], with the im2col made for dW above
      const int64_t dx_rows = images * gq.pixels;
      float* dx = p.channels_last ? p.dx + image0 * g.xs_b : dx_rows_buffer;
      for (int64_t grp = 0; grp < p.groups; ++grp) {
        gemm(pf, GemmArgs{dx_rows, g.cin_g, gq.k_g, dy_cols + grp * gq.k_g, gq.cols_width, false,
                          w_flipped + grp * g.cin_g, p.in_channels, false, dx + grp * g.cin_g, p.in_channels});
      }
      if (!p.channels_last) rows_to_nchw(pf, q, gq, dx, images, p.dx + image0 * g.xs_b);
      continue;
    }
    // d(cols)[:, group] = dy[:, group] @ W[:, group]^T, then gathered into dx (written directly
    // when x is its own im2col matrix).
    float* dcols = g.direct ? p.dx + image0 * g.xs_b : dx_buffer;
    for (int64_t grp = 0; grp < p.groups; ++grp) {
      gemm(pf, GemmArgs{rows, g.k_g, g.cout_g, dy_rows + grp * g.cout_g, p.out_channels, false, w + grp * g.cout_g,
                        p.out_channels, true, dcols + grp * g.k_g, g.cols_width});
    }
    if (!g.direct) {
      pf(images * p.in_h, p.in_w * g.cols_width, [&](int64_t u0, int64_t u1) {
        gather_dx_rows(p, g, image0, u0, u1, p.dx, [&](int64_t row, int64_t tap, float* pixel) {
          const float* src = dcols + row * g.cols_width + tap * g.cin_g;
          for (int64_t grp = 0; grp < p.groups; ++grp)
            for (int64_t c = 0; c < g.cin_g; ++c) pixel[grp * g.cin_g + c] += src[grp * g.k_g + c];
        });
      });
    }
  }
  if (via_dy_cols && g.pixels > 0 && p.batch > 0) {
    // dW[t, c, grp * cout_g + o] = dW'^T[grp][c, (taps - 1 - t) * cout_g + o]
    const int64_t taps = p.kernel_h * p.kernel_w;
    pf(taps * g.cin_g, p.out_channels, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t t = u / g.cin_g, c = u % g.cin_g;
        for (int64_t grp = 0; grp < p.groups; ++grp) {
          const float* src = dw_part + (grp * g.cin_g + c) * gq.k_g + (taps - 1 - t) * g.cout_g;
          std::copy(src, src + g.cout_g, p.dw_mu + u * p.out_channels + grp * g.cout_g);
        }
      }
    });
  } else if (!g.depthwise && g.pixels > 0 && p.batch > 0) {
    // dW[t, grp * cout_g + o] = dW^T[grp][o, t]
    pf(g.k_g, p.out_channels, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t o = 0; o < p.out_channels; ++o) p.dw_mu[t * p.out_channels + o] = dw_part[o * g.k_g + t];
    });
  }
  // drho = dW * eps * sigmoid(rho), regenerating eps.
  sample_gaussian_grad(pf, p.w_stream, kernel_size, p.dw_mu, p.w_mu, p.w_rho, p.dw_rho, nullptr);
  if (p.has_bias)
    sample_gaussian_grad(serial_for(), p.b_stream, p.out_channels, p.db_mu, p.b_mu, p.b_rho, p.db_rho, nullptr);
}

}  // namespace fusedbnn
