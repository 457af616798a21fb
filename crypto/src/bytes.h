#pragma once
// Private to crypto/: libsodium takes unsigned char pointers; vern passes std::string_view.
#include <string_view>

namespace vern::crypto {

inline const unsigned char* uc(std::string_view s) {
    return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace vern::crypto
