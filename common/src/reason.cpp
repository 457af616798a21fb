#include "vern/common/reason.h"

namespace vern {

std::string_view reason_name(Reason r) {
    switch (r) {
        case Reason::too_large:
            return "too_large";
        case Reason::bad_topic:
            return "bad_topic";
        case Reason::undecodable:
            return "undecodable";
        case Reason::wrong_type:
            return "wrong_type";
        case Reason::device_mismatch:
            return "device_mismatch";
        case Reason::invalid_field:
            return "invalid_field";
        case Reason::duplicate:
            return "duplicate";
        case Reason::seq_window_full:
            return "seq_window_full";
        case Reason::policy_refused:
            return "policy_refused";
        case Reason::leak_blocked:
            return "leak_blocked";
        case Reason::store_failed:
            return "store_failed";
        case Reason::seal_failed:
            return "seal_failed";
        case Reason::corrupt_record:
            return "corrupt_record";
        case Reason::retained:
            return "retained";
        case Reason::field_too_long:
            return "field_too_long";
        case Reason::over_device_share:
            return "over_device_share";
        case Reason::over_device_rate:
            return "over_device_rate";
    }
    return "unknown";
}

}  // namespace vern
