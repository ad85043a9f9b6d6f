// Small collectives that keep the ranks' decisions identical: whether any
// rank wants to stop, rank 0's numbers for everyone, and variable-length
// results (decoded hypotheses) gathered to every rank.
#pragma once
#include <cstdint>
#include <vector>

#include "strata/dist/communicator.h"

namespace strata::dist {

// True on every rank when `flag` is true on at least one.
bool any_rank(Communicator& comm, bool flag);

// Every rank receives root's values (sizes must agree; checked on every rank).
void broadcast_values(Communicator& comm, std::vector<double>& values, int root = 0);

// Every rank's list of id sequences, indexed by rank (two all_gathers: the
// encoded sizes, then the payload padded to the largest).
std::vector<std::vector<std::vector<int32_t>>> all_gather_sequences(Communicator& comm,
                                                                    const std::vector<std::vector<int32_t>>& mine);

// The flat encoding all_gather_sequences sends: [count, len_0 .. len_{n-1}, ids...].
std::vector<int32_t> encode_sequences(const std::vector<std::vector<int32_t>>& seqs);
// Inverse of encode_sequences; trailing padding is ignored; throws on a malformed buffer.
std::vector<std::vector<int32_t>> decode_sequences(const int32_t* data, int64_t size);

}  // namespace strata::dist
