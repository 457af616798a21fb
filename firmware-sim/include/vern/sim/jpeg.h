#pragma once
// A synthetic camera JPEG: SOI, an APP1 Exif segment whose GPS IFD holds the site's position
// (so a privacy stage has metadata to strip), a COM segment, then a real baseline greyscale
// image (DQT, SOF0, DHT, SOS, Huffman-coded scan) and EOI. Decodable, 8-40 KB.
#include <string>
#include <string_view>

#include "vern/sim/population.h"
#include "vern/sim/rng.h"

namespace vern::sim {

std::string synthetic_jpeg(Rng& rng, const Location& where, std::string_view comment);

// Structural checks used by tests and tools.
bool jpeg_has_soi_eoi(std::string_view data);
// True if the data has an APP1 "Exif" segment whose IFD0 holds a GPSInfo (0x8825) tag.
bool jpeg_has_exif_gps(std::string_view data);

}  // namespace vern::sim
