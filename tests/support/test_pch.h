#pragma once
// The precompiled header of every test file (tests/CMakeLists.txt, vern_test_pch): Catch2's one
// 17 k-line header, nlohmann/json, the device and clean schemas (protobuf's message headers) and
// the standard headers most test files include. Each test file still includes what it uses; this
// only saves parsing the same headers once per file.
#include <algorithm>
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "clean.pb.h"
#include "device.pb.h"
