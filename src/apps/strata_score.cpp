// strata-score: the loss of a saved checkpoint on a split, like fairseq-validate
// (see train/score.h); --dump-batch feeds the PyTorch reference check.
#include "strata/train/score.h"

int main(int argc, char** argv) { return strata::train::score_main(argc, argv); }
