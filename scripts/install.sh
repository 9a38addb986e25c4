#!/usr/bin/env bash
# Installs vswitch like a service, or takes it away again:
#
#   sudo scripts/install.sh [--prefix /usr/local] [--destdir DIR] [--bin-dir DIR] [--enable]
#   sudo scripts/install.sh --uninstall [--prefix /usr/local] [--destdir DIR]
#
# Installs vswitchd and vswitchctl in PREFIX/bin and the CNI plugin vswitch-cni in
# PREFIX/lib/cni (built with `cargo build --release` unless --bin-dir names where they are),
# an example CNI network list in PREFIX/share/vswitch, the config /etc/vswitch/vswitchd.toml (from
# configs/default.toml) unless one is there, bash/zsh/fish completions and man pages (made by
# the installed vswitchctl), and the systemd unit /etc/systemd/system/vswitchd.service. Every
# file and directory it makes is written to PREFIX/share/vswitch/install-manifest;
# --uninstall removes exactly those (a config that was changed since is kept, and said so) and
# nothing else. --destdir installs under DIR (for packaging and tests: nothing outside it is
# touched, systemctl is never run). --enable (real root only) runs `systemctl daemon-reload`
# and `systemctl enable --now vswitchd`.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
destdir=
bin_dir=
uninstall=0
enable=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --destdir) destdir="${2%/}"; shift 2 ;;
        --bin-dir) bin_dir="$2"; shift 2 ;;
        --uninstall) uninstall=1; shift ;;
        --enable) enable=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 2 ;; esac

root="$destdir"
manifest_rel="$prefix/share/vswitch/install-manifest"
manifest="$root$manifest_rel"
systemd_unit_rel=/etc/systemd/system/vswitchd.service
config_rel=/etc/vswitch/vswitchd.toml

if [ "$uninstall" = 1 ]; then
    if [ ! -f "$manifest" ]; then
        echo "install.sh: nothing to uninstall ($manifest not found)" >&2
        exit 1
    fi
    if [ -z "$destdir" ] && command -v systemctl >/dev/null && grep -qx "file $systemd_unit_rel" "$manifest"; then
        systemctl disable --now vswitchd 2>/dev/null || true
    fi
    # Files first, then the directories made for them, deepest first.
    while read -r kind path sum; do
        case "$kind" in
            file) rm -f "$root$path" ;;
            conf)
                if [ -f "$root$path" ] && [ "$(sha256sum < "$root$path" | cut -d' ' -f1)" != "$sum" ]; then
                    echo "install.sh: $root$path was changed since it was installed: kept" >&2
                else
                    rm -f "$root$path"
                fi ;;
        esac
    done < "$manifest"
    made=()
    if [ -f "$manifest.dirs" ]; then mapfile -t made < "$manifest.dirs"; fi
    rm -f "$manifest" "$manifest.dirs"
    for ((i = ${#made[@]} - 1; i >= 0; i--)); do
        rmdir "$root${made[$i]}" 2>/dev/null || true
    done
    if [ -z "$destdir" ] && command -v systemctl >/dev/null; then
        systemctl daemon-reload 2>/dev/null || true
    fi
    echo "vswitch uninstalled from $root$prefix" >&2
    exit 0
fi

if [ -z "$bin_dir" ]; then
    cargo build --release -p vswitch -p vswitchctl -p vswitch-cni
    bin_dir=target/release
fi
for b in vswitchd vswitchctl vswitch-cni; do
    [ -x "$bin_dir/$b" ] || { echo "install.sh: $bin_dir/$b not found" >&2; exit 1; }
done

entries=()
dirs=()
# Makes the directory (rel: without DESTDIR) and records each component it created.
ensure_dir() {
    local d="$1" missing=()
    while [ ! -d "$root$d" ]; do
        missing=("$d" "${missing[@]}")
        d="$(dirname "$d")"
    done
    for m in "${missing[@]}"; do
        mkdir -m 0755 "$root$m"
        dirs+=("$m")
    done
}
# Installs SRC as REL (mode MODE) and records it.
put() {
    local src="$1" rel="$2" mode="$3"
    ensure_dir "$(dirname "$rel")"
    install -m "$mode" "$src" "$root$rel"
    entries+=("file $rel")
}

ensure_dir "$(dirname "$manifest_rel")"
if [ -f "$manifest" ]; then
    echo "install.sh: already installed ($manifest); --uninstall first" >&2
    exit 1
fi
put "$bin_dir/vswitchd" "$prefix/bin/vswitchd" 0755
put "$bin_dir/vswitchctl" "$prefix/bin/vswitchctl" 0755
# The CNI plugin where podman and libcni look by default (PREFIX/lib/cni), and an example
# network list to copy into a runtime's network config dir.
put "$bin_dir/vswitch-cni" "$prefix/lib/cni/vswitch-cni" 0755
put configs/vswitch.conflist "$prefix/share/vswitch/vswitch.conflist" 0644
ctl="$root$prefix/bin/vswitchctl"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$ctl" completion bash > "$tmp/vswitchctl.bash"
"$ctl" completion zsh > "$tmp/_vswitchctl"
"$ctl" completion fish > "$tmp/vswitchctl.fish"
put "$tmp/vswitchctl.bash" "$prefix/share/bash-completion/completions/vswitchctl" 0644
put "$tmp/_vswitchctl" "$prefix/share/zsh/site-functions/_vswitchctl" 0644
put "$tmp/vswitchctl.fish" "$prefix/share/fish/vendor_completions.d/vswitchctl.fish" 0644
mkdir "$tmp/man"
"$ctl" man --dir "$tmp/man"
for page in "$tmp"/man/*.1; do
    put "$page" "$prefix/share/man/man1/$(basename "$page")" 0644
done

sed "s|^ExecStart=/usr/local/bin/vswitchd|ExecStart=$prefix/bin/vswitchd|" configs/vswitchd.service > "$tmp/vswitchd.service"
put "$tmp/vswitchd.service" "$systemd_unit_rel" 0644

if [ -e "$root$config_rel" ]; then
    echo "install.sh: $root$config_rel exists: kept as it is" >&2
else
    ensure_dir "$(dirname "$config_rel")"
    install -m 0644 configs/default.toml "$root$config_rel"
    entries+=("conf $config_rel $(sha256sum < "$root$config_rel" | cut -d' ' -f1)")
fi

printf '%s\n' "${entries[@]}" > "$manifest"
if [ ${#dirs[@]} -gt 0 ]; then printf '%s\n' "${dirs[@]}" > "$manifest.dirs"; fi
echo "vswitch installed in $root$prefix (manifest: $manifest)" >&2

if [ "$enable" = 1 ]; then
    if [ -n "$destdir" ]; then
        echo "install.sh: --enable is for a real install, not under --destdir" >&2
    elif command -v systemctl >/dev/null; then
        systemctl daemon-reload
        systemctl enable --now vswitchd
    else
        echo "install.sh: no systemctl here: start $prefix/bin/vswitchd yourself" >&2
    fi
fi
