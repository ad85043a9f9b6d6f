// Process groups for expert parallelism (docs/distributed.md, "groups").
//
// With E experts per MoE block on W ranks:
// - E >= W (E % W == 0): rank r holds experts [r*E/W, (r+1)*E/W); one
//   expert-parallel group of all W ranks does the all-to-all; every expert
//   has one copy (replica groups of size 1).
// - E <  W (W % E == 0): rank r holds expert r % E; the expert-parallel
//   groups are the W/E blocks of E consecutive ranks {g*E, ..., g*E+E-1}
//   (each block holds every expert once and exchanges tokens inside itself);
//   the replica group of expert e is {e, e+E, e+2E, ...}, over which that
//   expert's gradients are summed.
// This is fairseq's layout (get_all2all_group / get_moe_group). The shared
// (non-expert) weights are reduced over the whole world either way, and
// expert weights over their replica group, both divided by the global
// target-token count: one process holding all E experts computes the same.
#pragma once
#include <memory>

#include "strata/dist/communicator.h"

namespace strata::dist {

struct ExpertPlacement {
  int num_experts = 1, world_size = 1;
  int local_experts = 1;  // experts per rank
  int replicas = 1;       // copies of each expert
  int group_size = 1;     // ranks in one expert-parallel (all-to-all) group: min(E, W)

  // Global id of rank r's first expert; it holds [first_expert(r), + local_experts).
  int first_expert(int rank) const;
  // Rank within the expert-parallel group that holds global expert e.
  int group_rank_of_expert(int expert) const;
  // Colors for Communicator::split.
  int expert_group_color(int rank) const { return rank / group_size; }
  int replica_group_color(int rank) const { return rank % group_size; }
};

// Throws strata::Error unless E % W == 0 or W % E == 0 (E, W >= 1).
ExpertPlacement plan_expert_placement(int num_experts, int world_size);

struct ExpertGroups {
  ExpertPlacement placement;
  std::unique_ptr<Communicator> expert;   // all-to-all group (size group_size)
  std::unique_ptr<Communicator> replica;  // same-experts group (size replicas)
};

// Splits `world` (collective: every rank calls it with the same E).
ExpertGroups make_expert_groups(Communicator& world, int num_experts);

}  // namespace strata::dist
