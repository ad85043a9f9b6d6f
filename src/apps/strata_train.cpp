// strata-train: trains a translation model from a YAML config (see train/train_cli.h).
#include "strata/train/train_cli.h"

int main(int argc, char** argv) { return strata::train::train_main(argc, argv); }
