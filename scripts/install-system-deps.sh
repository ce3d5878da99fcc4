#!/bin/bash
# Install the Debian packages the test harness (tests/harness) needs, and make sure MariaDB runs.
#
# Idempotent and fast when everything is present: dpkg-query decides whether apt-get runs at all.
# The harness starts its own nginx, Apache, PHP-FPM and sshd instances on loopback addresses
# (127.0.0.2:80/22, 127.0.0.3:80/22, ...), so Debian's own instances of these services must not
# hold the wildcard ports 80 and 22: if they run, they are stopped through their init scripts.
set -euo pipefail

PACKAGES=(
    nginx-light
    apache2
    php-fpm
    php-mysql
    php-cli
    openssh-server
    openssh-client
    cron
    python3
    python3-pymysql
    rsync
    procps
    systemd  # systemd-analyze: tests/integration/test_service.py checks the shipped unit
    iproute2
    curl
    sudo
    acl
    passwd
    mariadb-server
    mariadb-client
    pebble
    openssl
)

log() { printf 'install-system-deps: %s\n' "$*" >&2; }

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "all packages present"
fi

# Debian's own service instances (started by a package install when no policy-rc.d forbids it)
# would bind 0.0.0.0:80 / 0.0.0.0:22 and collide with the harness' loopback instances. The init
# scripts' status checks only look at Debian's pid files (/run/nginx.pid, /run/apache2/...,
# /run/sshd.pid, /run/php/...), never at the harness' instances.
for svc in nginx apache2 ssh /etc/init.d/php*-fpm; do
    svc=${svc##*/}
    [ -x "/etc/init.d/$svc" ] || continue
    if service "$svc" status >/dev/null 2>&1; then
        log "stopping Debian's $svc service (the harness runs its own instances)"
        service "$svc" stop >/dev/null 2>&1 || log "warning: could not stop $svc"
    fi
done

# The sshd privilege separation directory (normally made by the init script, which never runs here).
install -d -m 0755 /run/sshd

# MariaDB: the machine normally starts it; start it by hand when it is not answering.
if ! mariadb-admin --protocol=socket ping >/dev/null 2>&1; then
    log "starting MariaDB"
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    for _ in $(seq 1 60); do
        if mariadb-admin --protocol=socket ping >/dev/null 2>&1; then
            break
        fi
        sleep 0.5
    done
    if ! mariadb-admin --protocol=socket ping >/dev/null 2>&1; then
        log "error: MariaDB did not start"
        exit 1
    fi
fi
log "MariaDB is running"
