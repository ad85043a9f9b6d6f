// Loading a trained model from a checkpoint directory for translation or
// scoring: its config.yaml (with optional --set overrides, e.g. a new
// data_dir), the vocabulary, and model.safetensors.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "strata/config/options.h"
#include "strata/data/vocabulary.h"
#include "strata/model/transformer_model.h"

namespace strata::train {

struct LoadedModel {
  config::Config config;
  std::shared_ptr<data::Vocabulary> vocab;
  std::unique_ptr<model::TransformerModel> model;
};

// `checkpoint` is a checkpoint directory (with DONE) or a save_dir holding
// checkpoint_best / checkpoint_last (best preferred).
LoadedModel load_model(const std::string& checkpoint, const std::vector<std::string>& overrides = {});

// The checkpoint directory `path` refers to (see load_model).
std::string resolve_checkpoint(const std::string& path);

}  // namespace strata::train
