"""Installing what perf/run needs (Debian bookworm) and building it."""
import os
import shutil
import subprocess
import sys

# (a command or a file that must exist, the Debian package that brings it)
NEEDS = [("nginx", "nginx-light"), ("wrk", "wrk"), ("iperf3", "iperf3"),
         ("gnuplot", "gnuplot-nox"), ("openssl", "openssl"), ("ss", "iproute2"),
         ("cmake", "cmake"), ("gcc", "gcc"), ("pkg-config", "pkg-config"),
         ("taskset", "util-linux"),
         ("/usr/include/uv.h", "libuv1-dev"), ("/usr/include/liburing.h", "liburing-dev"),
         ("/usr/include/wolfssl/ssl.h", "libwolfssl-dev"),
         ("/usr/include/openssl/ssl.h", "libssl-dev")]
# What the benchmarks cannot run without (the others are skipped when missing).
REQUIRED = ["rn_http_server", "rn_echo_server", "rn_bulk", "echo_load", "http_check",
            "idle_conns", "raw_uring_server"]


def missing_packages():
    out = []
    for what, pkg in NEEDS:
        present = os.path.exists(what) if what.startswith("/") else shutil.which(what)
        if not present:
            out.append(pkg)
    return out


def install():
    need = missing_packages()
    if need:
        install_packages(need)


def install_packages(need):
    print(f"perf/run: installing {' '.join(need)}", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    subprocess.run(sudo + env + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(sudo + env + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
                   + need, check=True, stdout=subprocess.DEVNULL)


def build_commands(build_dir):
    """The configure and build commands for build_dir (the release preset's, or another)."""
    build = ["cmake", "--build", build_dir, "-j2", "--target", "ringnet_perf"]
    if os.path.normpath(build_dir) == os.path.join("build", "release"):
        return [["cmake", "--preset", "release", "-DRINGNET_WERROR=OFF"],
                ["cmake", "--build", "--preset", "release", "-j2", "--target", "ringnet_perf"]]
    return [build]


def build(build_dir, label="the release preset"):
    """Build every perf program (target ringnet_perf); exit with the log's tail on failure."""
    print(f"perf/run: building {label}", file=sys.stderr)
    log = []
    for cmd in build_commands(build_dir):
        r = subprocess.run(cmd, capture_output=True, text=True)
        log += (r.stdout + r.stderr).splitlines()
        if r.returncode != 0:
            print("\n".join(log[-30:]), file=sys.stderr)
            print("perf/run: the build failed (log above)", file=sys.stderr)
            sys.exit(1)


def check_built(bin_dir, names=REQUIRED):
    for n in names:
        if not os.access(os.path.join(bin_dir, n), os.X_OK):
            print(f"perf/run: {bin_dir}/{n} is missing (run without --no-build)", file=sys.stderr)
            sys.exit(1)
