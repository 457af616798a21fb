#include "status_error.h"

#include <string>
#include <utility>

namespace vern::storage {
namespace {

bool is_lock_error(const std::string& text) {
    return text.find("lock hold by current process") != std::string::npos ||
           text.find("While lock file") != std::string::npos ||
           text.find("/LOCK:") != std::string::npos;
}

}  // namespace

StoreError to_error(const rocksdb::Status& status) {
    std::string text = status.ToString();
    StoreErrc code = StoreErrc::io_error;
    if (status.IsNoSpace() || text.find("No space left on device") != std::string::npos) {
        code = StoreErrc::no_space;
    } else if (status.IsCorruption()) {
        code = StoreErrc::corruption;
    } else if (status.IsBusy() || status.IsTryAgain() || is_lock_error(text)) {
        code = StoreErrc::busy;
    } else if (status.IsInvalidArgument()) {
        code = StoreErrc::invalid_argument;
    }
    return StoreError{code, std::move(text)};
}

}  // namespace vern::storage
