#pragma once
// A small, pure JPEG marker walker: checks that bytes are a well-formed JPEG (SOI, length-framed
// segments, a frame header, at least one scan whose entropy-coded data ends at a marker, EOI as
// the last two bytes) and lists the metadata it carries. It does not decode the image.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vern::sim {

struct JpegSegment {
    std::uint8_t marker = 0;  // the byte after 0xFF, e.g. 0xE1 for APP1
    std::size_t offset = 0;   // of the 0xFF
    std::size_t length = 0;   // the segment's length field (body + 2); 0 for standalone markers
};

struct JpegInspection {
    bool well_formed = false;
    std::string problem;  // the first structural problem, empty when well formed
    std::vector<JpegSegment> segments;
    // Metadata found, sorted, each once: "exif", "xmp", "icc", "iptc", "jfxx", "comment",
    // "appN" (any other APPn than a JFIF APP0), "exif_signature" / "xmp_signature" (the
    // signature somewhere outside an APPn segment).
    std::vector<std::string> metadata_kinds;
    bool exif_gps = false;  // an Exif IFD0 holds the GPSInfo (0x8825) tag

    bool has_metadata() const { return !metadata_kinds.empty(); }
};

// Walks as far as the structure allows: metadata before a structural problem is still listed.
JpegInspection inspect_jpeg(std::string_view data);

// True if `tiff` (the bytes after "Exif\0\0") has an IFD0 entry with the GPSInfo tag.
bool exif_has_gps_ifd(std::string_view tiff);

}  // namespace vern::sim
