#pragma once
// systemd's service notification protocol (sd_notify(3)), spoken directly: one datagram of
// newline-separated VAR=VALUE assignments ("READY=1", "WATCHDOG=1", "STATUS=...") to the
// AF_UNIX socket named by $NOTIFY_SOCKET: a file system path, or '@' for a name in the abstract
// namespace. Without the variable (not started by systemd, or not Type=notify) nothing is sent.
//
// Why not libsystemd: the protocol is one sendto(); implementing it here adds no run-time or
// cross-build dependency and is tested against a socket of our own.
//
// Never: block (the socket is datagram, sends are MSG_DONTWAIT), throw, or send personal data
// (STATUS= carries counters and link states only).
#include <chrono>
#include <string>
#include <string_view>

namespace vern::vernd {

// Sends `state` to the notification socket `socket_path` ('/...' or '@...'). Returns false when
// the path is empty or invalid, or the datagram could not be sent.
bool notify_socket_send(const std::string& socket_path, std::string_view state);

class Notifier {
public:
    // $NOTIFY_SOCKET, and the watchdog interval from $WATCHDOG_USEC when $WATCHDOG_PID is unset
    // or names this process.
    static Notifier from_environment();
    Notifier() = default;
    Notifier(std::string socket_path, std::chrono::microseconds watchdog_interval);

    bool enabled() const { return !socket_path_.empty(); }
    bool notify(std::string_view state) const;
    // 0 when the service manager expects no watchdog pings.
    std::chrono::microseconds watchdog_interval() const { return watchdog_; }

private:
    std::string socket_path_;
    std::chrono::microseconds watchdog_{0};
};

// WATCHDOG=1 at half the watchdog interval, from the thread that calls alive(): the data path's
// loop calls it on every turn, so pings stop when the loop stops turning. Not thread-safe: one
// caller.
class WatchdogPinger {
public:
    explicit WatchdogPinger(const Notifier& notifier) : notifier_(notifier) {}
    // Sends WATCHDOG=1 when half the interval has passed since the last ping (or on the first
    // call). Returns whether it sent one.
    bool alive(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

private:
    const Notifier& notifier_;
    std::chrono::steady_clock::time_point last_{};
    bool pinged_ = false;
};

}  // namespace vern::vernd
