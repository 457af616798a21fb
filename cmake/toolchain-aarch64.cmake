# Cross-compiling vern for arm64 (aarch64) on Debian 12 with multiarch packages:
# crossbuild-essential-arm64 and the :arm64 -dev packages of every dependency (scripts/deps.list;
# scripts/install-deps.sh installs them). Headers are shared (/usr/include), arm64
# libraries live in /usr/lib/aarch64-linux-gnu; protoc stays the native one.
#
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake
#
# VERN_ARM64_EXTRA_ROOT: a directory with arm64 packages unpacked by hand (dpkg -x) for those
# that can't be co-installed with their amd64 version (librocksdb-dev, libgflags-dev in Debian
# 12 are not Multi-Arch: same). Searched before the system.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(VERN_ARM64_EXTRA_ROOT "" CACHE PATH "arm64 packages unpacked by hand (dpkg -x)")
if(VERN_ARM64_EXTRA_ROOT)
    list(PREPEND CMAKE_PREFIX_PATH ${VERN_ARM64_EXTRA_ROOT}/usr)
    # The unpacked libraries are not in the loader's paths: let the build tree find them.
    list(APPEND CMAKE_BUILD_RPATH ${VERN_ARM64_EXTRA_ROOT}/usr/lib/aarch64-linux-gnu)
endif()

# Programs (protoc) are the build machine's; libraries and packages are the target's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
# pkg-config (libsodium): the arm64 .pc files only.
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")

# Test discovery and ctest run arm64 binaries under user-mode emulation (no binfmt needed),
# through the arm64 loader (scripts/qemu-arm64-run: `qemu-aarch64 -L` hangs at the first thread
# with Debian 12's qemu on some hosts).
set(CMAKE_CROSSCOMPILING_EMULATOR ${CMAKE_CURRENT_LIST_DIR}/../scripts/qemu-arm64-run)
