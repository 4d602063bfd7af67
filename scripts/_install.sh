# Shared install steps of scripts/test and scripts/demo, for a fresh Debian machine.
# Sourced, not run: it defines functions and changes nothing by itself.
#
#   install_postgres_server   Debian's postgresql package, unless server binaries are there
#                             (/usr/lib/postgresql/*/bin) or $VIEWSTORE_PG_BINDIR names some
#   install_chromium          Debian's chromium package, unless /usr/bin/chromium is there (the
#                             leaderboard page's browser test drives it headless)
#   find_python               sets $python: $PYTHON, python3 or python; .venv under PEP 668
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

find_python() {
    python="${PYTHON:-$(command -v python3 || command -v python || true)}"
    if [ -z "$python" ]; then
        apt_install python3 python3-venv
        python=python3
    fi

    # Debian's own Python refuses pip installs outside a virtualenv (PEP 668): use .venv then.
    if "$python" - <<'PY'
import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if sys.prefix == sys.base_prefix and os.path.exists(marker) else 1)
PY
    then
        if [ ! -x .venv/bin/pip ]; then
            "$python" -m venv --clear .venv || { apt_install python3-venv && "$python" -m venv --clear .venv; }
        fi
        python=.venv/bin/python
    fi
}

install_project() {
    # Quiet: as root in a container the root-user warning is noise, so is the version nag.
    PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
        "$python" -m pip install -q -e "${1:-.}"
}
