// Compiles tests/support/test_pch.h once for every test file (tests/CMakeLists.txt).
