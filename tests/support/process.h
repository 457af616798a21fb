#pragma once
// Child processes for integration tests: fork/exec with output to a log file, own process
// group, killed with the parent; plus loopback port helpers.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace vern::test {

class Process {
public:
    // Starts argv[0] (a path; no PATH search) with argv. stdout and stderr are appended to
    // log_file, stdin is /dev/null. extra_env entries "KEY=VALUE" override the inherited
    // environment. The child is its own process-group leader and gets SIGKILL when the thread
    // that spawned it exits (PR_SET_PDEATHSIG). Throws std::system_error if fork fails; an exec
    // failure shows as exit code 127 with the reason in the log.
    static Process spawn(std::vector<std::string> argv, const std::filesystem::path& log_file,
                         std::vector<std::string> extra_env = {});

    Process() = default;
    ~Process();
    Process(Process&& other) noexcept;
    Process& operator=(Process&& other) noexcept;
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    pid_t pid() const { return pid_; }
    bool running();
    void signal(int sig);  // to the child only (not its group); no-op once it has exited
    // Exit code, or 128 + signal number if it was killed; nullopt if still running at timeout.
    std::optional<int> wait_for(std::chrono::milliseconds timeout);
    std::optional<int> exit_code() const { return status_; }

private:
    explicit Process(pid_t pid) : pid_(pid) {}
    bool reap(bool block);
    void kill_and_reap();

    pid_t pid_ = -1;
    std::optional<int> status_;
};

// A TCP port on 127.0.0.1 that was free a moment ago, reserved for this process until it exits:
// no other free_port() call, in any test process, returns it again meanwhile.
int free_port();
// VERN_BIN_DIR "/bin/" + name: a binary built by this tree.
std::string bin(const std::string& name);
// argv as it must be exec'd: a cross build's tests run this tree's binaries (argv[0] under
// VERN_BIN_DIR "/bin/") through the emulator command in VERN_TEST_EMULATOR (words split on
// blanks, a path first; set by scripts/cross-arm64.sh), other programs as they are.
std::vector<std::string> with_emulator(std::vector<std::string> argv);
// Polls cond every 10 ms until it returns true (true) or timeout passes (false).
bool wait_until(const std::function<bool()>& cond,
                std::chrono::milliseconds timeout = std::chrono::seconds(30));
// Waits until 127.0.0.1:port accepts a TCP connection.
bool wait_for_port(int port, std::chrono::milliseconds timeout);

}  // namespace vern::test
