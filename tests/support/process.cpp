#include "process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

extern char** environ;

namespace vern::test {

Process Process::spawn(std::vector<std::string> argv, const std::filesystem::path& log_file,
                       std::vector<std::string> extra_env) {
    if (argv.empty()) throw std::invalid_argument("Process::spawn: empty argv");
    argv = with_emulator(std::move(argv));

    // Everything the child needs is prepared before fork: after fork in a multi-threaded
    // process only async-signal-safe calls are allowed.
    std::map<std::string, std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        const std::string kv(*e);
        env[kv.substr(0, kv.find('='))] = kv;
    }
    for (const auto& kv : extra_env) env[kv.substr(0, kv.find('='))] = kv;
    std::vector<std::string> env_strings;
    for (auto& [k, kv] : env) env_strings.push_back(kv);
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);

    const int log = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0)
        throw std::system_error(errno, std::generic_category(), "open " + log_file.string());
    const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const std::string exec_failed = "Process::spawn: exec " + argv[0] + " failed\n";
    const pid_t parent = ::getpid();

    const pid_t pid = ::fork();
    if (pid < 0) {
        const int err = errno;
        ::close(log);
        if (devnull >= 0) ::close(devnull);
        throw std::system_error(err, std::generic_category(), "fork");
    }
    if (pid == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
        if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
        ::dup2(log, STDOUT_FILENO);
        ::dup2(log, STDERR_FILENO);
        // Restore default signal handling and an empty mask for the new program.
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execve(args[0], args.data(), envp.data());
        const ssize_t ignored = ::write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
        (void)ignored;
        ::_exit(127);
    }
    ::setpgid(pid, pid);  // also from the parent, so the group exists before we return
    ::close(log);
    if (devnull >= 0) ::close(devnull);
    return Process(pid);
}

Process::~Process() { kill_and_reap(); }

Process::Process(Process&& other) noexcept : pid_(other.pid_), status_(other.status_) {
    other.pid_ = -1;
    other.status_.reset();
}

Process& Process::operator=(Process&& other) noexcept {
    if (this != &other) {
        kill_and_reap();
        pid_ = other.pid_;
        status_ = other.status_;
        other.pid_ = -1;
        other.status_.reset();
    }
    return *this;
}

bool Process::reap(bool block) {
    if (pid_ <= 0) return true;
    if (status_) return true;
    int st = 0;
    pid_t r;
    do {
        r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0) return false;
    if (r < 0) {  // not our child any more (reaped elsewhere): treat as gone
        status_ = -1;
        return true;
    }
    if (WIFEXITED(st)) {
        status_ = WEXITSTATUS(st);
    } else if (WIFSIGNALED(st)) {
        status_ = 128 + WTERMSIG(st);
    } else {
        return false;
    }
    return true;
}

void Process::kill_and_reap() {
    if (pid_ <= 0) return;
    if (!status_) {
        // Kill the whole group (grandchildren too) while its id is certainly still ours.
        ::kill(-pid_, SIGKILL);
        ::kill(pid_, SIGKILL);
        reap(true);
    }
    pid_ = -1;
}

bool Process::running() { return pid_ > 0 && !reap(false); }

void Process::signal(int sig) {
    if (running()) ::kill(pid_, sig);
}

std::optional<int> Process::wait_for(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return status_;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (reap(false)) return status_;
        if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

namespace {

int kernel_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        const int err = errno;
        ::close(fd);
        throw std::system_error(err, std::generic_category(), "bind 127.0.0.1:0");
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

// Takes `port` for this process: an exclusive flock on /tmp/vern-test-ports/PORT, held until the
// process exits (the descriptor is never closed, and not inherited by the processes it starts).
// False if another free_port() call, in this process or another, holds it. The directory is
// shared by every user's tests and a lock needs only read access; where the file can't be made
// (another user's directory without write access), the port goes unreserved, as before.
bool reserve(int port) {
    static const std::string dir = [] {
        std::string d = "/tmp/vern-test-ports";
        if (::mkdir(d.c_str(), 01777) == 0) ::chmod(d.c_str(), 01777);  // whatever the umask
        return d;
    }();
    const std::string path = dir + "/" + std::to_string(port);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0444);
    if (fd < 0) return true;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        return false;
    }
    return true;
}

}  // namespace

int free_port() {
    // The kernel's free port is free now, not while a broker that a test stopped (to restart it
    // on the same port) is down: another test running at the same time could get it then, and
    // its broker would answer this test's clients. So each port given out stays reserved by its
    // process, and a reserved port is skipped.
    for (int attempt = 0; attempt < 100; ++attempt) {
        const int port = kernel_port();
        if (reserve(port)) return port;
    }
    throw std::runtime_error("free_port: 100 ports in a row were reserved by other tests");
}

std::string bin(const std::string& name) { return std::string(VERN_BIN_DIR) + "/bin/" + name; }

std::vector<std::string> with_emulator(std::vector<std::string> argv) {
    // Mosquitto and the other build-machine programs run natively.
    const char* emulator = std::getenv("VERN_TEST_EMULATOR");  // NOLINT(concurrency-mt-unsafe)
    if (emulator == nullptr || *emulator == '\0' || argv.empty() ||
        argv[0].rfind(std::string(VERN_BIN_DIR) + "/bin/", 0) != 0)
        return argv;
    std::vector<std::string> prefix;
    std::istringstream words(emulator);
    for (std::string w; words >> w;) prefix.push_back(w);
    argv.insert(argv.begin(), prefix.begin(), prefix.end());
    return argv;
}

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (cond()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

bool wait_for_port(int port, std::chrono::milliseconds timeout) {
    return wait_until(
        [port] {
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) return false;
            sockaddr_in addr{};
            addr.sin_family = AF_INET;
            addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            addr.sin_port = htons(static_cast<std::uint16_t>(port));
            const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
            ::close(fd);
            return ok;
        },
        timeout);
}

}  // namespace vern::test
