// The input checks of FusedBnn>Embedding and FusedBnn>EmbeddingGrad, shared by their CPU kernels
// (embedding_ops.cc) and GPU kernels (gpu/embedding_gpu.cc). Both keep ids and seeds in host
// memory and check them there; the w_mu, w_rho, dy and dw_drho data pointers are read, never
// dereferenced (device pointers on the GPU).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "core/embedding.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tf/common.h"

namespace fusedbnn {
namespace tf {

// Inputs shared by both ops, at these positions after EmbeddingGrad's leading kGradInputs (dy and
// dw_drho).
namespace embedding_input {
enum Index : int { kIds, kWMu, kWRho, kWSeed };
constexpr int kGradInputs = 2;
}  // namespace embedding_input

// Writes the ids as int64 to out[0, ids.NumElements()), or returns an error naming the first id
// outside [0, rows).
template <class Id>
tfl::Status checked_ids(const tfl::Tensor& ids, int64_t rows, int64_t* out) {
  const auto flat = ids.flat<Id>();
  for (int64_t n = 0; n < flat.size(); ++n) {
    const int64_t id = static_cast<int64_t>(flat(n));
    if (id < 0 || id >= rows) {
      return tfl::errors::InvalidArgument("ids must be in [0, num_embeddings = ", rows, "), got id ", id,
                                          " at flat position ", n);
    }
    out[n] = id;
  }
  return tfl::OkStatus();
}

// The table inputs w_mu and w_rho. FusedBnn>Embedding(Grad) take tensors; the *FromVariables ops take
// the two variables' resource handles and read them in place, share-locked while this object lives
// (in mutex address order, as TensorFlow's training ops lock theirs), as ResourceGather does. A
// ReadVariableOp would copy the whole table on every call once an optimizer's sparse update (of
// the IndexedSlices gradient) has switched the variable to copy-on-read mode.
class Table {
 public:
  tfl::Status read(tfl::OpKernelContext* ctx) {
    static constexpr const char* kNames[2] = {"w_mu", "w_rho"};
    tfl::DataType dtype;
    TF_RETURN_IF_ERROR(ctx->input_dtype("w_mu", &dtype));
    if (dtype != tfl::DT_RESOURCE) {
      for (int k = 0; k < 2; ++k) TF_RETURN_IF_ERROR(ctx->input(kNames[k], &tensors_[k]));
      return tfl::OkStatus();
    }
    for (int k = 0; k < 2; ++k) {
      tfl::ResourceHandle handle;
      TF_RETURN_IF_ERROR(tfl::HandleFromInput(ctx, kNames[k], &handle));
      TF_RETURN_IF_ERROR(tfl::LookupResource(ctx, handle, &vars_[k]));
    }
    std::array<tfl::mutex*, 2> mutexes{vars_[0]->mu(), vars_[1]->mu()};
    if (mutexes[1] < mutexes[0]) std::swap(mutexes[0], mutexes[1]);
    locks_[0] = std::make_unique<tfl::tf_shared_lock>(*mutexes[0]);
    if (mutexes[1] != mutexes[0]) locks_[1] = std::make_unique<tfl::tf_shared_lock>(*mutexes[1]);
    for (int k = 0; k < 2; ++k) {
      if (!vars_[k]->is_initialized) {
        return tfl::errors::FailedPrecondition(kNames[k], " names a variable that is not initialized");
      }
      tensors_[k] = vars_[k]->tensor();
      if (tensors_[k]->dtype() != tfl::DT_FLOAT) {
        return tfl::errors::InvalidArgument(kNames[k], " must be a float32 variable, got ",
                                            tfl::DataTypeString(tensors_[k]->dtype()));
      }
    }
    return tfl::OkStatus();
  }

  const tfl::Tensor& w_mu() const { return *tensors_[0]; }
  const tfl::Tensor& w_rho() const { return *tensors_[1]; }

 private:
  std::array<const tfl::Tensor*, 2> tensors_{};
  tfl::core::RefCountPtr<tfl::Var> vars_[2];  // declared before the locks: released after them
  std::unique_ptr<tfl::tf_shared_lock> locks_[2];
};

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
  // Reads the table (kept readable while `table` lives), checks the inputs and fills p, all but
  // p->ids (read_ids).
  tfl::Status read_params(tfl::OpKernelContext* ctx, Table* table, EmbeddingParams* p) const {
    const tfl::Tensor* id_tensor;
    TF_RETURN_IF_ERROR(ctx->input("ids", &id_tensor));
    TF_RETURN_IF_ERROR(table->read(ctx));
    const tfl::Tensor *w_mu = &table->w_mu(), *w_rho = &table->w_rho();
    TF_RETURN_IF_ERROR(require_rank(*w_mu, "w_mu", 2));
    TF_RETURN_IF_ERROR(require_same_shape(*w_mu, "w_mu", *w_rho, "w_rho"));
    p->rows = w_mu->dim_size(0);
    p->dim = w_mu->dim_size(1);
    if (padding_idx_ >= p->rows) {  // ops.embedding checks this too, but only for static shapes
      return tfl::errors::InvalidArgument("padding_idx must be in [0, num_embeddings = ", p->rows, "), got ",
                                          padding_idx_);
    }
    p->ids = nullptr;
    p->count = id_tensor->NumElements();
    p->w_mu = w_mu->flat<float>().data();
    p->w_rho = w_rho->flat<float>().data();
    TF_RETURN_IF_ERROR(read_seed(ctx, "w_seed", &p->stream));
    p->padding_idx = padding_idx_;
    p->max_norm = max_norm_;
    p->norm_type = norm_type_;
    return tfl::OkStatus();
  }

  // Checks the ids (host memory) and writes them as int64 to ids[0, p->count), where p->ids then
  // points.
  static tfl::Status read_ids(tfl::OpKernelContext* ctx, int64_t* ids, EmbeddingParams* p) {
    const tfl::Tensor* id_tensor;
    TF_RETURN_IF_ERROR(ctx->input("ids", &id_tensor));
    if (id_tensor->dtype() == tfl::DT_INT32) {
      TF_RETURN_IF_ERROR(checked_ids<int32_t>(*id_tensor, p->rows, ids));
    } else {
      TF_RETURN_IF_ERROR(checked_ids<int64_t>(*id_tensor, p->rows, ids));
    }
    p->ids = ids;
    return tfl::OkStatus();
  }

  // Embedding's outputs y and dw_drho, both ids.shape + [dim].
  static tfl::Status allocate_lookup(tfl::OpKernelContext* ctx, const EmbeddingParams& p, tfl::Tensor** y,
                                     tfl::Tensor** dw_drho) {
    const tfl::TensorShape shape = lookup_shape(ctx->input(embedding_input::kIds), p.dim);
    TF_RETURN_IF_ERROR(ctx->allocate_output(0, shape, y));
    return ctx->allocate_output(1, shape, dw_drho);
  }

  // What both EmbeddingGrad kernels start from: the checked inputs (ids as int64, host memory), the
  // distinct rows to write and the outputs allocated for them.
  struct GradInputs {
    Table table;
    EmbeddingGradParams params;  // dy, dw_drho and the outputs dw_mu, dw_rho included
    std::vector<int64_t> ids;    // params.ids points here
    EmbeddingRows rows;
    tfl::Tensor* indices = nullptr;
    int64_t unique() const { return static_cast<int64_t>(rows.rows.size()); }
  };

  tfl::Status read_grad_inputs(tfl::OpKernelContext* ctx, GradInputs* g) const {
    TF_RETURN_IF_ERROR(read_params(ctx, &g->table, &g->params));
    g->ids.resize(g->params.count);
    TF_RETURN_IF_ERROR(read_ids(ctx, g->ids.data(), &g->params));
    TF_RETURN_IF_ERROR(read_lookup_shaped(ctx, "dy", g->params, &g->params.dy));
    TF_RETURN_IF_ERROR(read_lookup_shaped(ctx, "dw_drho", g->params, &g->params.dw_drho));
    g->rows = embedding_rows(g->params);
    tfl::Tensor *dw_mu, *dw_rho;
    TF_RETURN_IF_ERROR(allocate_grads(ctx, g->unique(), g->params.dim, &g->indices, &dw_mu, &dw_rho));
    g->params.dw_mu = dw_mu->flat<float>().data();
    g->params.dw_rho = dw_rho->flat<float>().data();
    return tfl::OkStatus();
  }

  // EmbeddingGrad's input `name` (dy or dw_drho), checked against the shape of y.
  static tfl::Status read_lookup_shaped(tfl::OpKernelContext* ctx, const char* name, const EmbeddingParams& p,
                                        const float** data) {
    const tfl::Tensor *tensor, *ids;
    TF_RETURN_IF_ERROR(ctx->input(name, &tensor));
    TF_RETURN_IF_ERROR(ctx->input("ids", &ids));
    const tfl::TensorShape y_shape = lookup_shape(*ids, p.dim);
    if (tensor->shape() != y_shape) {
      return tfl::errors::InvalidArgument(name, " must have shape ", y_shape.DebugString(), ", got ",
                                          tensor->shape().DebugString());
    }
    *data = tensor->flat<float>().data();
    return tfl::OkStatus();
  }

  // EmbeddingGrad's outputs for `unique` gradient rows: indices [unique], dw_mu and dw_rho [unique, dim].
  static tfl::Status allocate_grads(tfl::OpKernelContext* ctx, int64_t unique, int64_t dim, tfl::Tensor** indices,
                                    tfl::Tensor** dw_mu, tfl::Tensor** dw_rho) {
    TF_RETURN_IF_ERROR(ctx->allocate_output(0, tfl::TensorShape({unique}), indices));
    TF_RETURN_IF_ERROR(ctx->allocate_output(1, tfl::TensorShape({unique, dim}), dw_mu));
    return ctx->allocate_output(2, tfl::TensorShape({unique, dim}), dw_rho);
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

}  // namespace tf
}  // namespace fusedbnn
