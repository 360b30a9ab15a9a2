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

# qemu-user, with the root its programs' dynamic loader comes from. The
# loader (ld-linux-aarch64.so.1) and libc.so.6 must be one glibc build: they
# share ld.so's private _rtld_global, whose layout can change between two
# Debian revisions of the same glibc. Debian's arm64 libraries (libc6:arm64,
# liburing2:arm64, ...) live in /lib/aarch64-linux-gnu, and the loader looks
# there first; so the root must be "/", whose loader is libc6:arm64's. With
# -L /usr/aarch64-linux-gnu, the cross toolchain's older loader (2.36-8cross1)
# met libc6:arm64's libc.so.6 (2.36-9+deb12u14): pthread_create then walked
# its stack cache at the wrong offset of _rtld_global and spun for ever.
# Without libc6:arm64 the cross toolchain's own root is the consistent one.
find_program(RINGNET_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64 REQUIRED)
if(EXISTS /lib/ld-linux-aarch64.so.1)
  set(_ringnet_qemu_root /)
else()
  set(_ringnet_qemu_root /usr/aarch64-linux-gnu)
endif()
set(RINGNET_QEMU_ROOT "${_ringnet_qemu_root}"
    CACHE PATH "The root qemu-user takes the target's dynamic loader from (-L)")
# Derived, so a build directory configured before follows the two above
# (tests/consumer/check.sh reads it from the cache).
set(CMAKE_CROSSCOMPILING_EMULATOR "${RINGNET_QEMU_AARCH64};-L;${RINGNET_QEMU_ROOT}"
    CACHE STRING "How the build runs the programs it makes (qemu-user)" FORCE)
