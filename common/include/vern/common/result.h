#pragma once
// Per-message outcomes are values, not exceptions.
#include <tl/expected.hpp>

namespace vern {

template <class T, class E>
using Result = tl::expected<T, E>;

template <class E>
[[nodiscard]] inline tl::unexpected<E> fail(E e) {
    return tl::unexpected<E>(std::move(e));
}

}  // namespace vern
