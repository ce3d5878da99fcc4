"""Test harness of aegir-ansible: real servers on loopback addresses, MariaDB, playbook runner.

Modules:
  fixtures  pytest plugin (test_servers, fresh_servers, test_db_server, make_platform, run_playbook)
  servers   TestServer (sshd + nginx/Apache + PHP-FPM on one address), slots, process cleanup
  db        TestDbServer (MariaDB with a session admin user)
  ansible   run_playbook(), PlaybookResult, write_inventory()
  platform  make_platform(): copies of tests/fixtures/platform on a server
"""
