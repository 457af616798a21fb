#pragma once
// A private mosquitto broker on a free loopback port, configured in a TempDir so that a slow or
// offline persistent subscriber loses nothing (deep queues, no byte limit). It runs in that
// directory: whatever it writes there (a persistence file without persistence_location too)
// stays inside dir().
#include <filesystem>
#include <string>
#include <vector>

#include "process.h"
#include "temp_dir.h"

namespace vern::test {

struct MosquittoOptions {
    bool persistence = false;  // persistence true + persistence_location in the dir
    // false: the generated config says nothing about persistence, extra_lines decide (a
    // shipped config as it is; mosquitto's default location is its working directory, dir()).
    bool generated_persistence = true;
    bool allow_anonymous = true;           // false: clients need a user (extra_lines say how)
    std::vector<std::string> extra_lines;  // appended to the generated config
    int port = 0;                          // 0: pick a free port
    std::string binary = "/usr/sbin/mosquitto";
};

class Mosquitto {
public:
    // Starts the broker and waits until the port accepts connections (throws on failure).
    explicit Mosquitto(MosquittoOptions options = {});
    ~Mosquitto();
    Mosquitto(const Mosquitto&) = delete;
    Mosquitto& operator=(const Mosquitto&) = delete;

    int port() const { return port_; }
    std::string uri() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
    const std::filesystem::path& dir() const { return dir_.path(); }
    std::filesystem::path log_file() const { return dir_.path() / "mosquitto.log"; }
    bool running() { return process_.running(); }

    void stop();   // SIGTERM, wait (SIGKILL after 10 s)
    void kill();   // SIGKILL: a crash, persistence only as of the last autosave
    void start();  // again, same port and config

private:
    void write_config();

    MosquittoOptions options_;
    TempDir dir_;
    int port_ = 0;
    Process process_;
};

}  // namespace vern::test
