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
# Man pages for the rpm, gzipped as rpm distributions ship them (cargo-deb compresses its own
# copies). -n: no name or time stamp in the header, so the same page gives the same bytes.
mkdir -p "$target_dir/release/man"
for page in packaging/man/*.[58]; do
    gzip -n -9 -c "$page" >"$target_dir/release/man/$(basename "$page").gz"
done
# Both tools rewrite target/release/ in their asset lists to the real target dir.
cargo deb --no-build
cargo generate-rpm
