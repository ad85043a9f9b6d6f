#include "strata/dist/groups.h"

namespace strata::dist {

ExpertPlacement plan_expert_placement(int num_experts, int world_size) {
  STRATA_CHECK(num_experts >= 1 && world_size >= 1)
      << "expert placement: need at least one expert and one rank, got " << num_experts << " experts on "
      << world_size << " ranks";
  STRATA_CHECK(num_experts % world_size == 0 || world_size % num_experts == 0)
      << "expert placement: " << num_experts << " experts on " << world_size
      << " ranks; one must divide the other (experts per rank, or replicas per expert)";
  ExpertPlacement p;
  p.num_experts = num_experts;
  p.world_size = world_size;
  if (num_experts >= world_size) {
    p.local_experts = num_experts / world_size;
    p.replicas = 1;
    p.group_size = world_size;
  } else {
    p.local_experts = 1;
    p.replicas = world_size / num_experts;
    p.group_size = num_experts;
  }
  return p;
}

int ExpertPlacement::first_expert(int rank) const {
  STRATA_CHECK(rank >= 0 && rank < world_size)
      << "expert placement: rank " << rank << " outside a world of " << world_size;
  return (rank % group_size) * local_experts;
}

int ExpertPlacement::group_rank_of_expert(int expert) const {
  STRATA_CHECK(expert >= 0 && expert < num_experts)
      << "expert placement: expert " << expert << " outside 0.." << num_experts - 1;
  return expert / local_experts;
}

ExpertGroups make_expert_groups(Communicator& world, int num_experts) {
  ExpertGroups g;
  g.placement = plan_expert_placement(num_experts, world.size());
  const int r = world.rank();
  g.expert = world.split(g.placement.expert_group_color(r), r);
  g.replica = world.split(g.placement.replica_group_color(r), r);
  return g;
}

}  // namespace strata::dist
