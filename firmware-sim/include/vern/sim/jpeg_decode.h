#pragma once
// A full libjpeg decode of an image, for vern-tap's check that a sanitised verification image is
// still a picture. Separate from vern_sim so that only the tools that decode link libjpeg.
#include <string_view>

namespace vern::sim {

// True if libjpeg decodes every scanline without an error or a corrupt-data warning.
bool jpeg_decodes(std::string_view data);

}  // namespace vern::sim
