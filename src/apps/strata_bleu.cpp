// strata-bleu: corpus BLEU, spBLEU and chrF with sacreBLEU's definitions.
// Usage and behaviour: docs/bleu.md; the work is in src/eval/cli.cpp.
#include <iostream>

#include "strata/eval/cli.h"

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  return strata::eval::bleu_main(argc, argv, std::cin, std::cout, std::cerr);
}
