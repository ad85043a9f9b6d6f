#include "strata/train/load_model.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "strata/config/config.h"
#include "strata/model/build.h"
#include "strata/train/checkpoint.h"
#include "strata/train/safetensors.h"
#include "strata/train/task.h"

namespace strata::train {

std::string resolve_checkpoint(const std::string& path) {
  namespace fs = std::filesystem;
  STRATA_CHECK(fs::is_directory(path)) << "checkpoint '" << path << "' is not a directory";
  if (is_complete_checkpoint(path)) return path;
  for (const char* name : {"checkpoint_best", "checkpoint_last"}) {
    std::string p = (fs::path(path) / name).string();
    if (is_complete_checkpoint(p)) return p;
  }
  STRATA_FAIL() << "checkpoint '" << path
                << "' is neither a complete checkpoint (no DONE marker) nor a save_dir with checkpoint_best/last";
  return {};
}

LoadedModel load_model(const std::string& checkpoint, const std::vector<std::string>& overrides) {
  const std::string dir = resolve_checkpoint(checkpoint);
  std::ifstream f(dir + "/config.yaml");
  STRATA_CHECK(f.good()) << dir << ": config.yaml is missing";
  std::stringstream ss;
  ss << f.rdbuf();
  LoadedModel m;
  m.config = config::load_config_string(ss.str(), dir + "/config.yaml", overrides);
  m.vocab = load_vocabulary(m.config.data);
  STRATA_CHECK(m.vocab->size() == m.config.model.vocab_size)
      << dir << ": the model was trained with " << m.config.model.vocab_size << " symbols, the vocabulary has "
      << m.vocab->size();
  m.model = model::build_model(m.config, m.vocab->size(), m.vocab->pad());
  m.model->load_parameters(load_safetensors(dir + "/model.safetensors").tensors, dir + "/model.safetensors");
  return m;
}

}  // namespace strata::train
