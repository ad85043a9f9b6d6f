#include "strata/dist/communicator.h"

#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/context.h"
#include "strata/dist/nccl_communicator.h"
#endif

namespace strata::dist {

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
  }
  return "?";
}

namespace {

class FinishedCollective final : public PendingCollective {
 public:
  void wait() override {}
  bool done() const override { return true; }
};

}  // namespace

std::unique_ptr<PendingCollective> Communicator::all_reduce_start(const Tensor& t, ReduceOp op) {
  all_reduce(t, op);
  return std::make_unique<FinishedCollective>();
}

namespace {

// Where a communicator's buffers may live. MPI (and any communicator not
// named here) moves host memory only; NCCL moves device memory only; the
// single-process LocalCommunicator copies on either.
enum class Buffers { Cpu, Gpu, Any };

Buffers buffers_of(const Communicator& c) {
  if (dynamic_cast<const LocalCommunicator*>(&c)) return Buffers::Any;
#ifdef STRATA_WITH_CUDA
  if (dynamic_cast<const NcclCommunicator*>(&c)) return Buffers::Gpu;
#endif
  return Buffers::Cpu;
}

void check_buffer(const Tensor& t, const char* op, const char* what, const Communicator& c) {
  STRATA_CHECK(t.defined()) << op << " on '" << c.name() << "': undefined " << what << " tensor";
  switch (buffers_of(c)) {
    case Buffers::Cpu:
      STRATA_CHECK(t.device().is_cpu()) << op << " on '" << c.name() << "': " << what << " " << t.str()
                                        << " is not on the CPU (GPU buffers need the NCCL communicator)";
      break;
    case Buffers::Gpu:
      STRATA_CHECK(t.device().is_cuda()) << op << " on '" << c.name() << "': " << what << " " << t.str()
                                         << " is not on a GPU (the NCCL communicator moves GPU buffers only)";
      break;
    case Buffers::Any: break;
  }
  STRATA_CHECK(t.is_contiguous()) << op << " on '" << c.name() << "': " << what << " " << t.str()
                                  << " is not contiguous";
}

void check_same_device(const Tensor& send, const Tensor& recv, const char* op, const Communicator& c) {
  STRATA_CHECK(send.device() == recv.device()) << op << " on '" << c.name() << "': send " << send.str()
                                               << " and recv " << recv.str() << " are on different devices";
}

// LocalCommunicator's copy of `src` into `dst` (contiguous, same dtype and
// element count, one device): memmove semantics on the CPU as before, one
// device-to-device copy in stream order on a GPU.
void local_copy(const Tensor& dst, const Tensor& src) {
  if (dst.device().is_cpu()) {
    dst.copy_(src.shape() == dst.shape() ? src : src.reshape(dst.shape()));
    return;
  }
#ifdef STRATA_WITH_CUDA
  if (dst.nbytes() == 0 || dst.raw_data() == src.raw_data()) return;
  const cudaStream_t s = cuda::compute_stream();
  if (dst.impl().storage == src.impl().storage) {  // may overlap: stage through a fresh block
    Tensor tmp = Tensor::empty(src.shape(), src.dtype(), src.device());
    STRATA_CUDA_CHECK(cudaMemcpyAsync(tmp.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice, s));
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), tmp.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice, s));
    return;
  }
  STRATA_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice, s));
#endif
}

}  // namespace

void validate_all_reduce(const Tensor& t, const Communicator& c) {
  check_buffer(t, "all_reduce", "buffer", c);
  const DType d = t.dtype();
  // NCCL also reduces 16-bit floats (in their own precision); MPI has no such type.
  const bool half_ok = t.device().is_cuda() && (d == DType::F16 || d == DType::BF16);
  STRATA_CHECK(d == DType::F32 || d == DType::F64 || d == DType::I32 || d == DType::I64 || half_ok)
      << "all_reduce on '" << c.name() << "': " << t.str() << " has dtype " << dtype_name(d)
      << " (supported: f32, f64, i32, i64; also f16 and bf16 on a GPU)";
}

void validate_all_to_all(const Tensor& send, const Tensor& recv, const Communicator& c) {
  check_buffer(send, "all_to_all", "send", c);
  check_buffer(recv, "all_to_all", "recv", c);
  check_same_device(send, recv, "all_to_all", c);
  STRATA_CHECK(send.shape() == recv.shape() && send.dtype() == recv.dtype())
      << "all_to_all on '" << c.name() << "': send " << send.str() << " and recv " << recv.str() << " differ";
  STRATA_CHECK(send.dim() >= 1 && send.size(0) % c.size() == 0)
      << "all_to_all on '" << c.name() << "': " << send.str() << " does not split into " << c.size()
      << " equal row chunks";
}

void validate_all_gather(const Tensor& send, const Tensor& recv, const Communicator& c) {
  check_buffer(send, "all_gather", "send", c);
  check_buffer(recv, "all_gather", "recv", c);
  check_same_device(send, recv, "all_gather", c);
  STRATA_CHECK(send.dtype() == recv.dtype() && recv.numel() == send.numel() * c.size())
      << "all_gather on '" << c.name() << "': receive buffer " << recv.str() << " does not hold " << send.str()
      << " for " << c.size() << " rank(s)";
}

void validate_broadcast(const Tensor& t, int root, const Communicator& c) {
  check_buffer(t, "broadcast", "buffer", c);
  STRATA_CHECK(root >= 0 && root < c.size())
      << "broadcast on '" << c.name() << "': root " << root << " is not a rank of " << c.size();
}

void validate_split(int color, const Communicator& c) {
  STRATA_CHECK(color >= 0) << "split of '" << c.name() << "': color must be >= 0, got " << color;
}

void LocalCommunicator::all_reduce(const Tensor& t, ReduceOp) { validate_all_reduce(t, *this); }

void LocalCommunicator::all_to_all(const Tensor& send, const Tensor& recv) {
  validate_all_to_all(send, recv, *this);
  if (send.same(recv)) return;
  local_copy(recv, send);
}

void LocalCommunicator::all_gather(const Tensor& send, const Tensor& recv) {
  validate_all_gather(send, recv, *this);
  if (send.same(recv)) return;
  local_copy(recv, send);
}

void LocalCommunicator::broadcast(const Tensor& t, int root) { validate_broadcast(t, root, *this); }

std::unique_ptr<Communicator> LocalCommunicator::split(int color, int) {
  validate_split(color, *this);
  return std::make_unique<LocalCommunicator>();
}

}  // namespace strata::dist
