# aarch64-linux-gnu.cmake - cross-build ringnet for 64-bit ARM Linux on a
# Debian host with the arm64 architecture added (ci/arm64.sh sets it up):
# Debian's cross compilers, the :arm64 -dev packages from the host's own
# multiarch directories, and qemu-user to run what the build made (GoogleTest
# discovery at build time, ctest after it).
#
#   cmake -S . -B build/aarch64 --toolchain cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Libraries and packages: the target's only (never the host's x86_64 ones);
# programs (pkg-config, bash): the host's.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "")

# qemu-user with the target's dynamic loader and libraries.
find_program(RINGNET_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64 REQUIRED)
set(CMAKE_CROSSCOMPILING_EMULATOR "${RINGNET_QEMU_AARCH64};-L;/usr/aarch64-linux-gnu"
    CACHE STRING "How the build runs the programs it makes (qemu-user)")
