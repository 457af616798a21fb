#include "vern/vernd/notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace vern::vernd {

bool notify_socket_send(const std::string& socket_path, std::string_view state) {
    if (socket_path.size() < 2 || (socket_path[0] != '/' && socket_path[0] != '@')) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.size() > sizeof(addr.sun_path) - (socket_path[0] == '/' ? 1 : 0)) return false;
    std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
    socklen_t len = offsetof(sockaddr_un, sun_path) + socket_path.size();
    if (socket_path[0] == '@') {
        addr.sun_path[0] = '\0';  // abstract: the name is exactly the bytes after the '\0'
    } else {
        len += 1;  // a path: with its terminating NUL
    }
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    ssize_t sent = 0;
    do {
        sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                        reinterpret_cast<const sockaddr*>(&addr), len);
    } while (sent < 0 && errno == EINTR);
    ::close(fd);
    return sent == static_cast<ssize_t>(state.size());
}

Notifier Notifier::from_environment() {
    const char* socket = std::getenv("NOTIFY_SOCKET");  // NOLINT(concurrency-mt-unsafe): start-up
    const char* usec = std::getenv("WATCHDOG_USEC");    // NOLINT(concurrency-mt-unsafe)
    const char* pid = std::getenv("WATCHDOG_PID");      // NOLINT(concurrency-mt-unsafe)
    std::chrono::microseconds watchdog{0};
    if (usec != nullptr && (pid == nullptr || std::strtoll(pid, nullptr, 10) == ::getpid())) {
        char* end = nullptr;
        const long long v = std::strtoll(usec, &end, 10);
        if (end != usec && *end == '\0' && v > 0) watchdog = std::chrono::microseconds(v);
    }
    return {socket == nullptr ? std::string() : std::string(socket), watchdog};
}

Notifier::Notifier(std::string socket_path, std::chrono::microseconds watchdog_interval)
    : socket_path_(std::move(socket_path)), watchdog_(watchdog_interval) {}

bool Notifier::notify(std::string_view state) const {
    return enabled() && notify_socket_send(socket_path_, state);
}

bool WatchdogPinger::alive(std::chrono::steady_clock::time_point now) {
    const auto interval = notifier_.watchdog_interval();
    if (!notifier_.enabled() || interval.count() <= 0) return false;
    if (pinged_ && now - last_ < interval / 2) return false;
    pinged_ = true;
    last_ = now;
    return notifier_.notify("WATCHDOG=1");
}

}  // namespace vern::vernd
