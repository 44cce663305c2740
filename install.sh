#!/bin/sh
# Install keyward from a GitHub release, without a Rust toolchain: picks the archive for
# this OS and CPU, checks its SHA-256 (against the release's SHA256SUMS, and against
# --sha256 when given), puts `keyward` in a bin directory and runs `keyward --version`.
#
#   curl -fsSL https://github.com/keyward/keyward/releases/latest/download/install.sh | sh
#   sh install.sh --version v0.1.0 --bin-dir /usr/local/bin
#
# Options (or the environment variable in brackets):
#   --version vX.Y.Z   the release tag (KEYWARD_VERSION; default: the latest release)
#   --bin-dir DIR      where to put keyward (KEYWARD_BIN_DIR; default: ~/.local/bin)
#   --sha256 HEX       the archive's expected SHA-256, e.g. pinned in CI (KEYWARD_SHA256)
#   --base-url URL     where the release's files are (KEYWARD_BASE_URL; default: the GitHub
#                      release of KEYWARD_REPO, keyward/keyward); file:// works too
#   --target TRIPLE    the archive to pick instead of guessing from uname (KEYWARD_TARGET)
# Needs: curl or wget, tar, and sha256sum or shasum.
set -eu

repo=${KEYWARD_REPO:-keyward/keyward}
version=${KEYWARD_VERSION:-latest}
bin_dir=${KEYWARD_BIN_DIR:-${HOME:-}/.local/bin}
want_sha=${KEYWARD_SHA256:-}
base_url=${KEYWARD_BASE_URL:-}
target=${KEYWARD_TARGET:-}

say() { printf 'keyward install: %s\n' "$*" >&2; }
fail() { say "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --version) [ $# -ge 2 ] || fail "--version needs a tag"; version=$2; shift 2 ;;
        --bin-dir) [ $# -ge 2 ] || fail "--bin-dir needs a directory"; bin_dir=$2; shift 2 ;;
        --sha256) [ $# -ge 2 ] || fail "--sha256 needs a hex digest"; want_sha=$2; shift 2 ;;
        --base-url) [ $# -ge 2 ] || fail "--base-url needs a URL"; base_url=$2; shift 2 ;;
        --target) [ $# -ge 2 ] || fail "--target needs a target triple"; target=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" 2>/dev/null | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option $1 (see --help)" ;;
    esac
done

# The archive for this machine (the names release.yml gives them).
if [ -z "$target" ]; then
    os=$(uname -s)
    arch=$(uname -m)
    case "$os/$arch" in
        Linux/x86_64|Linux/amd64) target=x86_64-unknown-linux-musl ;;
        Linux/aarch64|Linux/arm64) target=aarch64-unknown-linux-musl ;;
        Darwin/arm64|Darwin/aarch64) target=aarch64-apple-darwin ;;
        Darwin/x86_64) target=x86_64-apple-darwin ;;
        MINGW*|MSYS*|CYGWIN*|Windows*)
            fail "on Windows download keyward-x86_64-pc-windows-msvc.zip from the release and put keyward.exe on your PATH" ;;
        *)
            fail "no prebuilt keyward for $os/$arch; build it from source: cargo install --locked --git https://github.com/$repo keyward" ;;
    esac
fi
case "$target" in
    *windows*) fail "install.sh installs the .tar.gz archives; unzip keyward-$target.zip instead" ;;
esac
archive="keyward-$target.tar.gz"

if [ -z "$base_url" ]; then
    if [ "$version" = latest ]; then
        base_url="https://github.com/$repo/releases/latest/download"
    else
        base_url="https://github.com/$repo/releases/download/$version"
    fi
fi
base_url=${base_url%/}

fetch() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
        curl --proto '=https,file' --tlsv1.2 -fsSL --retry 3 -o "$2" "$1" \
            || fail "could not download $1"
    elif command -v wget >/dev/null 2>&1; then
        case "$1" in file://*) cp "${1#file://}" "$2" || fail "could not read $1"; return ;; esac
        wget -q --https-only -O "$2" "$1" || fail "could not download $1"
    else
        fail "needs curl or wget to download $1"
    fi
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        fail "needs sha256sum or shasum to check the download"
    fi
}

tmp=$(mktemp -d 2>/dev/null || mktemp -d -t keyward)
trap 'rm -rf "$tmp"' EXIT INT TERM

say "downloading $archive ($version) from $base_url"
fetch "$base_url/SHA256SUMS" "$tmp/SHA256SUMS"
fetch "$base_url/$archive" "$tmp/$archive"

listed=$(awk -v f="$archive" '$2 == f || $2 == "*" f { print $1 }' "$tmp/SHA256SUMS")
[ -n "$listed" ] || fail "$archive is not listed in SHA256SUMS"
[ "$(printf '%s\n' "$listed" | wc -l)" -eq 1 ] || fail "$archive is listed twice in SHA256SUMS"
actual=$(sha256_of "$tmp/$archive")
[ "$actual" = "$listed" ] \
    || fail "SHA-256 mismatch for $archive: SHA256SUMS says $listed, the download is $actual; nothing installed"
if [ -n "$want_sha" ]; then
    [ "$actual" = "$(printf '%s' "$want_sha" | tr 'A-F' 'a-f')" ] \
        || fail "SHA-256 mismatch for $archive: expected $want_sha (--sha256), the download is $actual; nothing installed"
fi
say "SHA-256 $actual OK"

tar -xzf "$tmp/$archive" -C "$tmp" || fail "could not unpack $archive"
bin="$tmp/keyward-$target/keyward"
[ -f "$bin" ] || fail "$archive has no keyward-$target/keyward"

mkdir -p "$bin_dir" || fail "cannot create $bin_dir"
cp "$bin" "$bin_dir/.keyward.new.$$" && chmod 755 "$bin_dir/.keyward.new.$$" \
    || fail "cannot write to $bin_dir (choose another with --bin-dir)"
mv -f "$bin_dir/.keyward.new.$$" "$bin_dir/keyward" || fail "cannot write $bin_dir/keyward"
say "installed $bin_dir/keyward"

"$bin_dir/keyward" --version || fail "$bin_dir/keyward does not run on this machine"
case ":${PATH:-}:" in
    *":$bin_dir:"*) ;;
    *) say "note: $bin_dir is not on your PATH; add it (e.g. export PATH=\"$bin_dir:\$PATH\")" ;;
esac
