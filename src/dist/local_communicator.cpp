#include "strata/dist/communicator.h"

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
void check_cpu_contiguous(const Tensor& t, const char* op, const char* what, const Communicator& c) {
  STRATA_CHECK(t.defined()) << op << " on '" << c.name() << "': undefined " << what << " tensor";
  STRATA_CHECK(t.device().is_cpu()) << op << " on '" << c.name() << "': " << what << " " << t.str()
                                    << " is not on the CPU (GPU buffers need the NCCL communicator)";
  STRATA_CHECK(t.is_contiguous()) << op << " on '" << c.name() << "': " << what << " " << t.str()
                                  << " is not contiguous";
}
}  // namespace

void validate_all_reduce(const Tensor& t, const Communicator& c) {
  check_cpu_contiguous(t, "all_reduce", "buffer", c);
  const DType d = t.dtype();
  STRATA_CHECK(d == DType::F32 || d == DType::F64 || d == DType::I32 || d == DType::I64)
      << "all_reduce on '" << c.name() << "': " << t.str() << " has dtype " << dtype_name(d)
      << " (supported: f32, f64, i32, i64)";
}

void validate_all_to_all(const Tensor& send, const Tensor& recv, const Communicator& c) {
  check_cpu_contiguous(send, "all_to_all", "send", c);
  check_cpu_contiguous(recv, "all_to_all", "recv", c);
  STRATA_CHECK(send.shape() == recv.shape() && send.dtype() == recv.dtype())
      << "all_to_all on '" << c.name() << "': send " << send.str() << " and recv " << recv.str() << " differ";
  STRATA_CHECK(send.dim() >= 1 && send.size(0) % c.size() == 0)
      << "all_to_all on '" << c.name() << "': " << send.str() << " does not split into " << c.size()
      << " equal row chunks";
}

void validate_all_gather(const Tensor& send, const Tensor& recv, const Communicator& c) {
  check_cpu_contiguous(send, "all_gather", "send", c);
  check_cpu_contiguous(recv, "all_gather", "recv", c);
  STRATA_CHECK(send.dtype() == recv.dtype() && recv.numel() == send.numel() * c.size())
      << "all_gather on '" << c.name() << "': receive buffer " << recv.str() << " does not hold " << send.str()
      << " for " << c.size() << " rank(s)";
}

void validate_broadcast(const Tensor& t, int root, const Communicator& c) {
  check_cpu_contiguous(t, "broadcast", "buffer", c);
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
  recv.copy_(send);
}

void LocalCommunicator::all_gather(const Tensor& send, const Tensor& recv) {
  validate_all_gather(send, recv, *this);
  if (send.same(recv)) return;
  recv.copy_(send.reshape(recv.shape()));
}

void LocalCommunicator::broadcast(const Tensor& t, int root) { validate_broadcast(t, root, *this); }

std::unique_ptr<Communicator> LocalCommunicator::split(int color, int) {
  validate_split(color, *this);
  return std::make_unique<LocalCommunicator>();
}

}  // namespace strata::dist
