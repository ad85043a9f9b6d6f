#include "strata/eval/references.h"

#include "strata/core/error.h"
#include "strata/eval/score.h"

namespace strata::eval {

SegmentReferences gather_references(const std::vector<std::string>& hyps,
                                    const std::vector<std::vector<std::string>>& ref_streams,
                                    const std::string& metric) {
  STRATA_CHECK(!hyps.empty()) << metric << ": no hypotheses to score";
  STRATA_CHECK(!ref_streams.empty()) << metric << ": no reference streams given";
  for (size_t r = 0; r < ref_streams.size(); ++r)
    STRATA_CHECK(ref_streams[r].size() == hyps.size())
        << metric << ": reference stream " << r + 1 << " has " << ref_streams[r].size()
        << " segments but there are " << hyps.size() << " hypotheses";
  SegmentReferences out;
  out.refs.resize(hyps.size());
  std::vector<size_t> counts(hyps.size());
  for (size_t i = 0; i < hyps.size(); ++i) {
    for (const auto& stream : ref_streams)
      if (!stream[i].empty()) out.refs[i].push_back(&stream[i]);
    STRATA_CHECK(!out.refs[i].empty()) << metric << ": segment " << i + 1 << " has only empty references";
    counts[i] = out.refs[i].size();
  }
  out.nrefs = nrefs_value(counts);
  return out;
}

}  // namespace strata::eval
