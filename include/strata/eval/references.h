// Reference handling shared by BLEU and chrF, as in sacreBLEU's
// Metric._cache_references: references come as streams parallel to the
// hypotheses, and an empty reference string means "this segment has fewer
// references" (so variable reference counts are possible).
#pragma once
#include <string>
#include <vector>

namespace strata::eval {

struct SegmentReferences {
  // refs[i]: the non-empty references of segment i, in stream order.
  std::vector<std::vector<const std::string*>> refs;
  std::string nrefs;  // signature value: "1", "2", ... or "var"
};

// Checks the corpus shape and throws strata::Error naming `metric` when there
// are no hypotheses or no reference streams, when a stream's length differs
// from the hypotheses', or when a segment has no non-empty reference.
SegmentReferences gather_references(const std::vector<std::string>& hyps,
                                    const std::vector<std::vector<std::string>>& ref_streams,
                                    const std::string& metric);

}  // namespace strata::eval
