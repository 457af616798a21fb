// vern-store-bench: the durable queue's head after a long life (bench/backlog.sh). Appends
// --records records to the meter lane in commits of --chunk and consumes them as the forwarder
// does (read from the head, remove what was read), so the lane holds at most one chunk while
// --records records pass through it; then appends --tail more and times reading the head:
// the first read (what the forwarder does after a restart or a wake), and the mean of
// --probes reads. RocksDB keeps tombstones of what was removed until compaction: the head
// seek must not walk them (storage/README.md, "Bounded reads over tombstones").
// Prints one JSON line. Writes are not synced (the figure is about reads, not fsync).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vern/storage/store.h"

using namespace vern;

namespace {

double us_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
    std::uint64_t records = 10'000'000, chunk = 10'000, tail = 1000;
    std::size_t value_bytes = 170, probes = 100;
    std::string dir;
    CLI::App app{"vern-store-bench: head seek after many consumed records"};
    app.add_option("--records", records, "records appended and consumed")->capture_default_str();
    app.add_option("--chunk", chunk, "records per commit (and per consume)")->capture_default_str();
    app.add_option("--tail", tail, "records left queued at the end")->capture_default_str();
    app.add_option("--value-bytes", value_bytes, "bytes per record (a sealed meter record ~170)")
        ->capture_default_str();
    app.add_option("--probes", probes, "head reads timed after the first")->capture_default_str();
    app.add_option("--dir", dir, "store directory (default: a temporary one, removed)");
    CLI11_PARSE(app, argc, argv);
    const bool temporary = dir.empty();
    if (temporary) {
        dir = (std::filesystem::temp_directory_path() /
               ("vern-store-bench." + std::to_string(::getpid())))
                  .string();
    }
    int rc = 0;
    {
        storage::StoreOptions o;
        o.path = dir;
        o.sync = false;
        auto opened = storage::Store::open(o);
        if (!opened) {
            std::cerr << "vern-store-bench: " << opened.error().detail << "\n";
            return 2;
        }
        std::unique_ptr<storage::Store> owner = std::move(*opened);
        auto* store_ptr = owner.get();
        auto& store = *store_ptr;
        const std::string value(value_bytes, 'v');
        auto append = [&](std::uint64_t n) {
            storage::WriteSet w;
            for (std::uint64_t i = 0; i < n; ++i) w.append(Lane::meter, value);
            return store.commit(std::move(w)).has_value();
        };
        const auto fill_start = std::chrono::steady_clock::now();
        double worst_read_us = 0;
        for (std::uint64_t done = 0; done < records && rc == 0; done += chunk) {
            const std::uint64_t n = std::min(chunk, records - done);
            if (!append(n)) {
                rc = 1;
                break;
            }
            const auto head = store.stats(Lane::meter).head_seq;
            const auto t = std::chrono::steady_clock::now();
            auto got = store.read(Lane::meter, head, n, std::size_t{64} << 20);
            worst_read_us = std::max(worst_read_us, us_since(t));
            if (!got || got->size() != n) {
                rc = 1;
                break;
            }
            std::vector<std::uint64_t> seqs;
            seqs.reserve(n);
            for (const auto& r : *got) seqs.push_back(r.seq);
            if (!store.remove(Lane::meter, std::move(seqs))) rc = 1;
        }
        const double fill_s = us_since(fill_start) / 1e6;
        if (rc == 0 && !append(tail)) rc = 1;
        const auto head = store.stats(Lane::meter).head_seq;
        auto t = std::chrono::steady_clock::now();
        auto first = store.read(Lane::meter, head, 64, 65536);
        const double first_us = us_since(t);
        t = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < probes; ++i) (void)store.read(Lane::meter, head, 64, 65536);
        const double mean_us = probes ? us_since(t) / static_cast<double>(probes) : 0;
        if (!first || first->empty() || first->front().seq != head) rc = 1;
        // After a restart: the store reopened (each lane walked once) and the head read cold.
        owner.reset();
        t = std::chrono::steady_clock::now();
        auto reopened = storage::Store::open(o);
        const double reopen_us = us_since(t);
        double reopen_first_us = 0;
        if (!reopened) {
            rc = 1;
        } else {
            const auto h = (*reopened)->stats(Lane::meter).head_seq;
            t = std::chrono::steady_clock::now();
            auto r = (*reopened)->read(Lane::meter, h, 64, 65536);
            reopen_first_us = us_since(t);
            if (!r || r->empty() || h != head) rc = 1;
        }
        nlohmann::json j{
            {"records_consumed", records},
            {"chunk", chunk},
            {"head_seq", head},
            {"fill_and_consume_s", fill_s},
            {"append_consume_per_s", fill_s > 0 ? static_cast<double>(records) / fill_s : 0.0},
            {"worst_chunk_read_us", worst_read_us},
            {"head_read_first_us", first_us},
            {"head_read_mean_us", mean_us},
            {"reopen_us", reopen_us},
            {"head_read_after_reopen_us", reopen_first_us},
            {"ok", rc == 0}};
        std::cout << j.dump() << "\n";
    }
    if (temporary) std::filesystem::remove_all(dir);
    return rc;
}
