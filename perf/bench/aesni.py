"""The fast wolfSSL beside Debian's: ci/build-wolfssl-aesni.sh builds
wolfSSL 5.5.4 (Debian's source, AES-NI and assembly) once into
build/wolfssl-aesni, which keeps the script's sha256 in .build-stamp: a
changed script rebuilds it. ringnet's perf programs are then built against
it in build/release-aesni (preset release-aesni), from scratch when the
library under it changed. check() makes sure each build loads the wolfSSL it
was built for: a DT_RPATH (not RUNPATH, which LD_LIBRARY_PATH and the
system's libwolfssl.so.35 of the same soname would override) and the
prefix's own options.h (without it the structures do not match the
library)."""
import hashlib
import os
import re
import shutil
import subprocess
import sys

from .harness import Fatal

SCRIPT = "ci/build-wolfssl-aesni.sh"
PREFIX = "build/wolfssl-aesni"
BUILD = "build/release-aesni"
TARGETS = ["rn_tls_server", "tls_bulk", "tls_idle"]


def note(text):
    print(f"perf/run: {text}", file=sys.stderr)


def script_sha(root):
    with open(os.path.join(root, SCRIPT), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def prefix_stamp(root):
    try:
        with open(os.path.join(root, PREFIX, ".build-stamp")) as f:
            return f.read().strip()
    except OSError:
        return ""


def _run(cmd, root, what):
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    if r.returncode:
        sys.stderr.write("\n".join((r.stdout + r.stderr).splitlines()[-30:]) + "\n")
        raise Fatal(f"perf/run: {what} failed (log above)")


def build(root, targets=TARGETS):
    """The wolfSSL (when its script changed) and ringnet's TARGETS against it."""
    sha = script_sha(root)
    if prefix_stamp(root) != sha:
        note(f"building wolfSSL with AES-NI ({SCRIPT}: about 3.5 minutes on 2 cores)")
    _run(["bash", SCRIPT], root, SCRIPT)
    if prefix_stamp(root) != sha:
        raise Fatal(f"perf/run: {SCRIPT} left no stamp matching itself in {PREFIX}")
    bdir = os.path.join(root, BUILD)
    built_with = os.path.join(bdir, "wolfssl-stamp")
    try:
        with open(built_with) as f:
            same = f.read().strip() == sha
    except OSError:
        same = False
    if not same and os.path.isdir(bdir):
        note(f"{PREFIX} changed: rebuilding {BUILD} from scratch")
        shutil.rmtree(bdir)
    note(f"building {', '.join(targets)} against it ({BUILD})")
    _run(["cmake", "--preset", "release-aesni", "-DRINGNET_WERROR=OFF",
          "-DRINGNET_BUILD_TESTS=OFF", "-DRINGNET_BUILD_EXAMPLES=OFF"], root,
         "configuring " + BUILD)
    _run(["cmake", "--build", BUILD, "-j2", "--target", *targets], root, "building " + BUILD)
    with open(built_with, "w") as f:
        f.write(sha + "\n")


def _dynamic(path):
    r = subprocess.run(["readelf", "-d", path], capture_output=True, text=True)
    return r.stdout


def _loads(path):
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    m = re.search(r"libwolfssl\.so\.35 => (\S+)", r.stdout)
    return os.path.realpath(m.group(1)) if m else ""


def check(root, deb_dir, programs=("rn_tls_server",)):
    """Raise Fatal unless deb_dir's programs load Debian's wolfSSL and
    BUILD's the prefix's, through an RPATH, with the prefix's options.h."""
    lib = os.path.realpath(os.path.join(root, PREFIX, "lib", "libwolfssl.so.35"))
    src_opts = [os.path.join(d, "wolfssl", "options.h")
                for d in _glob_dirs(os.path.join(root, "build", "wolfssl-src"))]
    inst_opts = os.path.join(root, PREFIX, "include", "wolfssl", "options.h")
    if not os.path.exists(inst_opts):
        raise Fatal(f"perf/run: {inst_opts} is missing: the headers would not match the library")
    for o in src_opts:
        if os.path.exists(o) and open(o).read() != open(inst_opts).read():
            raise Fatal(f"perf/run: {inst_opts} differs from the build's {o}")
    aes_lib = os.path.join(root, BUILD, "libringnet.so")
    dyn = _dynamic(aes_lib)
    want = os.path.join(root, PREFIX, "lib")
    if "RUNPATH" in dyn or not re.search(r"\(RPATH\).*\[[^]]*" + re.escape(want), dyn):
        raise Fatal(f"perf/run: {aes_lib} does not carry an RPATH (DT_RPATH, not RUNPATH) to {want}")
    for p in programs:
        for d, expect in ((BUILD, lib), (deb_dir, None)):
            exe = os.path.join(root, d, p)
            if not os.access(exe, os.X_OK):
                continue
            got = _loads(exe)
            if expect and got != expect:
                raise Fatal(f"perf/run: {exe} loads {got or 'no wolfSSL'}, not {expect}")
            if not expect and (not got or got.startswith(os.path.join(root, "build"))):
                raise Fatal(f"perf/run: {exe} loads {got or 'no wolfSSL'}, not Debian's")
    return lib


def _glob_dirs(d):
    try:
        return [os.path.join(d, n) for n in os.listdir(d) if n.startswith("wolfssl-")
                and os.path.isdir(os.path.join(d, n))]
    except OSError:
        return []


def describe(root):
    """One line: what the fast build is."""
    opts = os.path.join(root, PREFIX, "include", "wolfssl", "options.h")
    flags = []
    try:
        text = open(opts).read()
        for d in ("WOLFSSL_AESNI", "USE_INTEL_SPEEDUP", "WOLFSSL_SP_X86_64_ASM", "SESSION_CERTS"):
            flags.append(d + ("" if re.search(rf"^#define {d}\b", text, re.M) else " (off)"))
    except OSError:
        pass
    return (f"wolfSSL 5.5.4 from Debian's source with {SCRIPT} (stamp "
            f"{prefix_stamp(root)[:12]}): {', '.join(flags)}")
