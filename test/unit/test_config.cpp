// Tests of the config module: YAML and --set loading, every error class and
// its message, strata forms, validation rules, dumping and round trips, and
// the committed configs under jobs/configs.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "strata/config/config.h"
#include "strata/core/error.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace strata;
using namespace strata::config;
using Catch::Contains;

namespace {

// A scratch directory per test case, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("strata_config_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    fs::path p = path / name;
    std::ofstream(p) << text;
    return p.string();
  }
};

Config from(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return load_config_string(yaml, "config.yaml", overrides);
}

// The repository's jobs/configs, found from the working directory upwards so
// the test runs from the repo root or from build/.
fs::path configs_dir() {
  for (fs::path d = fs::current_path(); !d.empty(); d = d.parent_path()) {
    if (fs::exists(d / "jobs" / "configs" / "tiny.yaml")) return d / "jobs" / "configs";
    if (d == d.parent_path()) break;
  }
  return {};
}

}  // namespace

TEST_CASE("The default config holds the SMoE reference's M4 settings", "[config]") {
  Config c;
  CHECK(c.model.encoder_layers == 6);
  CHECK(c.model.decoder_layers == 6);
  CHECK(c.model.embed_dim == 512);
  CHECK(c.model.ffn_dim == 2048);
  CHECK(c.model.attention_heads == 8);
  CHECK(c.model.dropout == 0.3);
  CHECK(c.model.attention_dropout == 0.1);
  CHECK(c.model.activation_dropout == 0.0);
  CHECK(c.model.share_all_embeddings);
  CHECK(c.model.max_source_positions == 512);
  CHECK(c.model.vocab_size == 0);
  CHECK(c.model.layernorm_eps == 1e-5);
  CHECK(c.moe.experts == 0);
  CHECK(c.moe.moe_freq == 2);
  CHECK(c.moe.moe_type == MoEType::Base);
  CHECK(c.moe.second_expert_policy == SecondExpertPolicy::Sampling);
  CHECK(c.moe.eval_capacity_token_fraction == 0.25);
  CHECK_FALSE(c.moe.normalize_gate_prob_before_dropping);
  CHECK(c.moe.gate_loss_weight == 0.01);
  CHECK(c.moe.eom_rate == 0.1);
  CHECK(c.moe.cmr_target == 0.8);
  CHECK(c.moe.z_loss_weight == 0.0);
  CHECK(c.moe.smoe_residual == SmoeResidual::Code);
  CHECK(c.moe.hmoe_layernorm);
  CHECK(c.data.max_tokens == 4096);
  CHECK(c.data.sampling_temperature == 1.0);
  CHECK(c.data.encoder_langtok == LangtokMode::Tgt);
  CHECK(c.train.seed == 42);
  CHECK(c.train.lr == 8e-4);
  CHECK(c.train.warmup_updates == 8000);
  CHECK(c.train.warmup_init_lr == 1e-7);
  CHECK(c.train.adam_beta2 == 0.98);
  CHECK(c.train.adam_eps == 1e-6);
  CHECK(c.train.clip_norm == 0.0);
  CHECK(c.train.label_smoothing == 0.1);
  CHECK(c.train.max_update == 100000);
  CHECK(c.train.best_checkpoint_metric == BestMetric::Loss);
  CHECK(c.decode.beam == 5);
  CHECK(c.decode.lenpen == 1.0);
  CHECK(c.decode.generation_capacity_token_fraction == 1.0);
}

TEST_CASE("The default config is valid and every key is registered once", "[config]") {
  Config c;
  REQUIRE_NOTHROW(validate_config(c));
  OptionRegistry r = registry_for(c);
  std::set<std::string> keys;
  for (const auto& o : r.options()) {
    CHECK(keys.insert(o->key()).second);
    CHECK_FALSE(o->help().empty());
    CHECK(r.find(o->key()) == o.get());
    CHECK(r.find(o->section() + "." + o->key()) == o.get());
  }
  CHECK(keys.size() >= 70);
  std::vector<std::string> sections;
  for (const auto& s : r.sections()) sections.push_back(s.first);
  CHECK(sections == std::vector<std::string>{"model", "moe", "data", "train", "decode"});
}

TEST_CASE("An empty config file keeps every default", "[config]") {
  CHECK(config_diff(from(""), Config{}).empty());
  CHECK(config_diff(from("# only a comment\n"), Config{}).empty());
  CHECK(config_diff(from("model:\n"), Config{}).empty());
}

TEST_CASE("Flat keys and sectioned keys load the same values", "[config]") {
  Config flat = from("encoder_layers: 3\ndropout: 0.2\nexperts: 8\nstrata: [4, 4]\nbeam: 4\nlr: 0.001\n");
  Config nested = from(
      "model:\n  encoder_layers: 3\n  dropout: 0.2\nmoe:\n  experts: 8\n  strata: [4, 4]\n"
      "decode:\n  beam: 4\ntrain:\n  lr: 0.001\n");
  CHECK(config_diff(flat, nested).empty());
  CHECK(flat.model.encoder_layers == 3);
  CHECK(flat.model.dropout == 0.2);
  CHECK(flat.moe.strata == std::vector<int>{4, 4});
  CHECK(flat.decode.beam == 4);
  CHECK(flat.train.lr == 0.001);
  Config mixed = from("model:\n  encoder_layers: 3\ndropout: 0.2\nexperts: 8\nmoe:\n  strata: 4,4\nbeam: 4\nlr: 1e-3\n");
  CHECK(config_diff(flat, mixed).empty());
}

TEST_CASE("An unknown key names the file, the line and the closest valid key", "[config]") {
  REQUIRE_THROWS_WITH(from("dropout: 0.1\nencoder_layer: 6\n"),
                      "config.yaml:2: unknown key 'encoder_layer' (did you mean 'encoder_layers'?)");
  REQUIRE_THROWS_WITH(from("model:\n  embed_dims: 256\n"),
                      "config.yaml:2: unknown key 'embed_dims' (did you mean 'embed_dim'?)");
  REQUIRE_THROWS_WITH(from("completely_unrelated_thing: 1\n"),
                      "config.yaml:1: unknown key 'completely_unrelated_thing' (see --help for the list of options)");
  REQUIRE_THROWS_WITH(from("modle:\n  encoder_layers: 2\n"), Contains("did you mean 'model'?"));
}

TEST_CASE("Typo suggestions pick the intended key", "[config]") {
  Config c;
  OptionRegistry r = registry_for(c);
  auto [typo, intended] = GENERATE(table<std::string, std::string>({
      {"encoder_layer", "encoder_layers"},
      {"encdoer_layers", "encoder_layers"},  // transposition
      {"decoder-layer", "decoder_layers"},   // dash spelling
      {"dropuot", "dropout"},
      {"atention_heads", "attention_heads"},
      {"expert", "experts"},
      {"strat", "strata"},
      {"moe_expert_cnt", "experts"},  // near an alias: suggest the canonical key
      {"hmoe_dynamc", "strata"},
      {"lable_smoothing", "label_smoothing"},
      {"max_token", "max_tokens"},
      {"beams", "beam"},
      {"warmup_update", "warmup_updates"},
      {"second_expert_policies", "second_expert_policy"},
      {"eval_capacity_fraction", "eval_capacity_token_fraction"},
      {"savedir", "save_dir"},
      {"lenpenalty", "lenpen"},  // an extension of the key
      {"encoder", "encoder_layers"},  // a prefix of several keys: the shortest
      {"generation_capacity", "generation_capacity_token_fraction"},
  }));
  CAPTURE(typo);
  CHECK(r.suggest(typo) == intended);
  CHECK(r.find(typo) == nullptr);
  CHECK_THAT(r.unknown_key_message(typo), Contains("did you mean '" + intended + "'?"));
}

TEST_CASE("Suggestions stay silent for words far from every key", "[config]") {
  Config c;
  OptionRegistry r = registry_for(c);
  for (std::string w : {"qqqqqq", "xylophone_volume", "banana"}) {
    CAPTURE(w);
    CHECK(r.suggest(w).empty());
  }
  CHECK(closest_match("abc", {}).empty());
  CHECK(closest_match("abcd", {"abce", "abcf"}) == "abce");  // ties go to the first
  CHECK(closest_match("abc", {"abcdefghij"}).empty());        // prefixes shorter than 4 do not count
}

TEST_CASE("Edit distance counts insertions, deletions, substitutions and swaps", "[config]") {
  CHECK(edit_distance("", "") == 0);
  CHECK(edit_distance("abc", "") == 3);
  CHECK(edit_distance("", "ab") == 2);
  CHECK(edit_distance("kitten", "sitting") == 3);
  CHECK(edit_distance("encoder", "encdoer") == 1);
  CHECK(edit_distance("ab", "ba") == 1);
  CHECK(edit_distance("beam", "beam") == 0);
  CHECK(edit_distance("flaw", "lawn") == 2);
}

TEST_CASE("A key under the wrong section names its real section", "[config]") {
  REQUIRE_THROWS_WITH(from("model:\n  beam: 4\n"),
                      "config.yaml:2: key 'model.beam': 'beam' belongs to section 'decode', not 'model'");
  Config c;
  REQUIRE_THROWS_WITH(apply_override(c, "train.dropout=0.1"),
                      "--set: key 'train.dropout': 'dropout' belongs to section 'model', not 'train'");
  REQUIRE_THROWS_WITH(from("decode: 5\n"),
                      "config.yaml:1: section 'decode' expects a mapping of its options, got '5'");
}

TEST_CASE("A value of the wrong type or range names the key, the expectation and the value", "[config]") {
  SECTION("numbers") {
    REQUIRE_THROWS_WITH(from("dropout: high\n"), "config.yaml:1: key 'dropout' expects a number in [0, 1), got 'high'");
    REQUIRE_THROWS_WITH(from("dropout: 1.0\n"), "config.yaml:1: key 'dropout' expects a number in [0, 1), got '1.0'");
    REQUIRE_THROWS_WITH(from("lr: -1\n"), "config.yaml:1: key 'lr' expects a number > 0, got '-1'");
    REQUIRE_THROWS_WITH(from("lr: .nan\n"), Contains("key 'lr' expects a number > 0"));
    REQUIRE_THROWS_WITH(from("cmr_target: 1.5\n"), Contains("expects a number in [0, 1], got '1.5'"));
    REQUIRE_THROWS_WITH(from("grad_bucket_mb: 0\n"), Contains("key 'grad_bucket_mb' expects a number in (0, 1024], got '0'"));
    REQUIRE_THROWS_WITH(from("grad_bucket_mb: 2048\n"), Contains("expects a number in (0, 1024], got '2048'"));
    REQUIRE_THROWS_WITH(from("eval_capacity_token_fraction: 0\n"), Contains("expects a number other than 0, got '0'"));
  }
  SECTION("integers") {
    REQUIRE_THROWS_WITH(from("encoder_layers: 2.5\n"),
                        "config.yaml:1: key 'encoder_layers' expects an integer > 0, got '2.5'");
    REQUIRE_THROWS_WITH(from("encoder_layers: 0\n"), Contains("expects an integer > 0, got '0'"));
    REQUIRE_THROWS_WITH(from("experts: -8\n"), Contains("key 'experts' expects an integer >= 0, got '-8'"));
    REQUIRE_THROWS_WITH(from("keep_last: -2\n"), Contains("key 'keep_last' expects an integer >= -1, got '-2'"));
    REQUIRE_THROWS_WITH(from("max_tokens: 99999999999\n"), Contains("key 'max_tokens' expects an integer > 0"));
  }
  SECTION("booleans, strings and enumerations") {
    REQUIRE_THROWS_WITH(from("share_all_embeddings: maybe\n"),
                        "config.yaml:1: key 'share_all_embeddings' expects true or false, got 'maybe'");
    REQUIRE_THROWS_WITH(from("moe_type: smoe\n"),
                        "config.yaml:1: key 'moe_type' expects one of base, eom, cmr, got 'smoe'");
    REQUIRE_THROWS_WITH(from("moe_type: bsae\n"),
                        "config.yaml:1: key 'moe_type' expects one of base, eom, cmr, got 'bsae' (did you mean 'base'?)");
    REQUIRE_THROWS_WITH(from("second_expert_policy: gumbel\n"),
                        Contains("key 'second_expert_policy' expects one of sampling, argmax, random, got 'gumbel'"));
    REQUIRE_THROWS_WITH(from("precision: fp8\n"), Contains("key 'precision' expects one of fp32, bf16, fp16"));
    REQUIRE_THROWS_WITH(from("data_dir: [a, b]\n"), Contains("key 'data_dir' expects a string, got '[a, b]'"));
  }
  SECTION("lists, mappings and nothing") {
    REQUIRE_THROWS_WITH(from("strata: 4,x\n"), Contains("key 'strata' expects a list of integers > 0, got '4,x'"));
    REQUIRE_THROWS_WITH(from("strata: [4, [4]]\n"), Contains("key 'strata' expects a list of integers > 0, got a nested list"));
    REQUIRE_THROWS_WITH(from("dropout:\n  a: 1\n"), "config.yaml:1: key 'dropout' expects a number in [0, 1), got a mapping");
    REQUIRE_THROWS_WITH(from("beam:\n"), "config.yaml:1: key 'beam' expects an integer > 0, got nothing");
  }
}

TEST_CASE("A missing config file is reported with its path", "[config]") {
  REQUIRE_THROWS_WITH(load_config("x.yaml"), "cannot open config file 'x.yaml'");
  TempDir t;
  REQUIRE_THROWS_WITH(load_config(t.path.string()), Contains("cannot open config file '" + t.path.string() + "'"));
  REQUIRE_THROWS_WITH(load_config(t.write("bad.yaml", "include: nowhere.yaml\n")),
                      Contains("cannot open config file '" + (t.path / "nowhere.yaml").string() + "'"));
}

TEST_CASE("Invalid YAML and non-mapping documents name the file and line", "[config]") {
  REQUIRE_THROWS_WITH(from("model:\n  encoder_layers: [1,\n"), Contains("config.yaml:"));
  REQUIRE_THROWS_WITH(from("model:\n  encoder_layers: [1,\n"), Contains("invalid YAML"));
  REQUIRE_THROWS_WITH(from("- a\n- b\n"), "config.yaml:1: expected 'key: value' lines at the top level");
  REQUIRE_THROWS_WITH(from("just a string\n"), Contains("expected 'key: value' lines"));
}

TEST_CASE("A key set twice in one file is an error", "[config]") {
  REQUIRE_THROWS_WITH(from("dropout: 0.1\nbeam: 3\ndropout: 0.2\n"),
                      "config.yaml:3: key 'dropout' is set twice (first at line 1)");
  REQUIRE_THROWS_WITH(from("dropout: 0.1\nmodel:\n  dropout: 0.2\n"), Contains("key 'dropout' is set twice"));
  REQUIRE_THROWS_WITH(from("experts: 8\nmoe_expert_count: 8\n"), Contains("key 'experts' is set twice"));
}

TEST_CASE("--set overrides every value type", "[config]") {
  Config c;
  SECTION("integers, including 64-bit") {
    apply_override(c, "encoder_layers=3");
    apply_override(c, "seed=12345678901");
    apply_override(c, "keep_last=-1");
    apply_override(c, "max_tokens=+2048");
    CHECK(c.model.encoder_layers == 3);
    CHECK(c.train.seed == 12345678901LL);
    CHECK(c.train.keep_last == -1);
    CHECK(c.data.max_tokens == 2048);
  }
  SECTION("numbers") {
    apply_override(c, "dropout=0.15");
    apply_override(c, "lr=5e-4");
    apply_override(c, "warmup_init_lr=1.0e-7");
    apply_override(c, "max_len_a=2");
    CHECK(c.model.dropout == 0.15);
    CHECK(c.train.lr == 5e-4);
    CHECK(c.train.warmup_init_lr == 1e-7);
    CHECK(c.decode.max_len_a == 2.0);
  }
  SECTION("booleans in every spelling") {
    auto [text, value] = GENERATE(table<std::string, bool>({{"true", true},
                                                            {"True", true},
                                                            {"yes", true},
                                                            {"on", true},
                                                            {"1", true},
                                                            {"false", false},
                                                            {"NO", false},
                                                            {"off", false},
                                                            {"0", false}}));
    c.moe.top1 = !value;
    apply_override(c, "top1=" + text);
    CHECK(c.moe.top1 == value);
  }
  SECTION("strings keep '=' and spaces after the first '='") {
    apply_override(c, "save_dir=/tmp/a=b c");
    apply_override(c, "spm_model=");
    CHECK(c.train.save_dir == "/tmp/a=b c");
    CHECK(c.data.spm_model.empty());
  }
  SECTION("enumerations, with accepted alternative spellings") {
    apply_override(c, "moe_type=cmr");
    apply_override(c, "second_expert_policy=all");
    apply_override(c, "device=gpu");
    apply_override(c, "best_checkpoint_metric=spbleu");
    CHECK(c.moe.moe_type == MoEType::Cmr);
    CHECK(c.moe.second_expert_policy == SecondExpertPolicy::Argmax);
    CHECK(c.train.device == DeviceChoice::Cuda);
    CHECK(c.train.best_checkpoint_metric == BestMetric::SpBleu);
    CHECK(std::string(to_string(c.moe.second_expert_policy)) == "argmax");
    CHECK(std::string(to_string(c.train.device)) == "cuda");
  }
  SECTION("lists") {
    apply_override(c, "langs=en,de,pt_br");
    apply_override(c, "lang_pairs=[en-de, de-en]");
    apply_override(c, "strata=4, 4 ,8");
    CHECK(c.data.langs == std::vector<std::string>{"en", "de", "pt_br"});
    CHECK(c.data.lang_pairs == std::vector<std::string>{"en-de", "de-en"});
    CHECK(c.moe.strata == std::vector<int>{4, 4, 8});
    apply_override(c, "langs=");
    CHECK(c.data.langs.empty());
  }
  SECTION("keys with dashes, section prefixes and reference aliases") {
    apply_override(c, "decoder-layers=4");
    apply_override(c, "decode.beam=7");
    apply_override(c, "moe-expert-count=16");
    apply_override(c, "hmoe_dynamic=4,12");
    apply_override(c, "moe_gate_loss_wt=0.02");
    apply_override(c, "cmr_gate_loss_p=0.5");
    CHECK(c.model.decoder_layers == 4);
    CHECK(c.decode.beam == 7);
    CHECK(c.moe.experts == 16);
    CHECK(c.moe.strata == std::vector<int>{4, 12});
    CHECK(c.moe.gate_loss_weight == 0.02);
    CHECK(c.moe.cmr_target == 0.5);
  }
}

TEST_CASE("--set errors name --set, the key and the value", "[config]") {
  Config c;
  REQUIRE_THROWS_WITH(apply_override(c, "dropout"), "--set: expected key=value, got 'dropout'");
  REQUIRE_THROWS_WITH(apply_override(c, "=3"), "--set: expected key=value, got '=3'");
  REQUIRE_THROWS_WITH(apply_override(c, "encoder_layer=3"),
                      "--set: unknown key 'encoder_layer' (did you mean 'encoder_layers'?)");
  REQUIRE_THROWS_WITH(apply_override(c, "dropout=high"), "--set: key 'dropout' expects a number in [0, 1), got 'high'");
  REQUIRE_THROWS_WITH(apply_override(c, "beam=2.5"), "--set: key 'beam' expects an integer > 0, got '2.5'");
  REQUIRE_THROWS_WITH(apply_override(c, "strata=4,,4"), Contains("key 'strata' expects a list of integers > 0"));
  REQUIRE_THROWS_WITH(apply_override(c, "strata=[4,4"), Contains("key 'strata' expects a list of integers > 0"));
  CHECK(c.model.dropout == 0.3);  // a rejected value leaves the field alone
  CHECK(c.decode.beam == 5);
}

TEST_CASE("Overrides apply after the file, in order, and are validated", "[config]") {
  Config c = from("dropout: 0.2\nbeam: 3\n", {"dropout=0.25", "beam=4", "beam=6"});
  CHECK(c.model.dropout == 0.25);
  CHECK(c.decode.beam == 6);
  TempDir t;
  std::string p = t.write("c.yaml", "experts: 8\nstrata: 4,4\n");
  Config d = load_config(p, {"experts=16", "strata=4,12"});
  CHECK(d.moe.experts == 16);
  CHECK(d.moe.strata == std::vector<int>{4, 12});
  REQUIRE_THROWS_WITH(load_config(p, {"experts=16"}), p + ", --set: strata 4,4 sum to 8, but experts is 16");
  Config e = load_config("", {"embed_dim=128", "attention_heads=4"});
  CHECK(e.model.embed_dim == 128);
}

TEST_CASE("strata accept a comma string, a YAML list, brackets or a single integer", "[config]") {
  auto [yaml, expected] = GENERATE(table<std::string, std::vector<int>>({
      {"experts: 16\nstrata: 4,4,8\n", {4, 4, 8}},
      {"experts: 16\nstrata: \"4, 4, 8\"\n", {4, 4, 8}},
      {"experts: 16\nstrata: [4, 4, 8]\n", {4, 4, 8}},
      {"experts: 16\nstrata:\n  - 4\n  - 4\n  - 8\n", {4, 4, 8}},
      {"experts: 16\nstrata: '[4,4,8]'\n", {4, 4, 8}},
      {"experts: 16\nstrata: 16\n", {16}},
      {"experts: 16\nstrata: [4, 12]\n", {4, 12}},
      {"experts: 16\n", {16}},  // no split given: one stratum
      {"experts: 16\nstrata: []\n", {16}},
      {"experts: 16\nstrata:\n", {16}},
  }));
  CAPTURE(yaml);
  Config c = from(yaml);
  CHECK(c.moe.strata == expected);
  CHECK(c.moe.num_strata() == int(expected.size()));
  int off = 0;
  for (int s = 0; s < c.moe.num_strata(); ++s) {
    CHECK(c.moe.stratum_offset(s) == off);
    off += expected[s];
  }
}

TEST_CASE("strata must be positive, sum to experts, and need an MoE model", "[config]") {
  REQUIRE_THROWS_WITH(from("experts: 16\nstrata: 4,4\n"), "config.yaml: strata 4,4 sum to 8, but experts is 16");
  REQUIRE_THROWS_WITH(from("experts: 8\nstrata: 4,0,4\n"),
                      "config.yaml:2: key 'strata' expects a list of integers > 0, got '4,0,4'");
  REQUIRE_THROWS_WITH(from("experts: 8\nstrata: [4, -4, 8]\n"), Contains("got '[4, -4, 8]'"));
  REQUIRE_THROWS_WITH(from("strata: 4,4\n"), "config.yaml: strata 4,4 given for a dense model (experts is 0)");
  REQUIRE_NOTHROW(from("experts: 8\nstrata: 2,2,2,2\n"));
}

TEST_CASE("MoE type rules: CMR takes one stratum, EOM needs a rate, both need experts", "[config]") {
  REQUIRE_THROWS_WITH(from("moe_type: cmr\nexperts: 8\nstrata: 4,4\n"),
                      "config.yaml: cmr cannot be combined with more than one stratum (strata 4,4)");
  Config cmr = from("moe_type: cmr\nexperts: 8\n");
  CHECK(cmr.moe.strata == std::vector<int>{8});
  CHECK(cmr.moe.effective_eom_rate() == 0.0);
  REQUIRE_THROWS_WITH(from("moe_type: eom\n"),
                      "config.yaml: moe_type 'eom' needs experts > 0 (experts is 0: a dense model)");
  REQUIRE_THROWS_WITH(from("moe_type: eom\nexperts: 8\neom_rate: 0\n"), "config.yaml: moe_type 'eom' needs eom_rate > 0");
  Config eom = from("moe_type: eom\nexperts: 8\nstrata: 4,4\n");  // EOM works with SMoE
  CHECK(eom.moe.effective_eom_rate() == 0.1);
  REQUIRE_THROWS_WITH(from("experts: 8\nmoe_freq: 7\n"), Contains("experts is 8 but no layer is an MoE block"));
  REQUIRE_NOTHROW(from("experts: 8\nencoder_moe_freq: 0\n"));
}

TEST_CASE("MoE layer placement follows moe_freq and the per-stack overrides", "[config]") {
  Config c = from("experts: 8\n");
  std::vector<int> enc, dec;
  for (int i = 0; i < 6; ++i) {
    if (c.moe.is_moe_layer(false, i)) enc.push_back(i);
    if (c.moe.is_moe_layer(true, i)) dec.push_back(i);
  }
  CHECK(enc == std::vector<int>{1, 3, 5});  // layers 2, 4, 6 in 1-based numbering
  CHECK(dec == std::vector<int>{1, 3, 5});
  Config d = from("experts: 8\nencoder_moe_freq: 0\ndecoder_moe_freq: 3\n");
  for (int i = 0; i < 6; ++i) {
    CHECK_FALSE(d.moe.is_moe_layer(false, i));
    CHECK(d.moe.is_moe_layer(true, i) == (i == 2 || i == 5));
  }
  Config dense;
  CHECK_FALSE(dense.moe.is_moe_layer(false, 1));
  CHECK(dense.moe.num_strata() == 0);
}

TEST_CASE("Cross-option errors name where the values came from", "[config]") {
  TempDir t;
  std::string p = t.write("m.yaml", "embed_dim: 500\n");
  REQUIRE_THROWS_WITH(load_config(p), p + ": embed_dim 500 is not divisible by attention_heads 8");
  REQUIRE_THROWS_WITH(load_config("", {"attention_heads=7"}), "--set: embed_dim 512 is not divisible by attention_heads 7");
  Config c;
  c.model.attention_heads = 7;
  REQUIRE_THROWS_WITH(validate_config(c), "config: embed_dim 512 is not divisible by attention_heads 7");
}

TEST_CASE("Data rules: lengths within positions and well-formed language pairs", "[config]") {
  REQUIRE_THROWS_WITH(from("max_source_len: 1024\n"), "config.yaml: max_source_len 1024 exceeds max_source_positions 512");
  REQUIRE_THROWS_WITH(from("max_target_len: 600\n"), Contains("max_target_len 600 exceeds max_target_positions 512"));
  Config c = from("max_source_len: 100\n");
  CHECK(c.effective_max_source_len() == 100);
  CHECK(c.effective_max_target_len() == 512);
  REQUIRE_THROWS_WITH(from("langs: en,de\nlang_pairs: en-fr\n"),
                      "config.yaml: lang_pairs: 'en-fr' is not SRC-TGT with both languages in langs en,de");
  REQUIRE_THROWS_WITH(from("lang_pairs: ende\n"), Contains("lang_pairs: 'ende' is not SRC-TGT"));
  REQUIRE_THROWS_WITH(from("lang_pairs: en-en\n"), Contains("'en-en' translates a language into itself"));
  REQUIRE_THROWS_WITH(from("lang_pairs: en-de,de-en,en-de\n"), Contains("lang_pairs lists 'en-de' twice"));
  REQUIRE_THROWS_WITH(from("langs: en,de,en\n"), Contains("langs lists 'en' twice"));
}

TEST_CASE("Language pairs split on the dash that leaves two known languages", "[config]") {
  DataOptions d;
  d.langs = {"en", "pt-BR", "zh-CN"};
  d.lang_pairs = {"en-pt-BR", "pt-BR-en", "zh-CN-pt-BR"};
  auto pairs = parse_lang_pairs(d);
  REQUIRE(pairs.size() == 3);
  CHECK(pairs[0] == std::make_pair(std::string("en"), std::string("pt-BR")));
  CHECK(pairs[1] == std::make_pair(std::string("pt-BR"), std::string("en")));
  CHECK(pairs[2] == std::make_pair(std::string("zh-CN"), std::string("pt-BR")));
  d.langs.clear();
  REQUIRE_THROWS_WITH(parse_lang_pairs(d), Contains("'en-pt-BR' is not SRC-TGT"));
  d.lang_pairs = {"eng-nso"};
  CHECK(parse_lang_pairs(d) == std::vector<std::pair<std::string, std::string>>{{"eng", "nso"}});
}

TEST_CASE("Training rules: precision on CPU, BLEU-based best checkpoints, independent save intervals", "[config]") {
  REQUIRE_THROWS_WITH(from("device: cpu\nprecision: bf16\n"),
                      "config.yaml: precision 'bf16' needs device cuda (the CPU trains in fp32)");
  REQUIRE_NOTHROW(from("device: cuda\nprecision: fp16\n"));
  REQUIRE_NOTHROW(from("device: auto\nprecision: bf16\n"));
  REQUIRE_THROWS_WITH(from("best_checkpoint_metric: bleu\nvalid_bleu_sentences: 0\n"),
                      Contains("best_checkpoint_metric 'bleu' needs valid_bleu_sentences != 0"));
  Config bleu = from("best_checkpoint_metric: bleu\n");
  CHECK(bleu.train.maximize_best_metric());
  CHECK_FALSE(from("best_checkpoint_metric: nll\n").train.maximize_best_metric());
  // saving and validating are independent (frequent preemption-safe saves)
  REQUIRE_NOTHROW(from("save_interval_updates: 300\nvalidate_interval_updates: 200\n"));
}

TEST_CASE("Decoding rules: nbest within the beam, greedy gives one hypothesis", "[config]") {
  REQUIRE_THROWS_WITH(from("nbest: 6\n"), "config.yaml: nbest 6 exceeds beam 5");
  REQUIRE_THROWS_WITH(from("greedy: true\nnbest: 2\n"), Contains("greedy search yields one hypothesis, but nbest is 2"));
  Config g = from("greedy: true\nbeam: 1\n");
  CHECK(g.decode.greedy);
}

TEST_CASE("validate_config checks per-key ranges of a Config built in code", "[config]") {
  Config c;
  c.model.dropout = 1.5;
  REQUIRE_THROWS_WITH(validate_config(c), "config: key 'dropout' expects a number in [0, 1), got '1.5'");
  c = Config{};
  c.moe.experts = 8;
  c.moe.strata = {8, 0};
  REQUIRE_THROWS_WITH(validate_config(c), Contains("key 'strata' expects a list of integers > 0, got '[8, 0]'"));
  c = Config{};
  c.moe.experts = 8;
  REQUIRE_NOTHROW(validate_config(c));  // strata [] is a valid single stratum
  normalize_config(c);
  CHECK(c.moe.strata == std::vector<int>{8});
}

TEST_CASE("to_yaml followed by load gives the same config", "[config]") {
  Config c;
  SECTION("defaults") {}
  SECTION("every section changed, with awkward strings") {
    c.model.encoder_layers = 3;
    c.model.dropout = 0.1 + 0.2;  // not exactly 0.3
    c.model.layernorm_eps = 1.0 / 3.0 * 1e-5;
    c.moe.moe_type = MoEType::Eom;
    c.moe.experts = 16;
    c.moe.strata = {4, 4, 8};
    c.moe.eval_capacity_token_fraction = -1;
    c.moe.second_expert_policy = SecondExpertPolicy::Random;
    c.moe.smoe_residual = SmoeResidual::Paper;
    c.moe.hmoe_layernorm = false;
    c.data.data_dir = "/data/with space/and: colon # hash";
    c.data.spm_model = "";
    c.data.langs = {"en", "yes", "no", "null", "1"};
    c.data.lang_pairs = {"en-yes", "no-en"};
    c.data.valid_subset = "true";
    c.train.seed = 9007199254740993LL;
    c.train.lr = 1e-300;
    c.train.save_dir = "'quoted' \"both\"";
    c.train.precision = Precision::Bf16;
    c.train.device = DeviceChoice::Cuda;
    c.decode.source_lang = "-";
    c.decode.target_lang = "[x]";
    c.decode.max_len_a = 123456.789e10;
  }
  REQUIRE_NOTHROW(validate_config(c));
  std::string y = to_yaml(c);
  Config back = load_config_string(y, "dump.yaml");
  CAPTURE(y);
  CHECK(config_diff(c, back).empty());
  CHECK(to_yaml(back) == y);
  CHECK(back.model.dropout == c.model.dropout);  // bit-exact doubles
  CHECK(back.model.layernorm_eps == c.model.layernorm_eps);
  CHECK(back.train.seed == c.train.seed);
  CHECK(back.data.data_dir == c.data.data_dir);
  CHECK(back.train.save_dir == c.train.save_dir);
  CHECK(back.data.langs == c.data.langs);
}

TEST_CASE("Doubles print in the shortest form that reads back exactly", "[config]") {
  double v = GENERATE(0.1, 0.3, 1e-7, 8e-4, 1.0 / 3.0, 2.0, 0.0, -0.25, 6.02214076e23, 4.9e-324, 1.7976931348623157e308);
  std::string s = format_value(v);
  double back = -1;
  REQUIRE(parse_value(RawValue::of(s), back));
  CHECK(back == v);
  CHECK(format_value(0.1) == "0.1");
  CHECK(format_value(8e-4) == "0.0008");
  CHECK(format_value(1e-7) == "1e-07");
  CHECK(format_value(2.0) == "2");
}

TEST_CASE("Value parsers accept whole values only", "[config]") {
  int i = 7;
  CHECK_FALSE(parse_value(RawValue::of("12abc"), i));
  CHECK_FALSE(parse_value(RawValue::of(""), i));
  CHECK_FALSE(parse_value(RawValue::of("0x10"), i));
  CHECK_FALSE(parse_value(RawValue::of("1e3"), i));
  CHECK_FALSE(parse_value(RawValue::null(), i));
  CHECK_FALSE(parse_value(RawValue::list({"1"}), i));
  CHECK(i == 7);
  CHECK(parse_value(RawValue::of(" 42 "), i));
  CHECK(i == 42);
  CHECK(parse_value(RawValue::of("-3"), i));
  CHECK(i == -3);
  double d = 0;
  for (const char* bad : {"nan", "inf", "-inf", "1e400", "0x1p3", "1.5.2", "", "1,5"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_value(RawValue::of(bad), d));
  }
  CHECK(parse_value(RawValue::of("1e-3"), d));
  CHECK(d == 1e-3);
  bool b = false;
  CHECK_FALSE(parse_value(RawValue::of("2"), b));
  CHECK_FALSE(parse_value(RawValue::of("t"), b));
  std::vector<int> l{9};
  CHECK_FALSE(parse_value(RawValue::of("4,"), l));
  CHECK_FALSE(parse_value(RawValue::of("4;4"), l));
  CHECK(l == std::vector<int>{9});
  CHECK(parse_value(RawValue::null(), l));
  CHECK(l.empty());
  std::string s = "x";
  CHECK(parse_value(RawValue::null(), s));
  CHECK(s.empty());
}

TEST_CASE("to_yaml writes every option under its section", "[config]") {
  Config c;
  c.moe.experts = 8;
  c.moe.strata = {4, 4};
  std::string y = to_yaml(c);
  CHECK_THAT(y, Contains("model:\n  encoder_layers: 6\n"));
  CHECK_THAT(y, Contains("  strata: [4, 4]\n"));
  CHECK_THAT(y, Contains("  langs: []\n"));
  CHECK_THAT(y, Contains("  data_dir: \"\"\n"));
  CHECK_THAT(y, Contains("  moe_type: base\n"));
  CHECK_THAT(y, Contains("  lr: 0.0008\n"));
  Config copy = c;
  OptionRegistry r = registry_for(copy);
  for (const auto& o : r.options()) CHECK_THAT(y, Contains("  " + o->key() + ":"));
  for (const auto& s : r.sections()) CHECK_THAT(y, Contains("\n" + s.first + ":\n"));
  CHECK_THAT(y, !Contains("include"));
}

TEST_CASE("print_config marks the values that differ from the defaults", "[config]") {
  Config c = from("encoder_layers: 3\nexperts: 8\nstrata: 2,2,4\nsave_dir: out\n");
  std::ostringstream os;
  print_config(os, c);
  std::string s = os.str();
  CHECK_THAT(s, Contains("encoder_layers: 3  # default: 6"));
  CHECK_THAT(s, Contains("strata: [2, 2, 4]  # default: []"));
  CHECK_THAT(s, Contains("save_dir: out  # default: checkpoints"));
  CHECK_THAT(s, Contains("decoder_layers: 6\n"));  // unchanged: no comment
  CHECK(config_diff(load_config_string(s, "printed.yaml"), c).empty());  // still loadable YAML
}

TEST_CASE("--help lists every option with its default, type and help", "[config]") {
  std::ostringstream os;
  print_help(os);
  std::string h = os.str();
  Config c;
  OptionRegistry r = registry_for(c);
  for (const auto& o : r.options()) {
    CAPTURE(o->key());
    CHECK_THAT(h, Contains("  " + o->key() + " = "));
    CHECK_THAT(h, Contains(o->help()));
  }
  CHECK_THAT(h, Contains("  encoder_layers = 6   [an integer > 0]"));
  CHECK_THAT(h, Contains("  dropout = 0.3   [a number in [0, 1)]"));
  CHECK_THAT(h, Contains("  moe_type = base   [one of base, eom, cmr]"));
  CHECK_THAT(h, Contains("(also: moe_expert_count)"));
  CHECK_THAT(h, Contains("  strata = []"));
}

TEST_CASE("config_diff lists each changed option once", "[config]") {
  Config a, b;
  CHECK(config_diff(a, b).empty());
  b.model.encoder_layers = 3;
  b.data.langs = {"en", "de"};
  b.train.precision = Precision::Fp16;
  auto d = config_diff(a, b);
  REQUIRE(d.size() == 3);
  CHECK(d[0] == "encoder_layers: 6 -> 3");
  CHECK(d[1] == "langs: [] -> [en, de]");
  CHECK(d[2] == "precision: fp32 -> fp16");
  b = a;
  b.data.langs = {"a,b"};
  a.data.langs = {"a", "b"};
  CHECK(config_diff(a, b).size() == 1);  // list items are compared, not their joined text
}

TEST_CASE("Resuming rejects architecture changes and accepts the rest", "[config]") {
  Config saved = from("experts: 8\nstrata: 4,4\n");
  Config wanted = saved;
  wanted.train.lr = 1e-4;
  wanted.model.dropout = 0.1;
  wanted.decode.beam = 4;
  wanted.moe.eval_capacity_token_fraction = 1.0;
  REQUIRE_NOTHROW(check_resume_compatible(saved, wanted, "ckpt/checkpoint_last"));
  wanted.model.encoder_layers = 3;
  wanted.moe.strata = {2, 6};
  REQUIRE_THROWS_WITH(check_resume_compatible(saved, wanted, "ckpt/checkpoint_last"),
                      "cannot resume from ckpt/checkpoint_last: encoder_layers is 6 in the checkpoint, 3 in the "
                      "config; strata is [4, 4] in the checkpoint, [2, 6] in the config");
}

TEST_CASE("include loads its base first, relative to the including file", "[config]") {
  TempDir t;
  fs::create_directories(t.path / "sub");
  t.write("base.yaml", "encoder_layers: 2\ndropout: 0.2\nbeam: 3\n");
  t.write("sub/mid.yaml", "include: ../base.yaml\ndropout: 0.15\n");
  std::string top = t.write("top.yaml", "beam: 4\ninclude: sub/mid.yaml\n");
  Config c = load_config(top, {"encoder_layers=5"});
  CHECK(c.model.encoder_layers == 5);  // --set beats every file
  CHECK(c.model.dropout == 0.15);      // the includer beats its base
  CHECK(c.decode.beam == 4);           // keys override the include wherever it is written
  t.write("a.yaml", "include: b.yaml\n");
  std::string b = t.write("b.yaml", "include: a.yaml\n");
  REQUIRE_THROWS_WITH(load_config(b), Contains("include cycle"));
  std::string bad = t.write("bad.yaml", "include: base.yaml\n");
  t.write("base.yaml", "dropuot: 0.2\n");
  REQUIRE_THROWS_WITH(load_config(bad), (t.path / "base.yaml").string() +
                                            ":1: unknown key 'dropuot' (did you mean 'dropout'?)");
}

TEST_CASE("Every committed config under jobs/configs loads and round-trips", "[config]") {
  fs::path dir = configs_dir();
  REQUIRE_FALSE(dir.empty());
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".yaml") files.push_back(e.path());
  REQUIRE(files.size() >= 4);
  for (const auto& f : files) {
    CAPTURE(f.string());
    Config c;
    REQUIRE_NOTHROW(c = load_config(f.string()));
    CHECK(config_diff(load_config_string(to_yaml(c), "dump.yaml"), c).empty());
  }
}

TEST_CASE("The committed configs hold the intended models", "[config]") {
  fs::path dir = configs_dir();
  REQUIRE_FALSE(dir.empty());
  Config tiny = load_config((dir / "tiny.yaml").string());
  CHECK(tiny.model.encoder_layers == 2);
  CHECK(tiny.model.decoder_layers == 2);
  CHECK(tiny.model.embed_dim == 64);
  CHECK(tiny.model.ffn_dim == 128);
  CHECK(tiny.model.attention_heads == 4);
  CHECK(tiny.model.vocab_size == 0);
  CHECK_FALSE(tiny.moe.enabled());
  Config ts = load_config((dir / "tiny_smoe.yaml").string());
  CHECK(ts.model.embed_dim == 64);
  CHECK(ts.moe.strata == std::vector<int>{2, 2});
  Config demo = load_config((dir / "demo.yaml").string());
  CHECK(demo.model.encoder_layers == 3);
  CHECK(demo.model.embed_dim == 256);
  CHECK(demo.model.ffn_dim == 1024);
  CHECK(demo.data.langs.size() == 5);
  CHECK(parse_lang_pairs(demo.data).size() == 8);
  CHECK(demo.train.device == DeviceChoice::Cpu);
  Config m4 = load_config((dir / "m4_dense.yaml").string());
  CHECK(config_diff(Config{}, m4).size() < 20);  // the defaults are the M4 settings
  CHECK(m4.data.format == DataFormat::Fairseq);
  CHECK(parse_lang_pairs(m4.data).size() == 8);
  Config m4s = load_config((dir / "m4_smoe.yaml").string());
  CHECK(m4s.moe.experts == 8);
  CHECK(m4s.moe.strata == std::vector<int>{2, 2, 2, 2});
  Config m15 = load_config((dir / "m15_dense.yaml").string());
  CHECK(m15.model.embed_dim == 1024);
  CHECK(m15.model.attention_heads == 16);
  CHECK(parse_lang_pairs(m15.data).size() == 30);
  Config m15s = load_config((dir / "m15_smoe.yaml").string());
  CHECK(m15s.moe.strata == std::vector<int>{4, 12});
  CHECK(m15s.model.ffn_dim == 4096);
  // Switching the M4 model to the reference's other MoE variants by --set works.
  CHECK_NOTHROW(load_config((dir / "m4_dense.yaml").string(), {"experts=8", "moe_type=cmr"}));
  CHECK_NOTHROW(load_config((dir / "m4_dense.yaml").string(), {"experts=8", "strata=4,4", "moe_type=eom"}));
}

TEST_CASE("docs/config.md documents every option", "[config]") {
  fs::path dir = configs_dir();
  REQUIRE_FALSE(dir.empty());
  std::ifstream in(dir.parent_path().parent_path() / "docs" / "config.md");
  REQUIRE(in);
  std::stringstream doc;
  doc << in.rdbuf();
  Config c;
  OptionRegistry r = registry_for(c);
  for (const auto& o : r.options()) {
    CAPTURE(o->key());
    CHECK_THAT(doc.str(), Contains("  " + o->key() + " = "));
    CHECK_THAT(doc.str(), Contains(o->help()));
  }
}

TEST_CASE("The shared command line collects the config, --set and --help", "[config]") {
  const char* argv[] = {"strata-train", "c.yaml", "--set", "beam=4", "--set=dropout=0.1", "extra", "-h"};
  CommandLine cl = parse_command_line(7, argv);
  CHECK(cl.config_path == "c.yaml");
  CHECK(cl.overrides == std::vector<std::string>{"beam=4", "dropout=0.1"});
  CHECK(cl.positionals == std::vector<std::string>{"extra"});
  CHECK(cl.help);
  const char* bad[] = {"p", "--sett", "x"};
  REQUIRE_THROWS_WITH(parse_command_line(3, bad), Contains("unknown argument '--sett'"));
  const char* dangling[] = {"p", "c.yaml", "--set"};
  REQUIRE_THROWS_WITH(parse_command_line(3, dangling), "--set needs key=value");
  const char* none[] = {"p"};
  CommandLine empty = parse_command_line(1, none);
  CHECK(empty.config_path.empty());
  CHECK_FALSE(empty.help);
}

TEST_CASE("Enum values print under their canonical names", "[config]") {
  CHECK(std::string(to_string(MoEType::Cmr)) == "cmr");
  CHECK(std::string(to_string(SecondExpertPolicy::Sampling)) == "sampling");
  CHECK(std::string(to_string(SmoeResidual::Paper)) == "paper");
  CHECK(std::string(to_string(DataFormat::Fairseq)) == "fairseq");
  CHECK(std::string(to_string(LangtokMode::None)) == "none");
  CHECK(std::string(to_string(SmoothingForm::Moe)) == "moe");
  CHECK(std::string(to_string(BestMetric::Chrf)) == "chrf");
  CHECK(std::string(to_string(Precision::Bf16)) == "bf16");
  CHECK(std::string(to_string(DeviceChoice::Auto)) == "auto");
}
