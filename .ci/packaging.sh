#!/usr/bin/env bash
# Packaging CI for mispd: builds the .deb and .rpm, lints them, checks the systemd units, and
# (on a throwaway CI machine, as root) installs, upgrades, removes and purges the .deb.
#
#   .ci/packaging.sh                       build release binaries, then everything below
#   .ci/packaging.sh --no-build            use the binaries already in the target dir
#   CARGO_TARGET_DIR=/x .ci/packaging.sh   prebuilt (or build) target dir elsewhere
#
# The install test changes the machine (installs mispd, creates the mispd user): it runs only
# as root with CI=true or MISPD_PKG_INSTALL_TEST=1, and prints SKIP otherwise.
# Prints one PASS/FAIL/SKIP line per check and exits non-zero if any check failed.
set -uo pipefail

cd "$(dirname "$0")/.."
root_dir=$PWD
target_dir=${CARGO_TARGET_DIR:-$root_dir/target}
case "$target_dir" in /*) ;; *) target_dir=$root_dir/$target_dir ;; esac
export CARGO_TARGET_DIR=$target_dir
build=1
[ "${1:-}" = "--no-build" ] && build=0

max_exposure=1.2
cargo_deb_version=3.8.0
cargo_rpm_version=0.21.1

started=$(date +%s)
passed=0
failed=0
skipped=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
skip() { echo "SKIP: $*"; skipped=$((skipped + 1)); }
step() { echo; echo "== $* ($(( $(date +%s) - started ))s)"; }
# check DESCRIPTION COMMAND...: PASS if the command succeeds.
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

finish() {
    echo
    echo "packaging: $(( $(date +%s) - started ))s"
    echo "packaging: $passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]
    exit $?
}

# ---------------------------------------------------------------------------------------------
step "tools"
missing_apt=()
command -v lintian >/dev/null || missing_apt+=(lintian)
command -v rpm >/dev/null || missing_apt+=(rpm)
command -v rpmlint >/dev/null || missing_apt+=(rpmlint)
command -v strip >/dev/null || missing_apt+=(binutils)
command -v systemd-analyze >/dev/null || missing_apt+=(systemd)
if [ ${#missing_apt[@]} -gt 0 ]; then
    echo "installing ${missing_apt[*]} with apt-get"
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_apt[@]}" >/dev/null
    else
        echo "not root: cannot install ${missing_apt[*]}"
    fi
fi
if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb $cargo_deb_version"
    cargo install --locked --quiet cargo-deb --version "$cargo_deb_version"
fi
if ! cargo generate-rpm --version >/dev/null 2>&1; then
    echo "installing cargo-generate-rpm $cargo_rpm_version"
    cargo install --locked --quiet cargo-generate-rpm --version "$cargo_rpm_version"
fi
for tool in lintian rpm rpmlint strip systemd-analyze; do
    command -v "$tool" >/dev/null || { fail "tool $tool is available"; finish; }
done
for sub in deb generate-rpm; do
    cargo "$sub" --version >/dev/null 2>&1 || { fail "tool cargo-$sub is available"; finish; }
done
pass "tools: $(cargo deb --version), $(cargo generate-rpm --version), $(rpmlint --version 2>/dev/null | head -1 | tr -s ' '), lintian $(lintian --version | awk '{print $2}')"

# ---------------------------------------------------------------------------------------------
step "build"
if [ "$build" -eq 1 ]; then
    if cargo build --release --quiet; then pass "cargo build --release"; else fail "cargo build --release"; finish; fi
fi
for bin in mispd mispctl; do
    [ -x "$target_dir/release/$bin" ] || { fail "binary $target_dir/release/$bin exists"; finish; }
done
rm -f "$target_dir"/debian/mispd_*.deb "$target_dir"/generate-rpm/mispd-*.rpm
if packaging/build.sh --no-build >"$target_dir/packaging-build.log" 2>&1; then
    pass "packaging/build.sh: deb and rpm built"
else
    cat "$target_dir/packaging-build.log"
    fail "packaging/build.sh"
    finish
fi
deb=$(ls "$target_dir"/debian/mispd_*.deb | head -1)
rpm=$(ls "$target_dir"/generate-rpm/mispd-*.rpm | head -1)
echo "deb: $deb ($(du -k "$deb" | cut -f1) KiB)"
echo "rpm: $rpm ($(du -k "$rpm" | cut -f1) KiB)"

# ---------------------------------------------------------------------------------------------
step "lintian"
# Errors fail the build; warnings are printed. Overrides: packaging/lintian-overrides (shipped).
lintian_out=$(lintian --pedantic --display-info "$deb" 2>&1); lintian_rc=$?
[ -n "$lintian_out" ] && echo "$lintian_out"
lintian_errors=$(printf '%s\n' "$lintian_out" | grep -c '^E:')
lintian_warnings=$(printf '%s\n' "$lintian_out" | grep -c '^W:')
if [ "$lintian_rc" -eq 0 ] && [ "$lintian_errors" -eq 0 ]; then
    pass "lintian: $lintian_errors errors, $lintian_warnings warnings"
else
    fail "lintian: $lintian_errors errors, $lintian_warnings warnings (exit $lintian_rc)"
fi

step "rpmlint"
rpmlint_out=$(rpmlint -c packaging/rpm/rpmlint.toml -r packaging/rpm/rpmlintrc "$rpm" 2>&1); rpmlint_rc=$?
printf '%s\n' "$rpmlint_out" | grep -E '^mispd|packages and'
rpmlint_summary=$(printf '%s\n' "$rpmlint_out" | grep 'packages and' | sed 's/.*checked; //; s/, 0 badness.*//; s/; has taken.*//')
if [ "$rpmlint_rc" -eq 0 ] && printf '%s\n' "$rpmlint_out" | grep -q ' 0 errors'; then
    pass "rpmlint: $rpmlint_summary"
else
    fail "rpmlint: $rpmlint_summary (exit $rpmlint_rc)"
fi

step "rpm contents"
rpm_list=$(rpm -qlvp "$rpm" 2>/dev/null)
rpm_has() { printf '%s\n' "$rpm_list" | grep -qE "^$1 .* $2\$"; }
check "rpm: /usr/bin/mispd 0755 root" rpm_has '-rwxr-xr-x +1 root +root' /usr/bin/mispd
check "rpm: /usr/bin/mispctl 0755 root" rpm_has '-rwxr-xr-x +1 root +root' /usr/bin/mispctl
check "rpm: mispd.service in /usr/lib/systemd/system" rpm_has '-rw-r--r--' /usr/lib/systemd/system/mispd.service
check "rpm: mispd.socket in /usr/lib/systemd/system" rpm_has '-rw-r--r--' /usr/lib/systemd/system/mispd.socket
check "rpm: sysusers.d and tmpfiles.d" rpm_has '-rw-r--r--' /usr/lib/sysusers.d/mispd.conf
check "rpm: mispd.toml is %config(noreplace)" \
    bash -c "rpm -qp --queryformat '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' '$rpm' | grep -q '^cn /etc/mispd/mispd.toml$'"
check "rpm: man pages gzipped in /usr/share/man" bash -c "rpm -qlp '$rpm' | grep -qx /usr/share/man/man8/mispd.8.gz && rpm -qlp '$rpm' | grep -qx /usr/share/man/man5/mispd.toml.5.gz"
check "rpm: completions for bash, zsh, fish" bash -c "[ \$(rpm -qlp '$rpm' | grep -cE '^/usr/share/(bash-completion/completions/mispctl|zsh/site-functions/_mispctl|fish/vendor_completions.d/mispctl.fish)\$') = 3 ]"
check "rpm: scriptlets parse (sh -n)" bash -c 'for f in packaging/rpm/*.sh; do sh -n "$f" || exit 1; done'
check "rpm: requires glibc >= 2.34 only (EL9+/Fedora)" \
    bash -c "! rpm -qpR '$rpm' | grep -E 'GLIBC_2\.(3[5-9]|[4-9][0-9])'"

# ---------------------------------------------------------------------------------------------
step "default configuration"
if command -v python3 >/dev/null && python3 -c 'import tomllib' 2>/dev/null; then
    check "packaging/mispd.toml: sections, no active source, examples use the agreed keys" \
        python3 packaging/check_config_example.py packaging/mispd.toml
else
    skip "packaging/mispd.toml structure check: needs python3 >= 3.11 (tomllib)"
fi
check "mispctl check-config packaging/mispd.toml" "$target_dir/release/mispctl" check-config packaging/mispd.toml

# ---------------------------------------------------------------------------------------------
step "systemd units"
security_out=$(systemd-analyze security --offline=yes --no-pager systemd/mispd.service 2>&1)
exposure=$(printf '%s\n' "$security_out" | sed -n 's/.*Overall exposure level for mispd.service: \([0-9.]*\).*/\1/p')
if [ -n "$exposure" ] && awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e <= m) }'; then
    pass "systemd-analyze security: exposure $exposure <= $max_exposure"
else
    printf '%s\n' "$security_out" | grep '✗'
    fail "systemd-analyze security: exposure '${exposure:-?}' > $max_exposure"
fi

# verify needs ExecStart's binary to exist: a copy of the units pointing at the built binary, with
# the example drop-in enabled so its syntax is checked too.
unit_dir=$(mktemp -d)
sed "s|^ExecStart=/usr/bin/mispd|ExecStart=$target_dir/release/mispd|" systemd/mispd.service >"$unit_dir/mispd.service"
cp systemd/mispd.socket "$unit_dir/"
mkdir -p "$unit_dir/mispd.service.d"
cp systemd/mispd.service.d/second-source.conf.example "$unit_dir/mispd.service.d/second-source.conf"
verify_out=$(cd "$unit_dir" && SYSTEMD_UNIT_PATH="$unit_dir:" systemd-analyze verify --man=no mispd.service mispd.socket 2>&1); verify_rc=$?
rm -rf "$unit_dir"
if [ "$verify_rc" -eq 0 ] && [ -z "$verify_out" ]; then
    pass "systemd-analyze verify mispd.service mispd.socket (+ example drop-in): clean"
else
    echo "$verify_out"
    fail "systemd-analyze verify (exit $verify_rc)"
fi
# sysusers.d + tmpfiles.d applied to an empty root: the user appears, the directories get their modes.
check_snippets() {
    local d rc=0; d=$(mktemp -d); mkdir -p "$d/etc"
    systemd-sysusers --root="$d" "$root_dir/systemd/sysusers.d/mispd.conf" >/dev/null 2>&1 || rc=1
    grep -q '^mispd:' "$d/etc/passwd" || rc=1
    systemd-tmpfiles --root="$d" --create "$root_dir/systemd/tmpfiles.d/mispd.conf" >/dev/null 2>&1 || rc=1
    [ "$(stat -c %a "$d/etc/mispd/credentials" 2>/dev/null)" = 700 ] || rc=1
    [ "$(stat -c %a "$d/var/lib/mispd" 2>/dev/null)" = 750 ] || rc=1
    rm -rf "$d"; return $rc
}
check "sysusers.d and tmpfiles.d apply cleanly to an empty root" check_snippets

# ---------------------------------------------------------------------------------------------
step "install test (.deb)"
if [ "$(id -u)" -ne 0 ] || { [ "${CI:-}" != "true" ] && [ "${MISPD_PKG_INSTALL_TEST:-}" != "1" ]; }; then
    skip "install test: needs root and CI=true or MISPD_PKG_INSTALL_TEST=1 (it installs mispd on this machine)"
    finish
fi
echo "PID 1 is $(ps -p 1 -o comm= 2>/dev/null || echo '?'); systemd running: $([ -d /run/systemd/system ] && echo yes || echo no)"
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef)
if dpkg -s mispd >/dev/null 2>&1; then
    echo "removing a mispd left installed by an earlier run"
    apt-get purge "${apt_opts[@]}" mispd >/dev/null 2>&1
fi
rm -f /etc/mispd/credentials/ci-test-key

mode_of() { stat -c '%a %U:%G' "$1" 2>/dev/null; }
expect_mode() { # PATH "MODE USER:GROUP"
    local got; got=$(mode_of "$1")
    if [ "$got" = "$2" ]; then pass "$1 is $2"; else fail "$1 is '$got', expected $2"; fi
}

if apt-get install "${apt_opts[@]}" "$deb" >"$target_dir/apt-install.log" 2>&1; then
    pass "apt-get install $(basename "$deb")"
else
    cat "$target_dir/apt-install.log"
    fail "apt-get install $(basename "$deb")"
    finish
fi
grep -q "installed and enabled but not started" "$target_dir/apt-install.log" \
    && pass "postinst says the service is enabled, not started" \
    || fail "postinst did not print its not-started notice"

expect_mode /usr/bin/mispd "755 root:root"
expect_mode /usr/bin/mispctl "755 root:root"
expect_mode /usr/lib/systemd/system/mispd.service "644 root:root"
expect_mode /usr/lib/systemd/system/mispd.socket "644 root:root"
expect_mode /usr/lib/sysusers.d/mispd.conf "644 root:root"
expect_mode /usr/lib/tmpfiles.d/mispd.conf "644 root:root"
expect_mode /etc/mispd/mispd.toml "644 root:root"
expect_mode /etc/mispd/allowlist.txt "644 root:root"
expect_mode /etc/mispd/credentials "700 root:root"
expect_mode /var/lib/mispd "750 mispd:mispd"
check "/usr/share/mispd/warninglists exists" test -d /usr/share/mispd/warninglists
check "docs and copyright in /usr/share/doc/mispd" \
    test -f /usr/share/doc/mispd/copyright -a -f /usr/share/doc/mispd/changelog.Debian.gz -a -f /usr/share/doc/mispd/operations.md
check "conffiles registered" bash -c 'dpkg-query -W -f="\${Conffiles}\n" mispd | grep -q /etc/mispd/mispd.toml'
check "user mispd: system account, no login shell" \
    bash -c 'u=$(getent passwd mispd) && [ "$(echo "$u" | cut -d: -f3)" -lt 1000 ] && echo "$u" | grep -q nologin'
check "group mispd exists" bash -c 'getent group mispd >/dev/null'
check "mispd.service enabled (multi-user.target.wants)" test -L /etc/systemd/system/multi-user.target.wants/mispd.service
check "mispd.socket enabled (sockets.target.wants)" test -L /etc/systemd/system/sockets.target.wants/mispd.socket
# Only the installed binary counts: test suites may run other mispd builds on this machine.
check "mispd not started by the package" bash -c '! pgrep -f "^/usr/bin/mispd( |\$)" >/dev/null'
version_out=$(/usr/bin/mispd --version 2>&1)
check "mispd --version: $version_out" grep -qE '[0-9]+\.[0-9]+\.[0-9]+' <<<"$version_out"
version_out=$(/usr/bin/mispctl --version 2>&1)
check "mispctl --version: $version_out" grep -qE '[0-9]+\.[0-9]+\.[0-9]+' <<<"$version_out"
check "mispctl check-config /etc/mispd/mispd.toml (shipped default)" /usr/bin/mispctl check-config /etc/mispd/mispd.toml
check "man pages installed gzipped" test -f /usr/share/man/man8/mispd.8.gz -a -f /usr/share/man/man8/mispctl.8.gz -a -f /usr/share/man/man5/mispd.toml.5.gz
check "completions installed (bash, zsh, fish)" test -f /usr/share/bash-completion/completions/mispctl -a -f /usr/share/zsh/vendor-completions/_mispctl -a -f /usr/share/fish/vendor_completions.d/mispctl.fish

# Upgrade to a newer revision of the same build: a locally edited conffile, a key and the state
# survive, without a conffile prompt.
echo "# edited by ci" >>/etc/mispd/mispd.toml
install -m 0600 /dev/null /etc/mispd/credentials/ci-test-key
echo snapshot >/var/lib/mispd/ci-test-state
upgrade_dir=$target_dir/debian-upgrade-test
rm -rf "$upgrade_dir"; mkdir -p "$upgrade_dir"
if cargo deb --no-build --quiet --deb-revision 99 -o "$upgrade_dir/" >/dev/null 2>&1 \
    && apt-get install "${apt_opts[@]}" "$upgrade_dir"/mispd_*-99_*.deb >"$target_dir/apt-upgrade.log" 2>&1; then
    pass "upgrade $(dpkg-query -W -f='${Version}' mispd) over the first install"
else
    cat "$target_dir/apt-upgrade.log" 2>/dev/null
    fail "upgrade to revision 99"
fi
rm -rf "$upgrade_dir"
check "upgrade keeps the service enabled" test -L /etc/systemd/system/multi-user.target.wants/mispd.service
check "upgrade keeps the edited config" grep -q "edited by ci" /etc/mispd/mispd.toml
check "upgrade keeps the key file and its mode" bash -c '[ "$(stat -c %a /etc/mispd/credentials/ci-test-key)" = 600 ]'

if apt-get remove "${apt_opts[@]}" mispd >"$target_dir/apt-remove.log" 2>&1; then
    pass "apt-get remove mispd"
else
    cat "$target_dir/apt-remove.log"
    fail "apt-get remove mispd"
fi
check "remove: binaries gone" test ! -e /usr/bin/mispd -a ! -e /usr/bin/mispctl
check "remove: unit files gone" test ! -e /usr/lib/systemd/system/mispd.service
check "remove: config kept" grep -q "edited by ci" /etc/mispd/mispd.toml
check "remove: API key kept" test -f /etc/mispd/credentials/ci-test-key
check "remove: state kept" test -f /var/lib/mispd/ci-test-state
check "remove: package in state rc" bash -c '[ "$(dpkg-query -W -f="\${db:Status-Abbrev}" mispd 2>/dev/null | tr -d " ")" = rc ]'

if apt-get purge "${apt_opts[@]}" mispd >"$target_dir/apt-purge.log" 2>&1; then
    pass "apt-get purge mispd"
else
    cat "$target_dir/apt-purge.log"
    fail "apt-get purge mispd"
fi
check "purge: state /var/lib/mispd deleted" test ! -e /var/lib/mispd
check "purge: conffiles deleted" test ! -e /etc/mispd/mispd.toml -a ! -e /etc/mispd/allowlist.txt
check "purge: operator's API key kept (may be the only copy)" test -f /etc/mispd/credentials/ci-test-key
check "purge: enablement symlinks removed" test ! -e /etc/systemd/system/multi-user.target.wants/mispd.service
check "purge: package gone from dpkg" bash -c '! dpkg -s mispd >/dev/null 2>&1'
rm -f /etc/mispd/credentials/ci-test-key
rmdir /etc/mispd/credentials /etc/mispd 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
step "install test (.rpm scriptlets, private rpm database)"
# rpm on Debian, with its own database and --nodeps: the point is to run the scriptlets for real
# (useradd in %pre, directories and enable in %post, disable in %preun) on a host without the user.
userdel mispd >/dev/null 2>&1; groupdel mispd >/dev/null 2>&1
rpm_db=$(mktemp -d)
rpm_cmd=(rpm --dbpath "$rpm_db")
if "${rpm_cmd[@]}" --initdb && "${rpm_cmd[@]}" -i --nodeps --force-debian "$rpm" >"$target_dir/rpm-install.log" 2>&1; then
    pass "rpm -i $(basename "$rpm")"
else
    cat "$target_dir/rpm-install.log"
    fail "rpm -i $(basename "$rpm")"
fi
check "rpm %pre: user mispd created with useradd" bash -c 'getent passwd mispd | grep -q nologin'
expect_mode /usr/bin/mispd "755 root:root"
expect_mode /etc/mispd/mispd.toml "644 root:root"
expect_mode /etc/mispd/credentials "700 root:root"
expect_mode /var/lib/mispd "750 mispd:mispd"
check "rpm %post: mispd.service enabled" test -L /etc/systemd/system/multi-user.target.wants/mispd.service
check "rpm %post: mispd.socket enabled" test -L /etc/systemd/system/sockets.target.wants/mispd.socket
check "rpm: mispd not started" bash -c '! pgrep -f "^/usr/bin/mispd( |\$)" >/dev/null'
echo snapshot >/var/lib/mispd/ci-test-state
if "${rpm_cmd[@]}" -e mispd >"$target_dir/rpm-erase.log" 2>&1; then pass "rpm -e mispd"; else cat "$target_dir/rpm-erase.log"; fail "rpm -e mispd"; fi
check "rpm -e: binaries gone" test ! -e /usr/bin/mispd
check "rpm -e: units disabled" test ! -e /etc/systemd/system/multi-user.target.wants/mispd.service -a ! -e /etc/systemd/system/sockets.target.wants/mispd.socket
check "rpm -e: state kept (rpm has no purge)" test -f /var/lib/mispd/ci-test-state
rm -rf "$rpm_db" /var/lib/mispd /etc/mispd
userdel mispd >/dev/null 2>&1 || true

finish
