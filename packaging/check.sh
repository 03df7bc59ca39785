#!/usr/bin/env bash
# The packaging check CI runs (a stage of scripts/test.sh). Needs root and a Debian system; it
# installs the .deb on this machine and removes it again, so it refuses to run where aegisfs,
# /etc/aegis or /var/lib/aegis already exist (those would be an admin's, and a purge removes
# files there).
#
#   packaging/check.sh
#
# 1. packaging/build.sh builds the .deb and the .rpm;
# 2. lintian checks the .deb: errors and warnings fail (what does not apply is overridden in
#    packaging/debian/lintian-overrides, each with its reason);
# 3. dpkg -i: aegis --version, aegisd --check-config on the installed /etc/aegis/aegis.toml, a
#    pool formatted with the installed aegis, man -w finds the pages, completions, the aegis
#    group, /var/lib/aegis (0750), the conffile;
# 4. an upgrade (the same files as version <v>-2) keeps an edited config and the state;
# 5. dpkg -r keeps config and state; dpkg -P removes the config and /var/lib/aegis but keeps
#    other files in /etc/aegis (a keyfile); the pool's image files are unchanged throughout;
# 6. the .rpm: rpm -qlp lists it, it holds the .deb's files, aegis.toml is %config(noreplace)
#    and its scriptlets are there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[packaging check] %s\n' "$*"; }
fail() {
    printf '[packaging check] FAILED: %s\n' "$*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail "must run as root (it installs the package)"
if dpkg-query -W -f='${Status}' aegisfs 2>/dev/null | grep -q installed; then
    fail "aegisfs is installed on this machine; the check installs and purges it"
fi
for path in /etc/aegis /var/lib/aegis; do
    [[ ! -e $path ]] || fail "$path exists; the check would purge it"
done

work=$(mktemp -d)
group_existed=0
if getent group aegis >/dev/null; then
    group_existed=1
fi
cleanup() {
    if dpkg-query -W -f='${Status}' aegisfs 2>/dev/null | grep -q 'ok installed\|config-files'; then
        dpkg --purge aegisfs >/dev/null 2>&1 || true
    fi
    rm -rf "$work" /etc/aegis /var/lib/aegis
    if [[ $group_existed -eq 0 ]] && getent group aegis >/dev/null; then
        groupdel aegis || true
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- build
built=$(packaging/build.sh)
mapfile -t packages <<< "$built"
# Copies: building the upgrade below deletes cargo-deb's output.
cp "${packages[0]}" "${packages[1]}" "$work/"
deb=$work/$(basename "${packages[0]}")
rpm=$work/$(basename "${packages[1]}")
version=$(dpkg-deb -f "$deb" Version)
log "built $(basename "$deb") and $(basename "$rpm")"
changelog_version=$(sed -n '1s/^aegisfs (\([^)]*\)).*/\1/p' packaging/debian/changelog)
[[ $changelog_version == "$version" ]] ||
    fail "packaging/debian/changelog is at $changelog_version, the package at $version: add an entry"

# ---------------------------------------------------------------- lintian
log "lintian"
# Overridden tags are shown too (O:, each after its reason); lintian's exit status counts them
# with --show-overrides, so the verdict is taken from the E: and W: lines.
lintian_output=$(lintian --display-info --show-overrides "$deb" 2>&1 | grep -v 'running with root privileges') ||
    fail "lintian did not run"
echo "$lintian_output"
if grep -q '^[EW]: ' <<< "$lintian_output"; then
    fail "lintian reports errors or warnings"
fi

# ---------------------------------------------------------------- install
log "dpkg -i"
dpkg -i "$deb"
aegis_version=$(aegis --version)
[[ $aegis_version == "aegis ${version%-*}" ]] || fail "aegis --version says '$aegis_version'"
log "aegis --version: $aegis_version"
aegisd --check-config --config /etc/aegis/aegis.toml
aegisd --version
aegis-tui --version
for page in aegis aegis-tier-migrate aegis-tui aegisd; do
    man -w "$page" >/dev/null || fail "man -w $page finds no page"
done
log "man -w aegis: $(man -w aegis); aegisd: $(man -w 8 aegisd)"
bash -c 'source /usr/share/bash-completion/completions/aegis && complete -p aegis' >/dev/null ||
    fail "the bash completion of aegis does not load"
[[ -f /usr/share/zsh/vendor-completions/_aegis && -f /usr/share/fish/vendor_completions.d/aegis.fish ]] ||
    fail "zsh or fish completions missing"
[[ -f /usr/lib/systemd/system/aegisd.service ]] || fail "aegisd.service missing"
getent group aegis >/dev/null || fail "group aegis was not created"
[[ $(stat -c %a /var/lib/aegis) == 750 ]] || fail "/var/lib/aegis is not 0750"
dpkg-query -W -f='${Conffiles}' aegisfs | grep -q '/etc/aegis/aegis.toml' ||
    fail "/etc/aegis/aegis.toml is not a conffile"

# A pool on image files, formatted by the installed aegis, and a config naming it: nothing that
# follows may change a byte of it.
aegis format --fast "$work/fast.img" --fast-size 64M --slow "$work/slow.img" --slow-size 128M \
    --label pkgcheck >/dev/null
pool_sums() { sha256sum "$work/fast.img" "$work/slow.img"; }
pool_before=$(pool_sums)
pool_untouched() {
    [[ $(pool_sums) == "$pool_before" ]] || fail "the pool's devices changed ($1)"
}
sed -e "s#/dev/disk/by-partlabel/aegis-fast#$work/fast.img#" \
    -e "s#/dev/disk/by-partlabel/aegis-slow#$work/slow.img#" \
    -e "s#^mountpoint = .*#mountpoint = \"$work/mnt\"#" \
    -e '$a # edited by the packaging check' \
    systemd/aegis.toml > /etc/aegis/aegis.toml
aegisd --check-config --config /etc/aegis/aegis.toml >/dev/null
config_sum=$(sha256sum /etc/aegis/aegis.toml)
echo state > /var/lib/aegis/aegis.db
echo key > /etc/aegis/pkgcheck.key

# ---------------------------------------------------------------- upgrade
log "upgrade to ${version%-*}-2"
cargo deb --package aegisfs --no-build --locked --deb-version "${version%-*}-2" \
    --output "$work/upgrade.deb" >/dev/null 2>&1
# cargo-deb deletes the package's other versions from its output directory: put back the one
# build.sh made.
cp "$deb" "${packages[0]}"
dpkg -i --force-confdef --force-confold "$work/upgrade.deb"
[[ $(dpkg-query -W -f='${Version}' aegisfs) == "${version%-*}-2" ]] || fail "the upgrade did not happen"
[[ $(sha256sum /etc/aegis/aegis.toml) == "$config_sum" ]] || fail "the upgrade changed the edited config"
[[ $(cat /var/lib/aegis/aegis.db) == state ]] || fail "the upgrade changed the state"
pool_untouched "upgrade"

# ---------------------------------------------------------------- remove, purge
log "dpkg -r"
dpkg -r aegisfs
[[ ! -e /usr/bin/aegis ]] || fail "dpkg -r left /usr/bin/aegis"
[[ $(sha256sum /etc/aegis/aegis.toml) == "$config_sum" ]] || fail "dpkg -r changed the config"
[[ $(cat /var/lib/aegis/aegis.db) == state ]] || fail "dpkg -r changed the state"
pool_untouched "remove"

log "dpkg -P"
dpkg -P aegisfs
[[ ! -e /etc/aegis/aegis.toml ]] || fail "dpkg -P left the conffile"
[[ ! -e /var/lib/aegis ]] || fail "dpkg -P left /var/lib/aegis"
[[ -f /etc/aegis/pkgcheck.key ]] || fail "dpkg -P removed a keyfile in /etc/aegis"
pool_untouched "purge"
log "remove kept config and state, purge removed them but not the keyfile; the pool is untouched"

# ---------------------------------------------------------------- rpm
log "rpm -qlp $(basename "$rpm")"
rpm -qlp "$rpm" | tee "$work/rpm.files"
# The .deb's files, with Debian's places mapped to Fedora's; the changelog, copyright and
# lintian overrides are Debian's own.
dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -n 's#^\./\(.*[^/]\)$#/\1#p' |
    grep -v -e '^/usr/share/doc/aegisfs/changelog' -e '^/usr/share/doc/aegisfs/copyright' \
        -e '^/usr/share/lintian/' |
    sed 's#^/usr/share/zsh/vendor-completions/#/usr/share/zsh/site-functions/#' |
    sort > "$work/deb.files"
diff -u "$work/deb.files" <(sort "$work/rpm.files") || fail "the .rpm and the .deb hold different files"
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" | grep -qx 'cn /etc/aegis/aegis.toml' ||
    fail "/etc/aegis/aegis.toml is not %config(noreplace) in the .rpm"
for scriptlet in preinstall postinstall preuninstall postuninstall; do
    rpm -qp --scripts "$rpm" | grep -q "^$scriptlet scriptlet" || fail "the .rpm has no $scriptlet scriptlet"
done
rpm -qp --requires "$rpm" | grep -q '^fuse3' || fail "the .rpm does not require fuse3"

log "ok: $(basename "$deb") ($(stat -c %s "$deb") bytes), $(basename "$rpm") ($(stat -c %s "$rpm") bytes)"
