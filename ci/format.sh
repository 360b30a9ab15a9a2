#!/usr/bin/env bash
# format.sh [--fix] - clang-format over the library and the tests, with the
# committed .clang-format: checks by default (lists each file that differs
# and exits 1), rewrites the files in place with --fix. CI runs the check
# as its first stage (ci/test.sh).
#
# The files: every *.c and *.h of the library (core api tls uring fallback
# include) and every *.cc and *.h of tests/ (not tests/fuzz, tests/consumer:
# C programs of their own), as git sees them (tracked, and new files not
# ignored), so a build tree is never read.
set -euo pipefail
cd "$(dirname "$0")/.."

fix=0
case ${1:-} in
--fix) fix=1 ;;
"") ;;
*)
    echo "usage: $0 [--fix]" >&2
    exit 2
    ;;
esac

# Debian's clang-format-14 (ci/setup.sh installs it); the plain name where
# that is what a developer has.
cf=$(command -v clang-format-14 || command -v clang-format || true)
if [ -z "$cf" ]; then
    echo "format.sh: no clang-format-14 or clang-format on PATH (bash ci/setup.sh installs it)" >&2
    exit 2
fi

mapfile -t files < <(git ls-files --cached --others --exclude-standard -- \
    'core/*.c' 'core/*.h' 'api/*.c' 'api/*.h' 'tls/*.c' 'tls/*.h' \
    'uring/*.c' 'uring/*.h' 'fallback/*.c' 'fallback/*.h' 'include/*.h' \
    ':(glob)tests/*.cc' ':(glob)tests/*.h' | sort -u)
# A file listed by git but deleted in the work tree is not formatted.
present=()
for f in "${files[@]}"; do
    [ -f "$f" ] && present+=("$f")
done

if [ "$fix" -eq 1 ]; then
    "$cf" -i "${present[@]}"
    echo "format.sh: formatted ${#present[@]} files with $("$cf" --version)"
    exit 0
fi

bad=()
for f in "${present[@]}"; do
    "$cf" --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -ne 0 ]; then
    echo "format.sh: ${#bad[@]} of ${#present[@]} files are not clang-formatted:" >&2
    printf '  %s\n' "${bad[@]}" >&2
    echo "format.sh: 'bash ci/format.sh --fix' rewrites them; the first differences:" >&2
    "$cf" --dry-run --Werror "${bad[@]}" 2>&1 | head -40 >&2 || true
    exit 1
fi
echo "format.sh: all ${#present[@]} files are clang-formatted ($("$cf" --version))"
