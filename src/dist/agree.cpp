#include "strata/dist/agree.h"

#include <algorithm>

namespace strata::dist {

bool any_rank(Communicator& comm, bool flag) { return comm.all_reduce_int(flag ? 1 : 0, ReduceOp::Max) != 0; }

void broadcast_values(Communicator& comm, std::vector<double>& values, int root) {
  if (comm.size() == 1) return;
  const int64_t n = int64_t(values.size());
  const int64_t lo = comm.all_reduce_int(n, ReduceOp::Min), hi = comm.all_reduce_int(n, ReduceOp::Max);
  STRATA_CHECK(lo == hi) << "broadcast_values on '" << comm.name() << "': ranks hold between " << lo << " and "
                         << hi << " values";
  if (n == 0) return;
  Tensor t = Tensor::from_vector(values, {n});
  comm.broadcast(t, root);
  values = t.to_vector<double>();
}

std::vector<int32_t> encode_sequences(const std::vector<std::vector<int32_t>>& seqs) {
  std::vector<int32_t> out;
  out.push_back(int32_t(seqs.size()));
  for (const auto& s : seqs) out.push_back(int32_t(s.size()));
  for (const auto& s : seqs) out.insert(out.end(), s.begin(), s.end());
  return out;
}

std::vector<std::vector<int32_t>> decode_sequences(const int32_t* data, int64_t size) {
  STRATA_CHECK(size >= 1 && data[0] >= 0 && data[0] < size)
      << "decode_sequences: buffer of " << size << " values has no valid count";
  const int64_t n = data[0];
  int64_t pos = 1 + n;
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = data[1 + i];
    STRATA_CHECK(len >= 0 && pos + len <= size)
        << "decode_sequences: sequence " << i << " of length " << len << " runs past the buffer of " << size;
    out[size_t(i)].assign(data + pos, data + pos + len);
    pos += len;
  }
  return out;
}

std::vector<std::vector<std::vector<int32_t>>> all_gather_sequences(Communicator& comm,
                                                                    const std::vector<std::vector<int32_t>>& mine) {
  std::vector<int32_t> flat = encode_sequences(mine);
  const int W = comm.size();
  Tensor len = Tensor::from_vector(std::vector<int64_t>{int64_t(flat.size())}, {1});
  Tensor lens = Tensor::empty({W}, DType::I64);
  comm.all_gather(len, lens);
  std::vector<int64_t> sizes = lens.to_vector<int64_t>();
  const int64_t longest = *std::max_element(sizes.begin(), sizes.end());
  flat.resize(size_t(longest), 0);
  Tensor send = Tensor::from_vector(flat, {longest});
  Tensor recv = Tensor::empty({int64_t(W) * longest}, DType::I32);
  comm.all_gather(send, recv);
  const int32_t* p = recv.data<int32_t>();
  std::vector<std::vector<std::vector<int32_t>>> out;
  for (int r = 0; r < W; ++r) out.push_back(decode_sequences(p + int64_t(r) * longest, sizes[size_t(r)]));
  return out;
}

}  // namespace strata::dist
