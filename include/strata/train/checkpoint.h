// Crash-safe checkpoint directories (docs/checkpoints.md has the full story).
//
// A checkpoint is a directory of plain files. CheckpointWriter fills
// `save_dir/.tmp-<name>-<pid>/`, and commit() fsyncs every file, writes the
// `DONE` marker last (listing each file and its size), fsyncs the directory
// and only then moves it to `save_dir/<name>`, atomically replacing an older
// one. Readers trust a directory only when its DONE marker is present and
// matches the files, so whatever instant a process dies at, `<name>` is
// either the old complete checkpoint or the new complete one.
//
// One trainer process (rank 0 under MPI) owns a save_dir: it calls
// recover_save_dir() once at start, before anyone calls find_resumable().
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "strata/train/safetensors.h"

namespace strata::train {

inline constexpr const char* kCheckpointLast = "checkpoint_last";
inline constexpr const char* kCheckpointBest = "checkpoint_best";
inline constexpr const char* kDoneMarker = "DONE";

// "checkpoint_<update>", the name of a periodic copy.
std::string periodic_checkpoint_name(int64_t update);

struct CheckpointWriterOptions {
  // Replace an existing checkpoint with renameat2(RENAME_EXCHANGE), a single
  // atomic step. When false, or when the filesystem refuses (NFS, some
  // parallel filesystems), the writer renames the old directory to a trash
  // name first; recover_save_dir() repairs a crash between the two renames.
  bool use_exchange = true;
  // Called with the name of each commit stage ("files_synced", "done_written",
  // "old_moved_aside" (fallback only), "renamed", "committed") right after it
  // completes. Tests kill the process here to prove every window is safe.
  std::function<void(const std::string& stage)> on_stage;
};

class CheckpointWriter {
 public:
  // `name` is a plain directory name (no '/', not starting with '.').
  // Creates save_dir when missing and a fresh temporary directory inside it.
  CheckpointWriter(const std::string& save_dir, const std::string& name, CheckpointWriterOptions options = {});
  // Removes the temporary directory unless commit() succeeded.
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  const std::string& tmp_dir() const { return tmp_dir_; }
  // Where to write `file` (a plain file name) before commit().
  std::string path(const std::string& file) const;
  void write_text(const std::string& file, const std::string& text);
  // Tensors on a GPU are copied to the host first.
  void write_safetensors(const std::string& file, const NamedTensors& tensors, const Metadata& metadata = {});
  // Adds `src` under the name `file` as a hard link (a copy when linking is
  // impossible). Safe because committed checkpoint files are never modified.
  void link_file(const std::string& file, const std::string& src);

  // fsync files -> write DONE -> fsync directory -> move into place -> fsync
  // save_dir -> delete the replaced checkpoint. Returns save_dir/name.
  std::string commit();

 private:
  std::string save_dir_, name_, tmp_dir_, final_dir_;
  CheckpointWriterOptions options_;
  bool committed_ = false;
  void stage(const char* s) const;
};

// True when `dir` holds a DONE marker whose listed files all exist with the listed sizes.
bool is_complete_checkpoint(const std::string& dir);

// save_dir/checkpoint_last when it is a complete checkpoint, otherwise nothing.
std::optional<std::string> find_resumable(const std::string& save_dir);

struct RecoveryReport {
  std::vector<std::string> restored;  // checkpoint names put back from a half-finished commit
  std::vector<std::string> removed;   // leftover temporary/trash directories deleted
};
// Repairs what a crash mid-commit can leave: when `<name>` is missing but a
// complete `.tmp-<name>-*` (newer) or `.trash-<name>-*` (older) exists, that
// one becomes `<name>`; every other leftover is deleted. A missing save_dir is fine.
RecoveryReport recover_save_dir(const std::string& save_dir);

// Makes save_dir/<to> a complete checkpoint with the same files as
// save_dir/<from> (hard links), replacing <to> atomically. Returns its path.
std::string copy_checkpoint(const std::string& save_dir, const std::string& from, const std::string& to,
                            CheckpointWriterOptions options = {});

// Deletes save_dir/<name> crash-safely: renamed away first, so a partial
// delete never looks like a checkpoint. Missing is fine.
void remove_checkpoint(const std::string& save_dir, const std::string& name);

// Updates of the periodic copies "checkpoint_<update>" in save_dir, ascending.
std::vector<int64_t> list_periodic_checkpoints(const std::string& save_dir);
// Keeps the newest `keep` periodic copies (keep <= 0 keeps all); returns the deleted names.
std::vector<std::string> prune_periodic_checkpoints(const std::string& save_dir, int keep);

}  // namespace strata::train
