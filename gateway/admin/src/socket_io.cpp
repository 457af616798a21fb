#include "vern/admin/socket_io.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>

#include "vern/admin/protocol.h"

namespace vern::admin {
namespace {

// Reads exactly n bytes before the deadline.
IoResult read_exact(int fd, char* buf, std::size_t n,
                    std::chrono::steady_clock::time_point deadline, bool forever) {
    std::size_t got = 0;
    while (got < n) {
        int wait = -1;
        if (!forever) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
            if (left <= 0) return IoResult::timeout;
            wait = static_cast<int>(left);
        }
        pollfd p{fd, POLLIN, 0};
        int rc = ::poll(&p, 1, wait);
        if (rc < 0) {
            if (errno == EINTR) continue;
            return IoResult::error;
        }
        if (rc == 0) return IoResult::timeout;
        ssize_t r = ::recv(fd, buf + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return IoResult::error;
        }
        if (r == 0) return got == 0 ? IoResult::closed : IoResult::error;
        got += static_cast<std::size_t>(r);
    }
    return IoResult::ok;
}

}  // namespace

IoResult read_frame(int fd, std::size_t max_bytes, int timeout_ms, std::string& out) {
    const bool forever = timeout_ms < 0;
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(forever ? 0 : timeout_ms);
    char header[frame_header_bytes];
    if (auto r = read_exact(fd, header, sizeof header, deadline, forever); r != IoResult::ok) {
        return r;
    }
    const std::uint32_t n = frame_length(header);
    if (n > max_bytes) return IoResult::too_large;
    out.assign(n, '\0');
    if (n == 0) return IoResult::ok;
    auto r = read_exact(fd, out.data(), n, deadline, forever);
    return r == IoResult::closed ? IoResult::error : r;
}

bool write_frame(int fd, std::string_view payload) {
    const std::string bytes = frame(payload);
    std::size_t sent = 0;
    while (sent < bytes.size()) {
        ssize_t w = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        sent += static_cast<std::size_t>(w);
    }
    return true;
}

int connect_unix(const std::string& path, std::string& error) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
        error = "socket path too long";
        return -1;
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error = std::generic_category().message(errno);
        return -1;
    }
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        error = std::generic_category().message(errno);
        ::close(fd);
        return -1;
    }
    return fd;
}

}  // namespace vern::admin
