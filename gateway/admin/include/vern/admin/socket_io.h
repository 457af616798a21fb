#pragma once
// Blocking frame I/O over a Unix stream socket, with a timeout per read. Used by the admin
// server and by vernctl.
#include <cstddef>
#include <string>
#include <string_view>

namespace vern::admin {

enum class IoResult { ok, closed, timeout, too_large, error };

// Reads one frame (length prefix + body) into `out`. A length over max_bytes is too_large (the
// body is not read). timeout_ms < 0: wait forever.
IoResult read_frame(int fd, std::size_t max_bytes, int timeout_ms, std::string& out);
// Writes one frame (length prefix + payload). False if the peer went away.
bool write_frame(int fd, std::string_view payload);
// Connects to the socket at `path`; -1 and `error` set on failure.
int connect_unix(const std::string& path, std::string& error);

}  // namespace vern::admin
