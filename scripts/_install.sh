# Shared install steps of scripts/test and scripts/demo, for a fresh Debian machine.
# Sourced, not run: it defines functions and changes nothing by itself.
#
#   install_postgres_server   Debian's postgresql package, unless server binaries are there
#                             (/usr/lib/postgresql/*/bin) or $VIEWSTORE_PG_BINDIR names some
#   install_chromium          Debian's chromium package, unless /usr/bin/chromium is there (the
#                             leaderboard page's browser test drives it headless)
#   install_fiu               Debian's fiu-utils (libfiu's fiu-run and fiu-ctrl), unless fiu-run is
#                             there: the I/O-error test injects EIO with it
#   find_python               sets $python to .venv/bin/python, creating .venv with $PYTHON or
#                             python3 when missing (always afresh under CI=true)
#   install_project [SPEC]    pip install -e SPEC (default '.') with $python
#
# Callers cd to the repository root first; messages name the calling script.

_install_who="scripts/$(basename "$0")"

apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    echo "$_install_who: installing $* with apt-get" >&2
    $sudo apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

install_postgres_server() {
    if [ -z "${VIEWSTORE_PG_BINDIR:-}" ] \
        && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        apt_install postgresql
    fi
}

install_chromium() {
    # Playwright's own browser download is not used (no network for it in CI): Debian's is.
    if [ ! -x /usr/bin/chromium ]; then
        apt_install chromium
    fi
}

install_fiu() {
    if ! command -v fiu-run >/dev/null 2>&1; then
        apt_install fiu-utils
    fi
}

find_python() {
    # The project always runs from its own virtual environment, .venv at the repository root:
    # never from whatever interpreter happens to have packages installed by hand, which would
    # hide a missing dependency. $PYTHON (or python3) only creates it. Under CI (CI=true) it is
    # created afresh for every run, so a missing install step fails there as on a new machine.
    local base="${PYTHON:-$(command -v python3 || command -v python || true)}"
    if [ -z "$base" ]; then
        apt_install python3 python3-venv
        base=python3
    fi
    if [ "${CI:-}" = "true" ] || [ ! -x .venv/bin/python ]; then
        echo "$_install_who: creating a fresh virtual environment in .venv" >&2
        "$base" -m venv --clear .venv || { apt_install python3-venv && "$base" -m venv --clear .venv; }
    fi
    python=.venv/bin/python
}

install_project() {
    # Quiet: as root in a container the root-user warning is noise, so is the version nag.
    PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$python" -m pip install -q -e "${1:-.}"
}
