// GPU kernels of FusedBnn>Embedding and FusedBnn>EmbeddingGrad. The ids stay in host memory, like
// the seeds: they are checked there exactly as the CPU kernels check them (InvalidArgument naming
// the first id out of range; the device cannot report one without a synchronisation), and
// EmbeddingGrad lists its gradient rows there (its outputs' size, the number of distinct ids, must
// be known on the host to allocate them). The checked ids, or the gradient rows, then go to the
// device through pinned staging memory on the op's stream; nothing waits for the device.
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/embedding_cuda.h"
#include "tf/embedding_kernel.h"
#include "tf/gpu/gpu_common.h"

namespace fusedbnn {
namespace tf {
namespace {

// The kernels' view of checked parameters whose ids (int64) are at `device_ids`.
cuda::EmbeddingParams device_params(const EmbeddingParams& p, const int64_t* device_ids) {
  return cuda::EmbeddingParams{device_ids, true,     p.count,       p.rows,     p.dim,      p.w_mu,
                               p.w_rho,    p.stream, p.padding_idx, p.max_norm, p.norm_type};
}

class EmbeddingGpuOp : public EmbeddingBase {
 public:
  using EmbeddingBase::EmbeddingBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    EmbeddingParams p;
    Table table;
    OP_REQUIRES_OK(ctx, read_params(ctx, &table, &p));
    tfl::Tensor staging;
    OP_REQUIRES_OK(ctx, allocate_pinned(ctx, tfl::DT_INT64, tfl::TensorShape({p.count}), &staging));
    OP_REQUIRES_OK(ctx, read_ids(ctx, staging.flat<int64_t>().data(), &p));
    tfl::Tensor *y, *dw_drho;
    OP_REQUIRES_OK(ctx, allocate_lookup(ctx, p, &y, &dw_drho));
    if (y->NumElements() == 0) return;
    tfl::Tensor ids;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_INT64, staging.shape(), &ids));
    int64_t* device_ids = ids.flat<int64_t>().data();
    OP_REQUIRES_OK(ctx, copy_to_device(ctx, staging, {{p.ids, device_ids, sizeof(int64_t) * p.count}}));
    OP_REQUIRES_OK(ctx,
                   launch_status(cuda::embedding_forward(device_params(p, device_ids), y->flat<float>().data(),
                                                         dw_drho->flat<float>().data(), nullptr, gpu_stream(ctx))));
  }
};

class EmbeddingGradGpuOp : public EmbeddingBase {
 public:
  using EmbeddingBase::EmbeddingBase;
  void Compute(tfl::OpKernelContext* ctx) override {
    GradInputs g;
    OP_REQUIRES_OK(ctx, read_grad_inputs(ctx, &g));
    const EmbeddingRows& rows = g.rows;
    const int64_t unique = g.unique();
    const int64_t positions = static_cast<int64_t>(rows.positions.size());
    if (unique == 0) return;

    // Staged as [rows | positions | starts]; the rows go straight to the indices output.
    tfl::Tensor staging, plan;
    OP_REQUIRES_OK(ctx, allocate_pinned(ctx, tfl::DT_INT64, tfl::TensorShape({2 * unique + positions + 1}), &staging));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tfl::DT_INT64, tfl::TensorShape({unique + positions + 1}), &plan));
    int64_t* host = staging.flat<int64_t>().data();
    std::memcpy(host, rows.rows.data(), sizeof(int64_t) * unique);
    std::memcpy(host + unique, rows.positions.data(), sizeof(int64_t) * positions);
    std::memcpy(host + unique + positions, rows.starts.data(), sizeof(int64_t) * (unique + 1));
    int64_t* device_rows = g.indices->flat<int64_t>().data();
    int64_t* device_plan = plan.flat<int64_t>().data();
    OP_REQUIRES_OK(ctx, copy_to_device(ctx, staging,
                                       {{host, device_rows, sizeof(int64_t) * unique},
                                        {host + unique, device_plan, sizeof(int64_t) * (positions + unique + 1)}}));
    int64_t max_positions = 0;
    for (int64_t u = 0; u < unique; ++u) max_positions = std::max(max_positions, rows.starts[u + 1] - rows.starts[u]);
    const cuda::EmbeddingGradRows grad_rows{device_rows,  unique, device_plan, positions, device_plan + positions,
                                            max_positions};
    const cuda::EmbeddingGradParams p{device_params(g.params, nullptr), g.params.dy, g.params.dw_drho, g.params.dw_mu,
                                      g.params.dw_rho};
    OP_REQUIRES_OK(ctx, launch_status(cuda::embedding_backward(p, grad_rows, gpu_stream(ctx))));
  }
};

}  // namespace

FUSEDBNN_REGISTER_GPU("FusedBnn>Embedding", EmbeddingGpuOp, .HostMemory("ids").HostMemory("w_seed"));
FUSEDBNN_REGISTER_GPU("FusedBnn>EmbeddingGrad", EmbeddingGradGpuOp, .HostMemory("ids").HostMemory("w_seed"));
FUSEDBNN_REGISTER_GPU("FusedBnn>EmbeddingFromVariables", EmbeddingGpuOp, .HostMemory("ids").HostMemory("w_seed"));
FUSEDBNN_REGISTER_GPU("FusedBnn>EmbeddingFromVariablesGrad", EmbeddingGradGpuOp,
                      .HostMemory("ids").HostMemory("w_seed"));

}  // namespace tf
}  // namespace fusedbnn
