#pragma once
// Strips verification images of everything but the picture before they may leave the site.
//
// A camera's JPEG can carry where it was taken (EXIF GPS), who owns the camera, serial numbers,
// editing history (XMP), captions (IPTC, comments) and a thumbnail that may show more than the
// image does. The sanitiser is an allow-list over JPEG marker segments: it keeps what decoding
// needs (SOI, DQT, SOF0/1/2, DHT, DRI, SOS and the entropy-coded data with its RSTn markers,
// EOI), rewrites APP0 JFIF without its thumbnail and APP14 Adobe down to its colour transform,
// and drops every other segment (APP1 EXIF and XMP, APP2 ICC, APP13 IPTC/Photoshop, the other
// APPn, COM). Bytes after EOI are dropped. Malformed input is refused with a reason, never read
// past its end. Pure: no I/O, no decoding of pixels.
#include <cstdint>
#include <string>
#include <string_view>

#include "vern/common/result.h"

namespace vern::policy {

enum class SanitiseError : std::uint8_t {
    unsupported_type,      // content type is not image/jpeg
    not_jpeg,              // does not start with SOI
    truncated,             // ends inside a segment or the scan data, or before EOI
    malformed,             // a segment is not what its marker says, or out of order
    no_image,              // EOI before any frame and scan
    unsupported_encoding,  // lossless, hierarchical or arithmetic-coded JPEG, or unknown markers
};

std::string_view sanitise_error_name(SanitiseError e);

// The JPEG with every metadata segment removed; decodes to the same pixels.
Result<std::string, SanitiseError> strip_jpeg_metadata(std::string_view in);

// Dispatches on the content type (case-insensitive); only "image/jpeg" is supported.
Result<std::string, SanitiseError> sanitise_image(std::string_view content_type,
                                                  std::string_view bytes);

}  // namespace vern::policy
