#include "strata/train/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace fs = std::filesystem;

namespace strata::train {

namespace {

constexpr const char* kDoneHeader = "strata-checkpoint 1";
constexpr const char* kTmpPrefix = ".tmp-";
constexpr const char* kTrashPrefix = ".trash-";
constexpr const char* kDelPrefix = ".del-";

std::string join(const std::string& dir, const std::string& file) { return (fs::path(dir) / file).string(); }

// "-<pid>.<n>": unique among this process's writers and across processes on one host.
std::string unique_suffix() {
  static std::atomic<uint64_t> counter{0};
  return "-" + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

void fsync_path(const std::string& path, bool is_dir, const char* op) {
  int fd = ::open(path.c_str(), is_dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  STRATA_CHECK(fd >= 0) << op << ": cannot open " << path << " to fsync (" << std::strerror(errno) << ")";
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some filesystems cannot fsync a directory (EINVAL); their renames are
  // then as durable as that filesystem makes them, nothing more can be done.
  STRATA_CHECK(rc == 0 || (is_dir && (err == EINVAL || err == EROFS)))
      << op << ": fsync of " << path << " failed (" << std::strerror(err) << ")";
}

void rename_or_throw(const std::string& from, const std::string& to, const char* op) {
  STRATA_CHECK(::rename(from.c_str(), to.c_str()) == 0)
      << op << ": cannot rename " << from << " to " << to << " (" << std::strerror(errno) << ")";
}

void check_plain_name(const std::string& name, const char* op) {
  STRATA_CHECK(!name.empty() && name.find('/') == std::string::npos && name.find('\n') == std::string::npos &&
               name[0] != '.')
      << op << ": '" << name << "' is not a plain file or directory name";
}

bool exists_nofollow(const std::string& p) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(p, ec));
}

void remove_quietly(const std::string& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}

// Splits ".tmp-<name>-<pid>.<n>" into its kind prefix and <name>; false for other entries.
bool parse_leftover(const std::string& entry, std::string& prefix, std::string& name) {
  for (const char* p : {kTmpPrefix, kTrashPrefix, kDelPrefix}) {
    size_t pl = std::strlen(p);
    if (entry.compare(0, pl, p) != 0) continue;
    size_t dash = entry.rfind('-');
    if (dash == std::string::npos || dash < pl) return false;
    prefix = p;
    name = entry.substr(pl, dash - pl);
    return true;
  }
  return false;
}

// Reads DONE: false when it is missing or malformed.
bool read_done(const std::string& dir, std::vector<std::pair<std::string, uint64_t>>& files) {
  std::ifstream in(join(dir, kDoneMarker));
  if (!in) return false;
  std::string line;
  if (!std::getline(in, line) || line != kDoneHeader) return false;
  bool ended = false;
  while (std::getline(in, line)) {
    if (line == "end") {
      ended = true;
      break;
    }
    size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size()) return false;
    std::string size_text = line.substr(0, sp);
    if (size_text.find_first_not_of("0123456789") != std::string::npos) return false;
    files.emplace_back(line.substr(sp + 1), std::stoull(size_text));
  }
  // The closing "end" line tells a complete marker from one cut short.
  return ended;
}

}  // namespace

std::string periodic_checkpoint_name(int64_t update) {
  STRATA_CHECK(update >= 0) << "periodic_checkpoint_name: negative update " << update;
  return "checkpoint_" + std::to_string(update);
}

// ---------------------------------------------------------------- writer

CheckpointWriter::CheckpointWriter(const std::string& save_dir, const std::string& name,
                                   CheckpointWriterOptions options)
    : save_dir_(save_dir), name_(name), options_(std::move(options)) {
  check_plain_name(name, "CheckpointWriter");
  std::error_code ec;
  bool created = fs::create_directories(save_dir, ec);
  STRATA_CHECK(!ec) << "CheckpointWriter: cannot create " << save_dir << " (" << ec.message() << ")";
  if (created) {
    fs::path parent = fs::absolute(fs::path(save_dir)).lexically_normal().parent_path();
    if (!parent.empty()) fsync_path(parent.string(), true, "CheckpointWriter");
  }
  final_dir_ = join(save_dir, name);
  tmp_dir_ = join(save_dir, kTmpPrefix + name + unique_suffix());
  remove_quietly(tmp_dir_);
  fs::create_directory(tmp_dir_, ec);
  STRATA_CHECK(!ec) << "CheckpointWriter: cannot create " << tmp_dir_ << " (" << ec.message() << ")";
}

CheckpointWriter::~CheckpointWriter() {
  if (!committed_) remove_quietly(tmp_dir_);
}

std::string CheckpointWriter::path(const std::string& file) const {
  check_plain_name(file, "CheckpointWriter::path");
  STRATA_CHECK(file != kDoneMarker) << "CheckpointWriter::path: '" << kDoneMarker << "' is written by commit()";
  STRATA_CHECK(!committed_) << "CheckpointWriter::path: checkpoint " << final_dir_ << " is already committed";
  return join(tmp_dir_, file);
}

void CheckpointWriter::write_text(const std::string& file, const std::string& text) {
  std::string p = path(file);
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  STRATA_CHECK(out.good()) << "CheckpointWriter::write_text: cannot write " << p;
}

void CheckpointWriter::write_safetensors(const std::string& file, const NamedTensors& tensors,
                                         const Metadata& metadata) {
  // Tensors on a GPU (a model trained there) are written from host copies.
  NamedTensors host;
  host.reserve(tensors.size());
  for (const auto& [name, t] : tensors) host.emplace_back(name, t.defined() ? t.to(Device::cpu()) : t);
  save_safetensors(path(file), host, metadata);
}

void CheckpointWriter::link_file(const std::string& file, const std::string& src) {
  std::string dst = path(file);
  if (::link(src.c_str(), dst.c_str()) == 0) return;
  int err = errno;
  STRATA_CHECK(err == EXDEV || err == EPERM || err == EMLINK || err == ENOTSUP || err == ENOSYS)
      << "CheckpointWriter::link_file: cannot link " << src << " to " << dst << " (" << std::strerror(err) << ")";
  std::error_code ec;
  fs::copy_file(src, dst, fs::copy_options::overwrite_existing, ec);
  STRATA_CHECK(!ec) << "CheckpointWriter::link_file: cannot copy " << src << " to " << dst << " (" << ec.message()
                    << ")";
}

void CheckpointWriter::stage(const char* s) const {
  if (options_.on_stage) options_.on_stage(s);
}

std::string CheckpointWriter::commit() {
  STRATA_CHECK(!committed_) << "CheckpointWriter::commit: " << final_dir_ << " is already committed";
  // 1. every file durable before the marker that vouches for it exists
  std::vector<std::pair<std::string, uint64_t>> files;
  for (const auto& e : fs::directory_iterator(tmp_dir_)) {
    std::string f = e.path().filename().string();
    STRATA_CHECK(e.is_regular_file() && !e.is_symlink())
        << "CheckpointWriter::commit: " << e.path().string() << " is not a plain file; checkpoints hold plain files only";
    STRATA_CHECK(f != kDoneMarker && f.find('\n') == std::string::npos)
        << "CheckpointWriter::commit: unexpected file " << e.path().string();
    fsync_path(e.path().string(), false, "CheckpointWriter::commit");
    files.emplace_back(f, uint64_t(e.file_size()));
  }
  std::sort(files.begin(), files.end());
  stage("files_synced");

  // 2. the marker, then the directory entry list
  {
    std::ostringstream done;
    done << kDoneHeader << "\n";
    for (const auto& [f, size] : files) done << size << " " << f << "\n";
    done << "end\n";
    std::string p = join(tmp_dir_, kDoneMarker);
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << done.str();
    out.close();
    STRATA_CHECK(out.good()) << "CheckpointWriter::commit: cannot write " << p;
    fsync_path(p, false, "CheckpointWriter::commit");
    fsync_path(tmp_dir_, true, "CheckpointWriter::commit");
  }
  stage("done_written");

  // 3. into place
  if (!exists_nofollow(final_dir_)) {
    rename_or_throw(tmp_dir_, final_dir_, "CheckpointWriter::commit");
    fsync_path(save_dir_, true, "CheckpointWriter::commit");
    committed_ = true;
    stage("renamed");
    stage("committed");
    return final_dir_;
  }
  if (options_.use_exchange) {
    if (::renameat2(AT_FDCWD, tmp_dir_.c_str(), AT_FDCWD, final_dir_.c_str(), RENAME_EXCHANGE) == 0) {
      // The old checkpoint now sits under the temporary name; recovery
      // deletes it if we die before we do.
      fsync_path(save_dir_, true, "CheckpointWriter::commit");
      committed_ = true;
      stage("renamed");
      remove_quietly(tmp_dir_);
      stage("committed");
      return final_dir_;
    }
    int err = errno;
    STRATA_CHECK(err == EINVAL || err == ENOSYS || err == ENOTSUP || err == EOPNOTSUPP)
        << "CheckpointWriter::commit: cannot swap " << tmp_dir_ << " with " << final_dir_ << " ("
        << std::strerror(err) << ")";
  }
  // Fallback: between these two renames `<name>` does not exist; both
  // directories are complete, and recover_save_dir() puts the new one in place.
  std::string trash = join(save_dir_, kTrashPrefix + name_ + unique_suffix());
  remove_quietly(trash);
  rename_or_throw(final_dir_, trash, "CheckpointWriter::commit");
  fsync_path(save_dir_, true, "CheckpointWriter::commit");
  stage("old_moved_aside");
  rename_or_throw(tmp_dir_, final_dir_, "CheckpointWriter::commit");
  fsync_path(save_dir_, true, "CheckpointWriter::commit");
  committed_ = true;
  stage("renamed");
  remove_quietly(trash);
  stage("committed");
  return final_dir_;
}

// ---------------------------------------------------------------- readers

bool is_complete_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  std::vector<std::pair<std::string, uint64_t>> files;
  if (!read_done(dir, files)) return false;
  for (const auto& [f, size] : files) {
    fs::path p = fs::path(dir) / f;
    if (!fs::is_regular_file(p, ec) || fs::file_size(p, ec) != size || ec) return false;
  }
  return true;
}

std::optional<std::string> find_resumable(const std::string& save_dir) {
  std::string last = join(save_dir, kCheckpointLast);
  if (is_complete_checkpoint(last)) return last;
  return std::nullopt;
}

RecoveryReport recover_save_dir(const std::string& save_dir) {
  RecoveryReport report;
  std::error_code ec;
  if (!fs::is_directory(save_dir, ec)) return report;
  std::vector<std::string> leftovers;
  // name -> complete candidates: tmp (newer than anything committed) before trash (the replaced one)
  std::map<std::string, std::vector<std::string>> tmp_done, trash_done;
  for (const auto& e : fs::directory_iterator(save_dir)) {
    std::string entry = e.path().filename().string(), prefix, name;
    if (!parse_leftover(entry, prefix, name)) continue;
    leftovers.push_back(entry);
    if (prefix == kDelPrefix || !is_complete_checkpoint(e.path().string())) continue;
    (prefix == kTmpPrefix ? tmp_done : trash_done)[name].push_back(e.path().string());
  }
  auto newest = [](const std::vector<std::string>& dirs) {
    std::string best;
    fs::file_time_type best_t{};
    for (const auto& d : dirs) {
      std::error_code e2;
      auto t = fs::last_write_time(fs::path(d) / kDoneMarker, e2);
      if (best.empty() || t > best_t) best = d, best_t = t;
    }
    return best;
  };
  std::map<std::string, bool> names;
  for (const auto& kv : tmp_done) names[kv.first] = true;
  for (const auto& kv : trash_done) names[kv.first] = true;
  for (const auto& [name, unused] : names) {
    std::string target = join(save_dir, name);
    if (exists_nofollow(target)) continue;
    auto t = tmp_done.find(name);
    std::string pick = t != tmp_done.end() ? newest(t->second) : newest(trash_done[name]);
    rename_or_throw(pick, target, "recover_save_dir");
    fsync_path(save_dir, true, "recover_save_dir");
    report.restored.push_back(name);
    leftovers.erase(std::find(leftovers.begin(), leftovers.end(), fs::path(pick).filename().string()));
  }
  std::sort(leftovers.begin(), leftovers.end());
  for (const auto& entry : leftovers) {
    fs::remove_all(fs::path(save_dir) / entry, ec);
    STRATA_CHECK(!ec) << "recover_save_dir: cannot remove " << join(save_dir, entry) << " (" << ec.message() << ")";
    report.removed.push_back(entry);
  }
  return report;
}

// ---------------------------------------------------------------- copies and pruning

std::string copy_checkpoint(const std::string& save_dir, const std::string& from, const std::string& to,
                            CheckpointWriterOptions options) {
  check_plain_name(from, "copy_checkpoint");
  check_plain_name(to, "copy_checkpoint");
  STRATA_CHECK(from != to) << "copy_checkpoint: source and destination are both '" << from << "'";
  std::string src = join(save_dir, from);
  STRATA_CHECK(is_complete_checkpoint(src)) << "copy_checkpoint: " << src << " is not a complete checkpoint";
  std::vector<std::pair<std::string, uint64_t>> files;
  read_done(src, files);
  CheckpointWriter w(save_dir, to, std::move(options));
  for (const auto& kv : files) w.link_file(kv.first, join(src, kv.first));
  return w.commit();
}

void remove_checkpoint(const std::string& save_dir, const std::string& name) {
  check_plain_name(name, "remove_checkpoint");
  std::string dir = join(save_dir, name);
  if (!exists_nofollow(dir)) return;
  std::string del = join(save_dir, kDelPrefix + name + unique_suffix());
  rename_or_throw(dir, del, "remove_checkpoint");
  fsync_path(save_dir, true, "remove_checkpoint");
  std::error_code ec;
  fs::remove_all(del, ec);
  STRATA_CHECK(!ec) << "remove_checkpoint: cannot remove " << del << " (" << ec.message() << ")";
}

std::vector<int64_t> list_periodic_checkpoints(const std::string& save_dir) {
  std::vector<int64_t> updates;
  std::error_code ec;
  if (!fs::is_directory(save_dir, ec)) return updates;
  const std::string prefix = "checkpoint_";
  for (const auto& e : fs::directory_iterator(save_dir)) {
    std::string n = e.path().filename().string();
    if (!e.is_directory() || n.compare(0, prefix.size(), prefix) != 0 || n.size() == prefix.size() ||
        n.size() > prefix.size() + 18)
      continue;
    std::string digits = n.substr(prefix.size());
    if (digits.find_first_not_of("0123456789") != std::string::npos) continue;
    updates.push_back(std::stoll(digits));
  }
  std::sort(updates.begin(), updates.end());
  return updates;
}

std::vector<std::string> prune_periodic_checkpoints(const std::string& save_dir, int keep) {
  std::vector<std::string> removed;
  if (keep <= 0) return removed;
  std::vector<int64_t> updates = list_periodic_checkpoints(save_dir);
  for (size_t i = 0; i + size_t(keep) < updates.size(); ++i) {
    std::string name = periodic_checkpoint_name(updates[i]);
    remove_checkpoint(save_dir, name);
    removed.push_back(name);
  }
  return removed;
}

}  // namespace strata::train
