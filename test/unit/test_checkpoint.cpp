// Checkpoint directories: commit protocol, DONE validation, recovery after a
// crash at every stage of a commit (a forked child kills itself with SIGKILL
// there), crashes at random moments, copies by hard link and pruning.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "strata/train/checkpoint.h"
#include "test_util.h"

using namespace strata;
using namespace strata::train;
namespace fs = std::filesystem;

namespace {

using test::TempDir;  // shared helper (test_util.h)

std::set<std::string> entries(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A checkpoint shaped like the trainer's, every value derived from `update`
// so a reader can tell whether the files belong together. Tensors stay below
// the OpenMP threshold: the writer also runs in forked children.
void write_checkpoint(const std::string& save_dir, const std::string& name, int64_t update,
                      CheckpointWriterOptions opt = {}) {
  CheckpointWriter w(save_dir, name, std::move(opt));
  w.write_safetensors("model.safetensors", {{"enc.w", Tensor::full({64, 33}, double(update))},
                                            {"enc.b", Tensor::full({17}, double(update), DType::F64)}});
  w.write_safetensors("optimizer.safetensors", {{"enc.w.exp_avg", Tensor::full({64, 33}, 2.0 * double(update))},
                                                {"enc.w.step", Tensor::scalar(double(update), DType::I64)}});
  w.write_text("trainer_state.yaml", "update: " + std::to_string(update) + "\n");
  w.commit();
}

// Loads a checkpoint directory, REQUIREs its files to agree, returns its update.
int64_t read_checkpoint(const std::string& dir) {
  REQUIRE(is_complete_checkpoint(dir));
  std::string state = slurp((fs::path(dir) / "trainer_state.yaml").string());
  REQUIRE(state.rfind("update: ", 0) == 0);
  int64_t u = std::stoll(state.substr(8));
  SafetensorsFile model = load_safetensors((fs::path(dir) / "model.safetensors").string());
  SafetensorsFile opt = load_safetensors((fs::path(dir) / "optimizer.safetensors").string());
  REQUIRE(model.at("enc.w").to_vector<float>() == std::vector<float>(64 * 33, float(u)));
  REQUIRE(model.at("enc.b").to_vector<double>() == std::vector<double>(17, double(u)));
  REQUIRE(opt.at("enc.w.exp_avg").to_vector<float>() == std::vector<float>(64 * 33, float(2 * u)));
  REQUIRE(opt.at("enc.w.step").item() == double(u));
  return u;
}

// Runs `body` in a forked child; returns the wait status. The child never
// returns into Catch2.
template <class Fn>
int run_in_child(Fn&& body) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    try {
      code = body();
    } catch (...) {
      code = 99;
    }
    _exit(code);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return status;
}

bool killed_by_sigkill(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

// Whether this filesystem swaps directories with RENAME_EXCHANGE (else the writer falls back).
bool exchange_supported(const std::string& scratch) {
  std::vector<std::string> stages;
  CheckpointWriterOptions o;
  o.on_stage = [&](const std::string& s) { stages.push_back(s); };
  write_checkpoint(scratch, "probe", 1);
  write_checkpoint(scratch, "probe", 2, o);
  remove_checkpoint(scratch, "probe");
  return std::find(stages.begin(), stages.end(), "old_moved_aside") == stages.end();
}

}  // namespace

TEST_CASE("a committed checkpoint is a complete directory found as resumable", "[checkpoint]") {
  TempDir d;
  std::string save = d.sub("run/ckpts");  // created on demand
  CHECK_FALSE(find_resumable(save).has_value());
  std::vector<std::string> stages;
  CheckpointWriterOptions opt;
  opt.on_stage = [&](const std::string& s) { stages.push_back(s); };
  write_checkpoint(save, kCheckpointLast, 5, opt);
  CHECK(stages == std::vector<std::string>{"files_synced", "done_written", "renamed", "committed"});
  CHECK(entries(save) == std::set<std::string>{"checkpoint_last"});
  std::string last = save + "/checkpoint_last";
  CHECK(entries(last) ==
        std::set<std::string>{"DONE", "model.safetensors", "optimizer.safetensors", "trainer_state.yaml"});
  REQUIRE(find_resumable(save).has_value());
  CHECK(*find_resumable(save) == last);
  CHECK(read_checkpoint(last) == 5);
  // DONE lists every file with its size, sorted, and closes with "end"
  std::string done = slurp(last + "/DONE");
  std::string expect = "strata-checkpoint 1\n" + std::to_string(fs::file_size(last + "/model.safetensors")) +
                       " model.safetensors\n" + std::to_string(fs::file_size(last + "/optimizer.safetensors")) +
                       " optimizer.safetensors\n" + std::to_string(fs::file_size(last + "/trainer_state.yaml")) +
                       " trainer_state.yaml\nend\n";
  CHECK(done == expect);
}

TEST_CASE("committing again replaces the checkpoint and leaves nothing behind", "[checkpoint]") {
  TempDir d;
  bool exchange = GENERATE(true, false);
  CheckpointWriterOptions opt;
  opt.use_exchange = exchange;
  std::vector<std::string> stages;
  write_checkpoint(d.path, kCheckpointLast, 1, opt);
  opt.on_stage = [&](const std::string& s) { stages.push_back(s); };
  write_checkpoint(d.path, kCheckpointLast, 2, opt);
  CHECK(read_checkpoint(d.sub("checkpoint_last")) == 2);
  CHECK(entries(d.path) == std::set<std::string>{"checkpoint_last"});
  if (!exchange)
    CHECK(stages == std::vector<std::string>{"files_synced", "done_written", "old_moved_aside", "renamed", "committed"});
  write_checkpoint(d.path, kCheckpointLast, 3, opt);
  CHECK(read_checkpoint(d.sub("checkpoint_last")) == 3);
  CHECK(entries(d.path) == std::set<std::string>{"checkpoint_last"});
}

TEST_CASE("a writer that throws half way leaves the previous checkpoint in place", "[checkpoint]") {
  TempDir d;
  write_checkpoint(d.path, kCheckpointLast, 7);
  std::string tmp;
  try {
    CheckpointWriter w(d.path, kCheckpointLast);
    tmp = w.tmp_dir();
    w.write_safetensors("model.safetensors", {{"enc.w", Tensor::full({64, 33}, 8.0)}});
    CHECK(fs::exists(tmp));
    throw std::runtime_error("serialising the optimizer failed");
  } catch (const std::runtime_error&) {
  }
  CHECK_FALSE(fs::exists(tmp));
  CHECK(entries(d.path) == std::set<std::string>{"checkpoint_last"});
  REQUIRE(find_resumable(d.path).has_value());
  CHECK(read_checkpoint(*find_resumable(d.path)) == 7);
  // and when there was no checkpoint before, there still is none
  TempDir e;
  {
    CheckpointWriter w(e.path, kCheckpointLast);
    w.write_text("trainer_state.yaml", "update: 1\n");
  }
  CHECK_FALSE(find_resumable(e.path).has_value());
  CHECK(entries(e.path).empty());
}

TEST_CASE("a checkpoint is complete only when DONE matches its files", "[checkpoint]") {
  TempDir d;
  write_checkpoint(d.path, "c", 3);
  std::string c = d.sub("c");
  REQUIRE(is_complete_checkpoint(c));
  CHECK_FALSE(is_complete_checkpoint(d.sub("missing")));
  std::string done = slurp(c + "/DONE");
  SECTION("DONE missing") {
    fs::remove(c + "/DONE");
    CHECK_FALSE(is_complete_checkpoint(c));
  }
  SECTION("DONE cut short") {
    std::ofstream(c + "/DONE", std::ios::trunc) << done.substr(0, done.size() - 4);
    CHECK_FALSE(is_complete_checkpoint(c));
  }
  SECTION("DONE with another header") {
    std::ofstream(c + "/DONE", std::ios::trunc) << "x" << done;
    CHECK_FALSE(is_complete_checkpoint(c));
  }
  SECTION("a listed file missing") {
    fs::remove(c + "/optimizer.safetensors");
    CHECK_FALSE(is_complete_checkpoint(c));
  }
  SECTION("a listed file of another size") {
    std::ofstream(c + "/trainer_state.yaml", std::ios::app) << "extra: 1\n";
    CHECK_FALSE(is_complete_checkpoint(c));
  }
  SECTION("an unlisted extra file does not matter") {
    std::ofstream(c + "/notes.txt") << "hi";
    CHECK(is_complete_checkpoint(c));
  }
}

TEST_CASE("checkpoint writers refuse bad names and misuse", "[checkpoint]") {
  TempDir d;
  REQUIRE_THROWS_WITH(CheckpointWriter(d.path, "a/b"), Catch::Contains("not a plain"));
  REQUIRE_THROWS_WITH(CheckpointWriter(d.path, ".hidden"), Catch::Contains("not a plain"));
  REQUIRE_THROWS_WITH(CheckpointWriter(d.path, ""), Catch::Contains("not a plain"));
  CheckpointWriter w(d.path, "c");
  REQUIRE_THROWS_WITH(w.path("DONE"), Catch::Contains("written by commit"));
  REQUIRE_THROWS_WITH(w.path("../escape"), Catch::Contains("not a plain"));
  fs::create_directory(w.tmp_dir() + "/subdir");
  REQUIRE_THROWS_WITH(w.commit(), Catch::Contains("plain files only"));
  fs::remove(w.tmp_dir() + "/subdir");
  w.write_text("a.txt", "x");
  w.commit();
  REQUIRE_THROWS_WITH(w.commit(), Catch::Contains("already committed"));
  REQUIRE_THROWS_WITH(w.path("b.txt"), Catch::Contains("already committed"));
  REQUIRE_THROWS_WITH(periodic_checkpoint_name(-1), Catch::Contains("negative"));
  CHECK(periodic_checkpoint_name(1500) == "checkpoint_1500");
}

TEST_CASE("recovery restores a half-committed checkpoint and deletes leftovers", "[checkpoint]") {
  TempDir d;
  auto complete_leftover = [&](const std::string& dirname, int64_t update) {
    write_checkpoint(d.path, "staging", update);
    fs::rename(d.sub("staging"), d.sub(dirname));
  };
  CHECK(recover_save_dir(d.sub("does-not-exist")).removed.empty());
  SECTION("an incomplete temporary directory is deleted") {
    write_checkpoint(d.path, kCheckpointLast, 1);
    fs::create_directory(d.sub(".tmp-checkpoint_last-999.0"));
    std::ofstream(d.sub(".tmp-checkpoint_last-999.0/model.safetensors")) << "half";
    RecoveryReport r = recover_save_dir(d.path);
    CHECK(r.restored.empty());
    CHECK(r.removed == std::vector<std::string>{".tmp-checkpoint_last-999.0"});
    CHECK(entries(d.path) == std::set<std::string>{"checkpoint_last"});
    CHECK(read_checkpoint(d.sub("checkpoint_last")) == 1);
  }
  SECTION("with <name> present, even complete leftovers are deleted") {
    write_checkpoint(d.path, kCheckpointLast, 1);
    complete_leftover(".tmp-checkpoint_last-12.3", 2);
    complete_leftover(".trash-checkpoint_last-12.4", 0);
    complete_leftover(".del-checkpoint_9-12.5", 9);
    RecoveryReport r = recover_save_dir(d.path);
    CHECK(r.restored.empty());
    CHECK(r.removed.size() == 3);
    CHECK(entries(d.path) == std::set<std::string>{"checkpoint_last"});
    CHECK(read_checkpoint(d.sub("checkpoint_last")) == 1);
  }
  SECTION("<name> missing: the complete new one wins over the old one") {
    complete_leftover(".trash-checkpoint_last-12.4", 1);
    complete_leftover(".tmp-checkpoint_last-12.3", 2);
    RecoveryReport r = recover_save_dir(d.path);
    CHECK(r.restored == std::vector<std::string>{"checkpoint_last"});
    CHECK(entries(d.path) == std::set<std::string>{"checkpoint_last"});
    CHECK(read_checkpoint(d.sub("checkpoint_last")) == 2);
  }
  SECTION("<name> missing and the new one incomplete: the old one comes back") {
    complete_leftover(".trash-checkpoint_best-12.4", 1);
    complete_leftover(".tmp-checkpoint_best-12.3", 2);
    fs::remove(d.sub(".tmp-checkpoint_best-12.3/DONE"));
    RecoveryReport r = recover_save_dir(d.path);
    CHECK(r.restored == std::vector<std::string>{"checkpoint_best"});
    CHECK(entries(d.path) == std::set<std::string>{"checkpoint_best"});
    CHECK(read_checkpoint(d.sub("checkpoint_best")) == 1);
  }
  SECTION("a deliberately deleted checkpoint is never resurrected") {
    complete_leftover(".del-checkpoint_100-12.5", 100);
    RecoveryReport r = recover_save_dir(d.path);
    CHECK(r.restored.empty());
    CHECK(entries(d.path).empty());
  }
  SECTION("unrelated entries are left alone") {
    std::ofstream(d.sub("metrics.jsonl")) << "{}\n";
    fs::create_directory(d.sub("tensorboard"));
    recover_save_dir(d.path);
    CHECK(entries(d.path) == std::set<std::string>{"metrics.jsonl", "tensorboard"});
  }
}

TEST_CASE("a crash at any stage of a commit leaves a loadable checkpoint_last", "[checkpoint]") {
  TempDir scratch;
  const bool exchange_ok = exchange_supported(scratch.path);
  struct Case {
    bool exchange;
    const char* stage;
    int64_t expect;  // update found after recovery (1 = old, 2 = new)
  };
  std::vector<Case> cases = {{false, "files_synced", 1}, {false, "done_written", 1}, {false, "old_moved_aside", 2},
                             {false, "renamed", 2},      {false, "committed", 2}};
  if (exchange_ok) {
    for (const char* s : {"files_synced", "done_written"}) cases.push_back({true, s, 1});
    for (const char* s : {"renamed", "committed"}) cases.push_back({true, s, 2});
  } else {
    WARN("this filesystem has no RENAME_EXCHANGE; only the fallback path is tested");
  }
  for (const Case& c : cases) {
    INFO("exchange " << c.exchange << ", killed after stage " << c.stage);
    TempDir d;
    write_checkpoint(d.path, kCheckpointLast, 1);
    int status = run_in_child([&] {
      CheckpointWriterOptions opt;
      opt.use_exchange = c.exchange;
      const std::string target = c.stage;
      opt.on_stage = [target](const std::string& s) {
        if (s == target) raise(SIGKILL);
      };
      write_checkpoint(d.path, kCheckpointLast, 2, opt);
      return 3;  // the stage was never reached
    });
    REQUIRE(killed_by_sigkill(status));
    // Before recovery checkpoint_last is either complete or (only between the
    // two fallback renames) absent, never a directory without DONE.
    if (fs::exists(d.sub("checkpoint_last"))) CHECK(is_complete_checkpoint(d.sub("checkpoint_last")));
    else CHECK(std::string(c.stage) == "old_moved_aside");
    recover_save_dir(d.path);
    CHECK(entries(d.path) == std::set<std::string>{"checkpoint_last"});
    auto found = find_resumable(d.path);
    REQUIRE(found.has_value());
    CHECK(read_checkpoint(*found) == c.expect);
  }
  // The very first commit: before DONE there is nothing to resume, after it the new one.
  for (const char* stage : {"files_synced", "done_written"}) {
    INFO("first commit, killed after stage " << stage);
    TempDir d;
    int status = run_in_child([&] {
      CheckpointWriterOptions opt;
      const std::string target = stage;
      opt.on_stage = [target](const std::string& s) {
        if (s == target) raise(SIGKILL);
      };
      write_checkpoint(d.path, kCheckpointLast, 1, opt);
      return 3;
    });
    REQUIRE(killed_by_sigkill(status));
    CHECK_FALSE(find_resumable(d.path).has_value());
    recover_save_dir(d.path);
    if (std::string(stage) == "files_synced") {
      CHECK(entries(d.path).empty());
    } else {
      REQUIRE(find_resumable(d.path).has_value());
      CHECK(read_checkpoint(*find_resumable(d.path)) == 1);
    }
  }
}

TEST_CASE("killing a writer at random moments never loses the last checkpoint", "[checkpoint]") {
  bool exchange = GENERATE(true, false);
  for (int delay_us : {300, 1500, 4000, 9000, 20000, 45000}) {
    INFO("exchange " << exchange << ", killed after " << delay_us << " us");
    TempDir d;
    write_checkpoint(d.path, kCheckpointLast, 1);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      try {
        CheckpointWriterOptions opt;
        opt.use_exchange = exchange;
        for (int64_t u = 2;; ++u) write_checkpoint(d.path, kCheckpointLast, u, opt);
      } catch (...) {
      }
      _exit(99);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    REQUIRE(kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(killed_by_sigkill(status));
    recover_save_dir(d.path);
    auto found = find_resumable(d.path);
    REQUIRE(found.has_value());
    int64_t u = read_checkpoint(*found);
    CHECK(u >= 1);
    CHECK(entries(d.path) == std::set<std::string>{"checkpoint_last"});
  }
}

TEST_CASE("best and periodic copies share files by hard link and survive replacement", "[checkpoint]") {
  TempDir d;
  write_checkpoint(d.path, kCheckpointLast, 500);
  std::string p = copy_checkpoint(d.path, kCheckpointLast, periodic_checkpoint_name(500));
  CHECK(p == d.sub("checkpoint_500"));
  copy_checkpoint(d.path, kCheckpointLast, kCheckpointBest);
  CHECK(read_checkpoint(d.sub("checkpoint_500")) == 500);
  CHECK(read_checkpoint(d.sub("checkpoint_best")) == 500);
  struct stat a, b;
  REQUIRE(stat(d.sub("checkpoint_last/model.safetensors").c_str(), &a) == 0);
  REQUIRE(stat(d.sub("checkpoint_500/model.safetensors").c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);  // a link, not a copy
  // a new last checkpoint does not touch the copies
  write_checkpoint(d.path, kCheckpointLast, 1000);
  CHECK(read_checkpoint(d.sub("checkpoint_last")) == 1000);
  CHECK(read_checkpoint(d.sub("checkpoint_500")) == 500);
  CHECK(read_checkpoint(d.sub("checkpoint_best")) == 500);
  // replacing best by a copy of the newer last
  copy_checkpoint(d.path, kCheckpointLast, kCheckpointBest);
  CHECK(read_checkpoint(d.sub("checkpoint_best")) == 1000);
  CHECK(entries(d.path) == std::set<std::string>{"checkpoint_500", "checkpoint_best", "checkpoint_last"});
  REQUIRE_THROWS_WITH(copy_checkpoint(d.path, "nothing", "x"), Catch::Contains("not a complete checkpoint"));
  REQUIRE_THROWS_WITH(copy_checkpoint(d.path, kCheckpointLast, kCheckpointLast), Catch::Contains("both"));
}

TEST_CASE("pruning keeps the newest periodic checkpoints by update number", "[checkpoint]") {
  TempDir d;
  for (int64_t u : {300, 100, 1000, 200}) write_checkpoint(d.path, periodic_checkpoint_name(u), u);
  write_checkpoint(d.path, kCheckpointLast, 1000);
  write_checkpoint(d.path, kCheckpointBest, 200);
  fs::create_directory(d.sub("checkpoint_12a"));  // not a periodic name
  std::ofstream(d.sub("checkpoint_7")) << "a file, not a checkpoint";
  CHECK(list_periodic_checkpoints(d.path) == std::vector<int64_t>{100, 200, 300, 1000});
  CHECK(prune_periodic_checkpoints(d.path, 0).empty());
  std::vector<std::string> removed = prune_periodic_checkpoints(d.path, 2);
  CHECK(removed == std::vector<std::string>{"checkpoint_100", "checkpoint_200"});
  CHECK(list_periodic_checkpoints(d.path) == std::vector<int64_t>{300, 1000});
  CHECK(read_checkpoint(d.sub("checkpoint_best")) == 200);
  CHECK(entries(d.path) == std::set<std::string>{"checkpoint_1000", "checkpoint_300", "checkpoint_7",
                                                  "checkpoint_12a", "checkpoint_best", "checkpoint_last"});
  remove_checkpoint(d.path, "checkpoint_300");
  remove_checkpoint(d.path, "checkpoint_300");  // missing is fine
  CHECK(list_periodic_checkpoints(d.path) == std::vector<int64_t>{1000});
}
