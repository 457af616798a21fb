#pragma once
// Reassembles verification images from the chunks devices send (device::v1::ImageChunk).
//
// Pure and bounded: no I/O, no clock (the caller passes the time), and memory stays within the
// limits whatever arrives: a chunk that would break a limit is refused with a reason and leaves
// the state exactly as it was. Chunks may arrive in any order; a repeated chunk with the same
// bytes is accepted again and changes nothing (devices retry); the same index with other bytes
// is a conflict. An image whose chunks stop arriving is dropped by expire().
//
// The state can be written out (snapshot) and read back (restore) so the pipeline can commit
// it in the same batch as the events that changed it.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "device.pb.h"
#include "vern/common/result.h"

namespace vern::policy {

struct AssemblerLimits {
    std::size_t max_image_bytes = 2 * 1024 * 1024;        // one assembled image
    std::size_t max_images_in_progress = 8;               // images waiting for chunks
    std::size_t max_images_per_device = 2;                // of those, one device's
    std::size_t max_bytes_in_progress = 8 * 1024 * 1024;  // chunk bytes held, all images
    std::uint32_t max_chunks_per_image = 4096;            // bounds the per-chunk bookkeeping
    std::size_t max_id_bytes = 128;                       // event_id, image_id, device_id, type
    std::int64_t chunk_timeout_ms = 30'000;               // since the image's last new chunk
};

enum class AssemblyError : std::uint8_t {
    invalid_chunk,         // empty ids, count 0, index >= count, or an id over max_id_bytes
    oversized,             // the image would exceed max_image_bytes or max_chunks_per_image
    inconsistent_count,    // count differs from earlier chunks of the same image
    inconsistent_image,    // event_id or content_type differs from earlier chunks
    conflicting_chunk,     // this index arrived before with different bytes
    too_many_in_progress,  // a new image while max_images_in_progress are waiting
    over_budget,           // the chunk would take the held bytes over max_bytes_in_progress
    device_over_limit,     // a new image while its device has max_images_per_device waiting
};

std::string_view assembly_error_name(AssemblyError e);

enum class SnapshotError : std::uint8_t {
    truncated,            // ends before its content does
    bad_magic,            // not an image-assembler snapshot
    unsupported_version,  // written by a format this build does not read
    corrupt,              // checksum or structure wrong
    exceeds_limits,       // valid, but holds more than the limits given to restore()
};

std::string_view snapshot_error_name(SnapshotError e);

struct AssembledImage {
    std::string event_id;
    std::string image_id;
    std::string device_id;
    std::string content_type;
    std::string bytes;
};

class ImageAssembler {
public:
    explicit ImageAssembler(AssemblerLimits limits = {});

    // nullopt: accepted, the image is still incomplete (or the chunk was a repeat). A value: the
    // chunk completed its image, which is handed over and forgotten.
    Result<std::optional<AssembledImage>, AssemblyError> add(const device::v1::ImageChunk& chunk,
                                                             std::string_view device_id,
                                                             std::int64_t now_ms);

    // Drops the images with no new chunk for chunk_timeout_ms; returns how many.
    std::size_t expire(std::int64_t now_ms);

    std::size_t images_in_progress() const { return images_.size(); }
    std::size_t bytes_in_progress() const { return bytes_in_progress_; }
    const AssemblerLimits& limits() const { return limits_; }

    // A versioned, checksummed encoding of the images in progress. Equal states give equal
    // bytes.
    std::string snapshot() const;
    static Result<ImageAssembler, SnapshotError> restore(std::string_view snapshot,
                                                         AssemblerLimits limits = {});

private:
    std::size_t images_of(const std::string& device_id) const;

    struct Partial {
        std::string event_id;
        std::string content_type;
        std::uint32_t count = 0;
        std::int64_t last_chunk_ms = 0;
        std::size_t bytes = 0;
        std::map<std::uint32_t, std::string> chunks;
    };
    using Key = std::pair<std::string, std::string>;  // (device_id, image_id)

    AssemblerLimits limits_;
    std::map<Key, Partial> images_;
    std::size_t bytes_in_progress_ = 0;
};

}  // namespace vern::policy
