// FusedBnn>Embedding and FusedBnn>EmbeddingGrad (tables as tensors) and their *FromVariables forms
// (tables as resource variables, read in place): lookups that sample only the rows they read.
#include <algorithm>
#include <string>
#include <vector>

#include "core/embedding.h"
#include "tensorflow/core/framework/op.h"
#include "tf/common.h"
#include "tf/embedding_kernel.h"

namespace fusedbnn {
namespace tf {

using tfl::shape_inference::InferenceContext;
using tfl::shape_inference::ShapeHandle;

namespace {

// The shape of table input `index`: the tensor's, or for the *FromVariables ops the variable's, which
// the resource handle carries (unknown where it carries none).
template <bool kFromVariables>
ShapeHandle table_input_shape(InferenceContext* c, int index) {
  if (!kFromVariables) return c->input(index);
  const auto* handle_data = c->input_handle_shapes_and_types(index);
  return handle_data == nullptr || handle_data->empty() ? c->UnknownShape() : (*handle_data)[0].shape;
}

// The table [num_embeddings, dim], checked with the seed.
template <bool kFromVariables>
tfl::Status table_shapes(InferenceContext* c, int first, ShapeHandle* table) {
  TF_RETURN_IF_ERROR(named(c->WithRank(table_input_shape<kFromVariables>(c, first + embedding_input::kWMu), 2, table),
                           "w_mu must be a [num_embeddings, dim] table"));
  ShapeHandle rho;
  TF_RETURN_IF_ERROR(named(c->Merge(*table, table_input_shape<kFromVariables>(c, first + embedding_input::kWRho), &rho),
                           "w_rho must have the shape of w_mu"));
  return seed_shape(c, first + embedding_input::kWSeed, "w_seed");
}

// ids.shape + [dim].
template <bool kFromVariables>
tfl::Status lookup_shape(InferenceContext* c, int first, ShapeHandle* table, ShapeHandle* y) {
  TF_RETURN_IF_ERROR(table_shapes<kFromVariables>(c, first, table));
  return c->Concatenate(c->input(first + embedding_input::kIds), c->Vector(c->Dim(*table, 1)), y);
}

// y and dw_drho.
template <bool kFromVariables>
tfl::Status embedding_shape(InferenceContext* c) {
  ShapeHandle table, y;
  TF_RETURN_IF_ERROR(lookup_shape<kFromVariables>(c, 0, &table, &y));
  c->set_output(0, y);
  c->set_output(1, y);
  return tfl::OkStatus();
}

// Gradient rows: [unique] indices and [unique, dim] dw_mu, dw_rho.
template <bool kFromVariables>
tfl::Status embedding_grad_shape(InferenceContext* c) {
  ShapeHandle table, y;
  TF_RETURN_IF_ERROR(lookup_shape<kFromVariables>(c, embedding_input::kGradInputs, &table, &y));
  const auto unique = c->UnknownDim();
  c->set_output(0, c->Vector(unique));
  c->set_output(1, c->Matrix(unique, c->Dim(table, 1)));
  c->set_output(2, c->Matrix(unique, c->Dim(table, 1)));
  return tfl::OkStatus();
}

class EmbeddingOp : public EmbeddingBase {
 public:
  using EmbeddingBase::EmbeddingBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    EmbeddingParams p;
    Table table;
    OP_REQUIRES_OK(ctx, read_params(ctx, &table, &p));
    std::vector<int64_t> ids(p.count);
    OP_REQUIRES_OK(ctx, read_ids(ctx, ids.data(), &p));
    tfl::Tensor *y, *dw_drho;
    OP_REQUIRES_OK(ctx, allocate_lookup(ctx, p, &y, &dw_drho));
    embedding_forward(parallel_for(ctx), p, y->flat<float>().data(), dw_drho->flat<float>().data());
  }
};

class EmbeddingGradOp : public EmbeddingBase {
 public:
  using EmbeddingBase::EmbeddingBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    GradInputs g;
    OP_REQUIRES_OK(ctx, read_grad_inputs(ctx, &g));
    std::copy(g.rows.rows.begin(), g.rows.rows.end(), g.indices->flat<int64_t>().data());
    embedding_backward(parallel_for(ctx), g.params, g.rows);
  }
};

}  // namespace

constexpr char kEmbeddingDoc[] =
    "y = W[ids] sampling only the rows looked up; rows at padding_idx (if >= 0) are zero; with "
    "max_norm > 0 each row e is scaled by max_norm / max(|e|_norm_type, max_norm). dw_drho = eps * "
    "sigmoid(rho) of each looked-up element (before the rescale; zero at padding_idx) is for "
    "EmbeddingGrad, which multiplies by it instead of regenerating the noise; its own gradient is "
    "ignored. On every device the "
    "ids are read and checked on the host (host memory on the GPU: ids made on the GPU are copied "
    "back first); an id outside [0, num_embeddings) is an InvalidArgument error.";
constexpr char kEmbeddingGradDoc[] =
    "Gradients of FusedBnn>Embedding for w_mu and w_rho as rows: the distinct looked-up ids "
    "(ascending, padding_idx left out) and their summed gradients; dw_rho = dw_mu * dw_drho (with "
    "max_norm the rows are sampled again for their norms). The ids "
    "are read on the host, as FusedBnn>Embedding reads them; repeated ids are summed in the order of "
    "their positions on every device (deterministic).";
constexpr char kFromVariablesDoc[] =
    " The *FromVariables form takes w_mu and w_rho as float32 resource variables and reads them in "
    "place under their locks, as ResourceGather does (no copy of the table even when a sparse update "
    "has put the variables in copy-on-read mode).";

// The attributes all four lookup ops share, spliced into their REGISTER_OP chains.
#define FUSEDBNN_LOOKUP_ATTRS                   \
  Attr("Tids: {int32, int64} = DT_INT64")       \
      .Attr("Tseed: {int32, int64} = DT_INT64") \
      .Attr("padding_idx: int = -1")            \
      .Attr("max_norm: float = 0.0")            \
      .Attr("norm_type: float = 2.0")

REGISTER_OP("FusedBnn>Embedding")
    .Input("ids: Tids")
    .Input("w_mu: float")
    .Input("w_rho: float")
    .Input("w_seed: Tseed")
    .Output("y: float")
    .Output("dw_drho: float")
    .FUSEDBNN_LOOKUP_ATTRS
    .SetShapeFn(embedding_shape<false>)
    .Doc(kEmbeddingDoc);

REGISTER_OP("FusedBnn>EmbeddingGrad")
    .Input("dy: float")
    .Input("dw_drho: float")
    .Input("ids: Tids")
    .Input("w_mu: float")
    .Input("w_rho: float")
    .Input("w_seed: Tseed")
    .Output("indices: int64")
    .Output("dw_mu: float")
    .Output("dw_rho: float")
    .FUSEDBNN_LOOKUP_ATTRS
    .SetShapeFn(embedding_grad_shape<false>)
    .Doc(kEmbeddingGradDoc);

REGISTER_OP("FusedBnn>EmbeddingFromVariables")
    .Input("ids: Tids")
    .Input("w_mu: resource")
    .Input("w_rho: resource")
    .Input("w_seed: Tseed")
    .Output("y: float")
    .Output("dw_drho: float")
    .FUSEDBNN_LOOKUP_ATTRS
    .SetShapeFn(embedding_shape<true>)
    .Doc(std::string(kEmbeddingDoc) + kFromVariablesDoc);

REGISTER_OP("FusedBnn>EmbeddingFromVariablesGrad")
    .Input("dy: float")
    .Input("dw_drho: float")
    .Input("ids: Tids")
    .Input("w_mu: resource")
    .Input("w_rho: resource")
    .Input("w_seed: Tseed")
    .Output("indices: int64")
    .Output("dw_mu: float")
    .Output("dw_rho: float")
    .FUSEDBNN_LOOKUP_ATTRS
    .SetShapeFn(embedding_grad_shape<true>)
    .Doc(std::string(kEmbeddingGradDoc) + kFromVariablesDoc);

FUSEDBNN_REGISTER_CPU("FusedBnn>Embedding", EmbeddingOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>EmbeddingGrad", EmbeddingGradOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>EmbeddingFromVariables", EmbeddingOp);
FUSEDBNN_REGISTER_CPU("FusedBnn>EmbeddingFromVariablesGrad", EmbeddingGradOp);

}  // namespace tf
}  // namespace fusedbnn
