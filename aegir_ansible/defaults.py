"""The defaults of a server and a site, in one place: the CLI's options, the frontend's
arguments, the backend tables' column defaults and the inventory's fallbacks all read them
here. (The roles have their own defaults/main.yml: they hold the same values, for a play run
without this inventory.)"""

from __future__ import annotations

AEGIR_ROOT = "/var/aegir"  # the aegir user's home: platforms/, config/, backups/, clients/
SCRIPT_USER = "aegir"  # owns the platforms' code and runs drush
SSH_USER = "aegir"
SSH_PORT = 22
PYTHON_INTERPRETER = "/usr/bin/python3"
WEB_GROUP = "www-data"  # the web server's group (reads the sites' files)
HTTP_PORT = 80
HTTP_LISTEN_ADDRESS = "*"
PHP_FASTCGI = "unix:/run/php/php-fpm.sock"
DB_PORT = 3306
CRON_INTERVAL = 3600  # seconds between a site's cron runs (Aegir 3 runs every site hourly)
SITE_PROFILE = "standard"
SITE_LANGUAGE = "en"

# How a web server's whole configuration is checked and reloaded, per service type (argv).
HTTP_COMMANDS = {
    "nginx": (["nginx", "-t"], ["nginx", "-s", "reload"]),
    "apache": (["apache2ctl", "-t"], ["apache2ctl", "graceful"]),
}
