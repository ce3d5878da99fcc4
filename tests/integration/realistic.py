"""A realistic frontend: 3 servers (one local), 4 platforms, 50 sites (some disabled, some
deleted), aliases and redirections, two db servers. Written through Frontend, the way
hostmaster writes rows."""

from __future__ import annotations

from sqlalchemy import select, update

from aegir_ansible.db import models as m
from aegir_ansible.frontend import Frontend


def populate(fe: Frontend, n_sites: int = 50) -> dict:
    fe.add_server("master.example.net", name="server_master", local=True, http="nginx",
                  db="mysql", db_user="aegir_root", db_password="s3cret-master",
                  ip_addresses=("127.0.0.1",), queue_verify=False)
    fe.add_server("web1.example.net", http="apache", ip_addresses=("10.0.0.11",),
                  ssh_user="aegir", ssh_port=2222, queue_verify=False)
    fe.add_server("db1.example.net", db="mysql", db_user="admin", db_password="s3cret-db1",
                  ip_addresses=("10.0.0.21",), queue_verify=False)
    platforms = [
        fe.add_platform("Drupal 10 A", "/var/aegir/platforms/d10a", "server_master", queue_verify=False),
        fe.add_platform("Drupal 10 B", "/var/aegir/platforms/d10b", "server_master", queue_verify=False),
        fe.add_platform("Drupal 7", "/var/aegir/platforms/d7", "server_web1examplenet", queue_verify=False),
        fe.add_platform("Drupal 11", "/srv/platforms/d11", "server_web1examplenet", queue_verify=False),
    ]
    names = ["platform_Drupal10A", "platform_Drupal10B", "platform_Drupal7", "platform_Drupal11"]
    sites = []
    for i in range(n_sites):
        uri = f"site{i:03d}.example.org"
        aliases = [f"www.site{i:03d}.example.org"] if i % 3 == 0 else []
        if i % 10 == 0:
            aliases.append(f"alt{i:03d}.example.com")
        redirection = uri if i % 6 == 0 else None
        nid = fe.add_site(uri, names[i % 4],
                          db_server="server_master" if i % 2 else "server_db1examplenet",
                          profile="standard" if i % 5 else "minimal", aliases=aliases,
                          redirection=redirection, client="acme" if i % 4 == 0 else None,
                          cron_interval=3600 if i % 7 else 900, queue_install=False)
        sites.append(nid)
    disabled = sites[5:10]
    deleted = sites[10:13]
    fe.session.execute(update(m.HostingSite).where(m.HostingSite.nid.in_(disabled))
                       .values(status=m.SITE_DISABLED))
    fe.session.execute(update(m.HostingSite).where(m.HostingSite.nid.in_(deleted))
                       .values(status=m.SITE_DELETED))
    deleted_uris = [fe.session.execute(select(m.Node.title).where(m.Node.nid == n)).scalar_one()
                    for n in deleted]
    fe.session.flush()
    return {"platforms": platforms, "sites": sites, "disabled": disabled, "deleted": deleted,
            "deleted_uris": deleted_uris}
