#include "vern/sim/jpeg_decode.h"

#include <csetjmp>
#include <cstdio>

// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>

namespace vern::sim {
namespace {

struct ErrorManager {
    jpeg_error_mgr pub;
    std::jmp_buf jump;
    bool warned = false;
};

extern "C" void on_error(j_common_ptr cinfo) {
    auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
    std::longjmp(err->jump, 1);  // NOLINT(cert-err52-cpp): libjpeg's error_exit must not return
                                 // and may not throw through its C frames; longjmp is its API
}

// Level -1 is a corrupt-data warning: libjpeg carries on with made-up pixels; here it fails.
extern "C" void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) reinterpret_cast<ErrorManager*>(cinfo->err)->warned = true;
}

extern "C" void on_output(j_common_ptr) {}  // never print

}  // namespace

bool jpeg_decodes(std::string_view data) {
    if (data.empty()) return false;
    jpeg_decompress_struct cinfo{};
    ErrorManager err{};
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.pub.output_message = on_output;
    // Nothing with a destructor and no local changed after setjmp may be used after a longjmp:
    // the row buffer belongs to libjpeg's pool, freed by jpeg_destroy_decompress.
    if (setjmp(err.jump) != 0) {  // NOLINT(cert-err52-cpp): pairs with on_error's longjmp
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(data.data()),
                 static_cast<unsigned long>(data.size()));
    if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK) {
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    jpeg_start_decompress(&cinfo);
    JSAMPARRAY rows = (*cinfo.mem->alloc_sarray)(
        reinterpret_cast<j_common_ptr>(&cinfo), JPOOL_IMAGE,
        cinfo.output_width * static_cast<JDIMENSION>(cinfo.output_components), 1);
    while (cinfo.output_scanline < cinfo.output_height) jpeg_read_scanlines(&cinfo, rows, 1);
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return !err.warned;
}

}  // namespace vern::sim
