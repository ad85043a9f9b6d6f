// strata-translate: translates text with a trained model (see decode/translate_cli.h).
#include "strata/decode/translate_cli.h"

int main(int argc, char** argv) { return strata::decode::translate_main(argc, argv); }
