#!/bin/sh
# Build the release binaries once, then the .deb and the .rpm from them.
#
#   packaging/build.sh              cargo build --release, then both packages
#   packaging/build.sh --no-build   package what is already in the target dir
#
# Honours CARGO_TARGET_DIR. Needs cargo-deb and cargo-generate-rpm
# (`cargo install --locked cargo-deb cargo-generate-rpm`; .ci/packaging.sh installs them).
# Output: <target>/debian/mispd_<version>-1_<arch>.deb, <target>/generate-rpm/mispd-<version>-1.<arch>.rpm
set -eu
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--no-build" ]; then
    cargo build --release
fi
# The release profile keeps symbols; packages ship stripped binaries (rpmlint requires it, and
# cargo-deb would strip its own copy anyway). Stripping in place keeps cargo's build fresh.
target_dir=${CARGO_TARGET_DIR:-target}
strip "$target_dir/release/mispd" "$target_dir/release/mispctl"
# Both tools rewrite target/release/ in their asset lists to the real target dir.
cargo deb --no-build
cargo generate-rpm
