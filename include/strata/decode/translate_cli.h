// strata-translate: raw text (or the first column of a TSV) in, translations
// out, one line per input line, in order.
//   strata-translate CHECKPOINT --target-lang de [-i FILE] [-o FILE] [--tsv]
//                    [--beam 5] [--lenpen 1.0] [--greedy] [--nbest N]
//                    [--max-len-a A] [--max-len-b B] [--max-tokens N] [--set key=value ...]
#pragma once

namespace strata::decode {

int translate_main(int argc, const char* const* argv);

}  // namespace strata::decode
