# The sanitizer trees' CMake arguments, sourced by scripts/test.sh and scripts/fuzz.sh so that
# both configure build-asan/ the same way (one tree serves the ASan tests and the fuzzers).
#
# asan: clang-14 with ASan+UBSan (UB fatal) and libFuzzer's coverage instrumentation on every
# vern target (-DVERN_FUZZ=ON), tests included: the unit and e2e tests and the fuzz targets are
# one build. clang builds this tree in half the CPU time gcc took for ASan alone (gcc -O2 with
# ASan+UBSan: 1511 CPU-s for the tests, plus 149 for a separate fuzz tree; clang -O1 for both:
# about 730), and holds our code to clang's warnings with -Werror as well as gcc's in the plain
# tree. -O1: what the sanitizers' manuals advise, and line tables only (-g1): a report needs
# function, file and line, not full debug info. Both trees link with lld (VERN_LINK_LLD in
# CMakeLists.txt). Precompiled headers (VERN_PCH) in this tree only: clang's saved 1-3 CPU-s
# per file of the test and library targets that have them (policy_test.cpp 14.5 -> 12.4,
# admin's server.cpp 17.7 -> 14.9, storage's store.cpp 9.4 -> 8.0; 3-4 s to make each), while
# gcc's (the plain and TSan trees) are 100-150 MB files whose loading costs about what they
# save (gateway.cpp 6.5 -> 7.2, events.cpp 3.0 -> 2.9, common_test.cpp 2.2 -> 2.4) and 7-8 s
# to make each. Both trees are unity builds (VERN_UNITY: one translation unit per library and
# program, tests excepted). In CI's fresh-clone runs (the machine fully loaded): ASan build
# 726-789 -> 649-698 CPU-s, TSan build 441-460 -> 380-405.
asan_cmake_args=(-DCMAKE_CXX_COMPILER="${CXX_FUZZ:-clang++-14}" -DCMAKE_BUILD_TYPE=RelWithDebInfo
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" -DVERN_SANITIZE=address -DVERN_FUZZ=ON
    -DVERN_WERROR=ON -DVERN_LINK_LLD=ON -DVERN_PCH=ON -DVERN_UNITY=ON)
# tsan: gcc, -O1 -g1, no -Werror (gcc's flow warnings are unreliable under sanitizers: gcc 12
# warns maybe-uninitialized inside libstdc++'s <regex> with them; gcc's manual advises against
# -Werror there). gcc rather than clang: clang's line-table-only reports name inlined frames
# without their class (~__shared_ptr, not std::__shared_ptr<mqtt::token, ...>), so the Paho
# entries of tests/tsan.supp would not match.
tsan_cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1"
    -DVERN_SANITIZE=thread -DVERN_WERROR=OFF -DVERN_LINK_LLD=ON -DVERN_UNITY=ON)
