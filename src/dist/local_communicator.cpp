#include "strata/dist/communicator.h"

namespace strata::dist {

void LocalCommunicator::all_to_all(const Tensor& send, const Tensor& recv) {
  if (send.same(recv)) return;
  recv.copy_(send);
}

void LocalCommunicator::all_gather(const Tensor& send, const Tensor& recv) {
  if (send.same(recv)) return;
  STRATA_CHECK(recv.numel() == send.numel())
      << "all_gather: receive buffer " << recv.str() << " does not hold " << send.str() << " for 1 rank";
  recv.copy_(send.reshape(recv.shape()));
}

}  // namespace strata::dist
