#include "plain_json.h"

#include <google/protobuf/descriptor.h>

#include <bitset>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

namespace vern::decode::detail {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

constexpr std::uint64_t max_bare_64 = std::uint64_t{1} << 53;  // exact in a double
constexpr int max_fields = 64;                                 // the `seen` set's size
constexpr int max_depth = 1;                                   // a message and its body

class Cursor {
public:
    explicit Cursor(std::string_view s) : s_(s) {}

    bool eat(char c) {
        skip_space();
        if (i_ < s_.size() && s_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }

    bool at_end() {
        skip_space();
        return i_ == s_.size();
    }

    // A string of printable ASCII without escapes; its bytes as they stand in the payload.
    std::optional<std::string_view> plain_string() {
        if (!eat('"')) return std::nullopt;
        const std::size_t start = i_;
        for (; i_ < s_.size(); ++i_) {
            const auto c = static_cast<unsigned char>(s_[i_]);
            if (c == '"') return s_.substr(start, i_++ - start);
            if (c < 0x20 || c > 0x7e || c == '\\') return std::nullopt;
        }
        return std::nullopt;
    }

    // A bare JSON number that is an integer: an optional '-', then digits. Not followed by a
    // fraction or an exponent (those are protobuf's to judge).
    std::optional<std::string_view> bare_integer() {
        skip_space();
        const std::size_t start = i_;
        if (i_ < s_.size() && s_[i_] == '-') ++i_;
        while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
        if (i_ < s_.size() && (s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E')) {
            return std::nullopt;
        }
        return s_.substr(start, i_ - start);
    }

    bool next_is_quote() {
        skip_space();
        return i_ < s_.size() && s_[i_] == '"';
    }

private:
    void skip_space() {
        while (i_ < s_.size() &&
               (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) {
            ++i_;
        }
    }

    std::string_view s_;
    std::size_t i_ = 0;
};

// Digits without a leading zero (but "0"), at most `max`.
std::optional<std::uint64_t> digits_value(std::string_view d, std::uint64_t max) {
    if (d.empty() || (d.size() > 1 && d[0] == '0')) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : d) {
        if (c < '0' || c > '9') return std::nullopt;
        const auto digit = static_cast<std::uint64_t>(c - '0');
        if (v > (max - digit) / 10) return std::nullopt;
        v = v * 10 + digit;
    }
    return v;
}

// The magnitudes a field's integers may have; max_negative 0: no sign (unsigned).
struct Range {
    std::uint64_t max_positive = 0;
    std::uint64_t max_negative = 0;
};

Range range_of(FieldDescriptor::Type type, bool quoted) {
    constexpr std::uint64_t int64_max = std::numeric_limits<std::int64_t>::max();
    switch (type) {
        case FieldDescriptor::TYPE_INT64:
            return quoted ? Range{int64_max, int64_max + 1} : Range{max_bare_64, max_bare_64};
        case FieldDescriptor::TYPE_UINT64:
            return {quoted ? std::numeric_limits<std::uint64_t>::max() : max_bare_64, 0};
        default:  // TYPE_UINT32
            return {std::numeric_limits<std::uint32_t>::max(), 0};
    }
}

// "-"? digits within `range`, never "-0": the value's two's complement bits.
std::optional<std::uint64_t> integer_bits(std::string_view text, Range range) {
    const bool negative = !text.empty() && text[0] == '-';
    if (negative) {
        if (range.max_negative == 0) return std::nullopt;
        text.remove_prefix(1);
    }
    auto v = digits_value(text, negative ? range.max_negative : range.max_positive);
    if (!v || (negative && *v == 0)) return std::nullopt;
    return negative ? 0 - *v : *v;
}

int base64_digit(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

// Padded standard base64 whose unused bits are clear: the one spelling of its bytes.
std::optional<std::string> base64_bytes(std::string_view text) {
    if (text.size() % 4 != 0) return std::nullopt;
    std::size_t pad = 0;
    while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=') ++pad;
    std::string out;
    out.reserve(text.size() / 4 * 3);
    std::uint32_t acc = 0;
    int bits = 0;
    for (std::size_t i = 0; i + pad < text.size(); ++i) {
        const int d = base64_digit(text[i]);
        if (d < 0) return std::nullopt;
        acc = (acc << 6) | static_cast<std::uint32_t>(d);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;  // unused bits set
    return out;
}

bool read_object(Cursor& in, Message& message, int depth);

bool read_field(Cursor& in, Message& message, const FieldDescriptor& field, int depth) {
    const auto* reflection = message.GetReflection();
    switch (field.type()) {
        case FieldDescriptor::TYPE_STRING: {
            auto s = in.plain_string();
            if (!s) return false;
            reflection->SetString(&message, &field, std::string(*s));
            return true;
        }
        case FieldDescriptor::TYPE_BYTES: {
            auto s = in.plain_string();
            if (!s) return false;
            auto bytes = base64_bytes(*s);
            if (!bytes) return false;
            reflection->SetString(&message, &field, std::move(*bytes));
            return true;
        }
        case FieldDescriptor::TYPE_UINT64:
        case FieldDescriptor::TYPE_INT64:
        case FieldDescriptor::TYPE_UINT32: {
            const bool wide = field.type() == FieldDescriptor::TYPE_UINT64 ||
                              field.type() == FieldDescriptor::TYPE_INT64;
            const bool quoted = wide && in.next_is_quote();  // 32-bit ones bare only
            auto text = quoted ? in.plain_string() : in.bare_integer();
            if (!text) return false;
            auto bits = integer_bits(*text, range_of(field.type(), quoted));
            if (!bits) return false;
            switch (field.type()) {
                case FieldDescriptor::TYPE_INT64:
                    reflection->SetInt64(&message, &field, static_cast<std::int64_t>(*bits));
                    break;
                case FieldDescriptor::TYPE_UINT64:
                    reflection->SetUInt64(&message, &field, *bits);
                    break;
                default:
                    reflection->SetUInt32(&message, &field, static_cast<std::uint32_t>(*bits));
                    break;
            }
            return true;
        }
        case FieldDescriptor::TYPE_ENUM: {
            auto name = in.plain_string();
            if (!name) return false;
            const auto& type = *field.enum_type();
            for (int i = 0; i < type.value_count(); ++i) {  // no std::string made for the name
                if (type.value(i)->name() == *name) {
                    reflection->SetEnumValue(&message, &field, type.value(i)->number());
                    return true;
                }
            }
            return false;
        }
        case FieldDescriptor::TYPE_MESSAGE:
            if (depth >= max_depth || field.is_map()) return false;
            return read_object(in, *reflection->MutableMessage(&message, &field), depth + 1);
        default:
            return false;  // a type no device message has (int32, bool, ...): protobuf reads it
    }
}

const FieldDescriptor* field_named(const google::protobuf::Descriptor& type,
                                   std::string_view name) {
    for (int i = 0; i < type.field_count(); ++i) {
        const FieldDescriptor* f = type.field(i);
        if (f->json_name() == name || f->name() == name) return f;
    }
    return nullptr;
}

bool read_object(Cursor& in, Message& message, int depth) {
    const auto& type = *message.GetDescriptor();
    if (type.field_count() > max_fields || !in.eat('{')) return false;
    if (in.eat('}')) return true;
    std::bitset<max_fields> seen;
    std::bitset<max_fields> oneof_seen;
    do {
        auto key = in.plain_string();
        if (!key || !in.eat(':')) return false;
        const FieldDescriptor* field = field_named(type, *key);
        if (!field || field->is_repeated() || seen[static_cast<std::size_t>(field->index())]) {
            return false;
        }
        seen.set(static_cast<std::size_t>(field->index()));
        if (const auto* oneof = field->containing_oneof()) {
            if (oneof_seen[static_cast<std::size_t>(oneof->index())]) return false;
            oneof_seen.set(static_cast<std::size_t>(oneof->index()));
        }
        if (!read_field(in, message, *field, depth)) return false;
    } while (in.eat(','));
    return in.eat('}');
}

}  // namespace

bool read_plain_json(std::string_view payload, device::v1::DeviceMessage& out) {
    Cursor in(payload);
    return read_object(in, out, 0) && in.at_end();
}

}  // namespace vern::decode::detail
