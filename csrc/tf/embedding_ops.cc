// FusedBnn>Embedding and FusedBnn>EmbeddingGrad: lookups that sample only the rows they read.
#include <cmath>
#include <vector>

#include "core/embedding.h"
#include "tensorflow/core/framework/op.h"
#include "tf/common.h"

namespace fusedbnn {
namespace tf {

using tfl::shape_inference::InferenceContext;
using tfl::shape_inference::ShapeHandle;

namespace {

// Inputs shared by both ops, at these positions after EmbeddingGrad's leading dy.
enum EmbeddingInput { kIds, kWMu, kWRho, kWSeed };

tfl::Status table_shapes(InferenceContext* c, int first, ShapeHandle* table) {
  TF_RETURN_IF_ERROR(c->WithRank(c->input(first + kWMu), 2, table));
  TF_RETURN_IF_ERROR(merge_named(c, first + kWMu, first + kWRho, "w_rho must have the shape of w_mu"));
  return seed_shape(c, first + kWSeed, "w_seed");
}

// ids.shape + [dim].
tfl::Status lookup_shape(InferenceContext* c, int first, ShapeHandle* y) {
  ShapeHandle table;
  TF_RETURN_IF_ERROR(table_shapes(c, first, &table));
  return c->Concatenate(c->input(first + kIds), c->Vector(c->Dim(table, 1)), y);
}

// The ids as int64, or an error naming the first id outside [0, rows).
template <class Id>
tfl::Status checked_ids(const tfl::Tensor& ids, int64_t rows, std::vector<int64_t>* out) {
  const auto flat = ids.flat<Id>();
  out->resize(flat.size());
  for (int64_t n = 0; n < flat.size(); ++n) {
    const int64_t id = static_cast<int64_t>(flat(n));
    if (id < 0 || id >= rows) {
      return tfl::errors::InvalidArgument("ids must be in [0, num_embeddings = ", rows, "), got id ", id,
                                          " at flat position ", n);
    }
    (*out)[n] = id;
  }
  return tfl::OkStatus();
}

// Validates the inputs in eager mode too (shape functions only run when graphs are built).
class EmbeddingBase : public tfl::OpKernel {
 public:
  explicit EmbeddingBase(tfl::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding_idx", &padding_idx_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_norm", &max_norm_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("norm_type", &norm_type_));
    OP_REQUIRES(ctx, norm_type_ > 0.0f && std::isfinite(norm_type_),
                tfl::errors::InvalidArgument("norm_type must be a positive finite number, got ", norm_type_));
  }

 protected:
  // `ids` receives the checked ids that p->ids points to.
  tfl::Status read_params(tfl::OpKernelContext* ctx, std::vector<int64_t>* ids, EmbeddingParams* p) const {
    const tfl::Tensor *id_tensor, *w_mu, *w_rho;
    TF_RETURN_IF_ERROR(ctx->input("ids", &id_tensor));
    TF_RETURN_IF_ERROR(ctx->input("w_mu", &w_mu));
    TF_RETURN_IF_ERROR(ctx->input("w_rho", &w_rho));
    TF_RETURN_IF_ERROR(require_rank(*w_mu, "w_mu", 2));
    TF_RETURN_IF_ERROR(require_same_shape(*w_mu, "w_mu", *w_rho, "w_rho"));
    p->rows = w_mu->dim_size(0);
    p->dim = w_mu->dim_size(1);
    if (padding_idx_ >= p->rows) {  // ops.embedding checks this too, but only for static shapes
      return tfl::errors::InvalidArgument("padding_idx must be in [0, num_embeddings = ", p->rows, "), got ",
                                          padding_idx_);
    }
    if (id_tensor->dtype() == tfl::DT_INT32) {
      TF_RETURN_IF_ERROR(checked_ids<int32_t>(*id_tensor, p->rows, ids));
    } else {
      TF_RETURN_IF_ERROR(checked_ids<int64_t>(*id_tensor, p->rows, ids));
    }
    p->ids = ids->data();
    p->count = static_cast<int64_t>(ids->size());
    p->w_mu = w_mu->flat<float>().data();
    p->w_rho = w_rho->flat<float>().data();
    TF_RETURN_IF_ERROR(read_seed(ctx, "w_seed", &p->stream));
    p->padding_idx = padding_idx_;
    p->max_norm = max_norm_;
    p->norm_type = norm_type_;
    return tfl::OkStatus();
  }

  static tfl::TensorShape lookup_shape(const tfl::Tensor& ids, int64_t dim) {
    tfl::TensorShape shape = ids.shape();
    shape.AddDim(dim);
    return shape;
  }

 private:
  int64_t padding_idx_ = -1;
  float max_norm_ = 0.0f;
  float norm_type_ = 2.0f;
};

class EmbeddingOp : public EmbeddingBase {
 public:
  using EmbeddingBase::EmbeddingBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    std::vector<int64_t> ids;
    EmbeddingParams p;
    OP_REQUIRES_OK(ctx, read_params(ctx, &ids, &p));
    tfl::Tensor* y;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, lookup_shape(ctx->input(kIds), p.dim), &y));
    embedding_forward(parallel_for(ctx), p, y->flat<float>().data());
  }
};

class EmbeddingGradOp : public EmbeddingBase {
 public:
  using EmbeddingBase::EmbeddingBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    std::vector<int64_t> ids;
    EmbeddingParams p;
    OP_REQUIRES_OK(ctx, read_params(ctx, &ids, &p));
    const tfl::Tensor& dy = ctx->input(0);
    const tfl::TensorShape y_shape = lookup_shape(ctx->input(1 + kIds), p.dim);
    OP_REQUIRES(ctx, dy.shape() == y_shape,
                tfl::errors::InvalidArgument("dy must have shape ", y_shape.DebugString(), ", got ",
                                             dy.shape().DebugString()));
    const EmbeddingRows rows = embedding_rows(p);
    const int64_t unique = static_cast<int64_t>(rows.rows.size());
    tfl::Tensor *indices, *dw_mu, *dw_rho;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tfl::TensorShape({unique}), &indices));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, tfl::TensorShape({unique, p.dim}), &dw_mu));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, tfl::TensorShape({unique, p.dim}), &dw_rho));
    std::copy(rows.rows.begin(), rows.rows.end(), indices->flat<int64_t>().data());
    embedding_backward(parallel_for(ctx), p, rows, dy.flat<float>().data(), dw_mu->flat<float>().data(),
                       dw_rho->flat<float>().data());
  }
};

}  // namespace

REGISTER_OP("FusedBnn>Embedding")
    .Input("ids: Tids")
    .Input("w_mu: float")
    .Input("w_rho: float")
    .Input("w_seed: Tseed")
    .Output("y: float")
    .Attr("Tids: {int32, int64} = DT_INT64")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .Attr("padding_idx: int = -1")
    .Attr("max_norm: float = 0.0")
    .Attr("norm_type: float = 2.0")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y;
      TF_RETURN_IF_ERROR(lookup_shape(c, 0, &y));
      c->set_output(0, y);
      return tfl::OkStatus();
    })
    .Doc("y = W[ids] sampling only the rows looked up; rows at padding_idx (if >= 0) are zero; with "
         "max_norm > 0 each row e is scaled by max_norm / max(|e|_norm_type, max_norm).");

REGISTER_OP("FusedBnn>EmbeddingGrad")
    .Input("dy: float")
    .Input("ids: Tids")
    .Input("w_mu: float")
    .Input("w_rho: float")
    .Input("w_seed: Tseed")
    .Output("indices: int64")
    .Output("dw_mu: float")
    .Output("dw_rho: float")
    .Attr("Tids: {int32, int64} = DT_INT64")
    .Attr("Tseed: {int32, int64} = DT_INT64")
    .Attr("padding_idx: int = -1")
    .Attr("max_norm: float = 0.0")
    .Attr("norm_type: float = 2.0")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y, table;
      TF_RETURN_IF_ERROR(lookup_shape(c, 1, &y));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1 + kWMu), 2, &table));
      const auto unique = c->UnknownDim();
      c->set_output(0, c->Vector(unique));
      c->set_output(1, c->Matrix(unique, c->Dim(table, 1)));
      c->set_output(2, c->Matrix(unique, c->Dim(table, 1)));
      return tfl::OkStatus();
    })
    .Doc("Gradients of FusedBnn>Embedding for w_mu and w_rho as rows: the distinct looked-up ids "
         "(ascending, padding_idx left out) and their summed gradients, regenerating the noise.");

FUSEDBNN_REGISTER_CPU("FusedBnn>Embedding", EmbeddingOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>EmbeddingGrad", EmbeddingGradOp);

}  // namespace tf
}  // namespace fusedbnn
