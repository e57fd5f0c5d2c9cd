#!/bin/sh
# Install shrike from this checkout, as root, on Debian 12 or Ubuntu 22.04/24.04 (or newer).
# Run ./install.sh --help for what it does; running it again upgrades in place.
set -eu

PREFIX=/opt/shrike                # the virtual environment shrike lives in
BIN_DIR=/usr/local/bin            # where examples/shrike.service finds shrike
STATE_DIR=/var/lib/shrike         # the embedded store: kept unless --purge
MANIFEST=$PREFIX/installed-dirs   # folders this installer created, removed on uninstall
PYTHON=/usr/bin/python3           # the distribution's Python, whatever else is on PATH
PROGRAMS="shrike oam-docker-ipam"
PACKAGES="python3 python3-venv"
# What the test suite needs (the README's test line); debootstrap for tests/test_install.py.
TEST_PACKAGES="docker.io apparmor etcd-server busybox-static iproute2 openssl zsh fish systemd debootstrap strace"

usage() {
    cat <<EOF
Usage: ./install.sh [--test] | --uninstall [--purge] | --help

Installs shrike from this checkout (as root, on Debian 12, Ubuntu 22.04 or newer):
  - the distribution's packages it needs, if missing: $PACKAGES;
  - a virtual environment $PREFIX with shrike and its Python dependencies
    (from the package index pip is configured for), using $PYTHON;
  - the commands $BIN_DIR/shrike and $BIN_DIR/oam-docker-ipam (links into $PREFIX);
  - bash, zsh and fish completions (see completions/README.md).
Running it again upgrades shrike in place; the state in $STATE_DIR is kept.

Options:
  --test       also install what the tests need: the packages
               $TEST_PACKAGES
               and pytest (the [test] extra) into $PREFIX
  --uninstall  remove what the installer added (the links, the completions,
               $PREFIX); the state in $STATE_DIR and the distribution's
               packages stay
  --purge      with --uninstall: remove the state in $STATE_DIR too
  -h, --help   show this and exit
EOF
}

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
usage_error() {
    say "error: $*"
    echo "Try './install.sh --help'." >&2
    exit 2
}

# Where each shell looks for completions, for each program (see completions/README.md).
completion_files() {
    for program in $PROGRAMS; do
        echo "completions/$program.bash /usr/share/bash-completion/completions/$program"
        echo "completions/$program.zsh /usr/local/share/zsh/site-functions/_$program"
        echo "completions/$program.fish /usr/share/fish/vendor_completions.d/$program.fish"
    done
}

# Whether $1 is a link this installer made (into $PREFIX).
our_link() {
    [ -L "$1" ] && case $(readlink "$1") in "$PREFIX"/*) true ;; *) false ;; esac
}

# The distribution packages among "$@" that are not installed.
missing_packages() {
    for package in "$@"; do
        status=$(dpkg-query -W -f '${Status}' "$package" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || printf '%s ' "$package"
    done
}

install_packages() {
    missing=$(missing_packages "$@")
    [ -n "$missing" ] || return 0
    command -v apt-get >/dev/null || die "no apt-get: this installer is for Debian and Ubuntu; install $missing yourself"
    say "installing the distribution's packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086  # one word per package
    apt-get install -y -q --no-install-recommends $missing
}

# mkdir -p "$1", noting in $created each folder it had to make.
make_dir() {
    dir=$1
    while [ ! -d "$dir" ]; do
        created="$created$dir
"
        dir=$(dirname "$dir")
    done
    mkdir -p "$1"
}

python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

# The checkout, copied without build leftovers: pip then builds exactly this source,
# and nothing is written into the checkout.
copy_source() {
    tar -C "$SOURCE" --exclude=.git --exclude=.venv --exclude=build --exclude=dist --exclude='*.egg-info' \
        --exclude=__pycache__ --exclude='.*_cache' -cf - . | tar -C "$1" -xf -
}

do_install() {
    [ -f "$SOURCE/pyproject.toml" ] && [ -d "$SOURCE/shrike_cli" ] ||
        die "$SOURCE is not a shrike checkout (run the install.sh of one)"
    for program in $PROGRAMS; do
        if [ -e "$BIN_DIR/$program" ] || [ -L "$BIN_DIR/$program" ]; then
            our_link "$BIN_DIR/$program" ||
                die "$BIN_DIR/$program exists and is not this installer's (from 'pip install'? 'pip uninstall shrike' removes it); nothing was changed"
        fi
    done
    if [ -e "$PREFIX" ] && [ ! -f "$PREFIX/pyvenv.cfg" ]; then
        die "$PREFIX exists and is not a virtual environment; nothing was changed"
    fi

    packages=$PACKAGES
    extra=""
    if [ "$with_tests" = yes ]; then
        packages="$packages $TEST_PACKAGES"
        extra="[test]"
    fi
    # shellcheck disable=SC2086  # one word per package
    install_packages $packages

    version=$(python_version "$PYTHON") || die "$PYTHON does not run"
    case $version in
    3.[0-9]) die "shrike needs Python 3.10 or newer; $PYTHON is $version (Debian 12 and Ubuntu 22.04 have one)" ;;
    esac

    created=$(cat "$MANIFEST" 2>/dev/null || true)
    [ -z "$created" ] || created="$created
"
    # A venv made by another Python (the distribution was upgraded) no longer runs: make it again.
    if [ -f "$PREFIX/pyvenv.cfg" ] && [ "$(python_version "$PREFIX/bin/python" || true)" != "$version" ]; then
        say "$PREFIX was made by another Python: making it again"
        rm -rf "$PREFIX"
    fi
    if [ ! -d "$PREFIX" ]; then
        make_dir "$(dirname "$PREFIX")"
        say "creating the virtual environment $PREFIX (Python $version)"
        "$PYTHON" -m venv "$PREFIX"
    fi

    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    copy_source "$build"
    say "installing shrike$extra into $PREFIX (pip)"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$PREFIX/bin/python" -m pip install --quiet --upgrade "$build$extra"
    rm -rf "$build"
    trap - EXIT

    for program in $PROGRAMS; do
        ln -sfn "$PREFIX/bin/$program" "$BIN_DIR/$program"
    done
    while read -r file target; do
        make_dir "$(dirname "$target")"
        install -m 644 "$SOURCE/$file" "$target"
    done <<EOF
$(completion_files)
EOF
    printf '%s' "$created" >"$MANIFEST"

    installed=$("$BIN_DIR/shrike" --version) || die "$BIN_DIR/shrike --version failed after the install"
    say "installed $installed in $PREFIX; $BIN_DIR/shrike and $BIN_DIR/oam-docker-ipam run it"
    if command -v systemctl >/dev/null && systemctl is-active --quiet shrike.service 2>/dev/null; then
        say "shrike.service runs the old version until 'systemctl restart shrike.service'"
    fi
}

do_uninstall() {
    for program in $PROGRAMS; do
        if our_link "$BIN_DIR/$program"; then
            rm -f "$BIN_DIR/$program"
        fi
    done
    completion_files | while read -r _ target; do rm -f "$target"; done
    # The folders it made, deepest first; a folder something else has put files in stays.
    if [ -f "$MANIFEST" ]; then
        sort -r "$MANIFEST" | while read -r dir; do
            rmdir "$dir" 2>/dev/null || true
        done
    fi
    if [ -f "$PREFIX/pyvenv.cfg" ]; then
        rm -rf "$PREFIX"
    fi
    say "removed shrike ($PREFIX, the links in $BIN_DIR, the completions)"
    if [ "$purge" = yes ]; then
        rm -rf "$STATE_DIR"
        say "removed the state in $STATE_DIR"
    elif [ -d "$STATE_DIR" ]; then
        say "the state in $STATE_DIR stays (--uninstall --purge removes it)"
    fi
    if [ -f /etc/systemd/system/shrike.service ]; then
        say "/etc/systemd/system/shrike.service is still installed: systemctl disable --now shrike.service, then remove it"
    fi
}

with_tests=no
uninstall=no
purge=no
for arg in "$@"; do
    case $arg in
    --test) with_tests=yes ;;
    --uninstall) uninstall=yes ;;
    --purge) purge=yes ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) usage_error "unknown option $arg" ;;
    esac
done
if [ "$uninstall" = yes ] && [ "$with_tests" = yes ]; then
    usage_error "--test and --uninstall do not go together"
fi
if [ "$purge" = yes ] && [ "$uninstall" = no ]; then
    usage_error "--purge goes with --uninstall"
fi
[ "$(id -u)" -eq 0 ] || die "run it as root (it installs into $PREFIX and $BIN_DIR)"

SOURCE=$(cd "$(dirname "$0")" && pwd)
umask 022
if [ "$uninstall" = yes ]; then
    do_uninstall
else
    do_install
fi
