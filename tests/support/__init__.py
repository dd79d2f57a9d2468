"""Helpers shared by the test suites and the tools, written once, imported as a package:

    from tests.support.ports import free_port

| module | what |
|---|---|
| paths | the repository's paths: REPO, BIN (the virtualenv's), ROLES, OUTPUT |
| ports | free_port: a TCP port free on loopback addresses |
| waiting | wait_until / wait_for / wait_until_answers: bounded polling |
| service | RedisServer, Service (turnomatic), HTTP get, hammer (threads on keep-alive connections) |
| processes | Processes: redis-server, turnomatic and nginx on loopback, stopped together; cpu_seconds |
| ansible | ENV for Ansible commands, run_playbook, render_role_template (a role's template with its defaults) |
| lab | the lab's facts from the inventory (addresses, state dir, SSH key and options), SSH to its hosts |
| tickets | TicketLedger: per id exactly 1..n, gaps explained only by unknown outcomes |
| alerting, grafana_provisioning | Grafana's alert rules evaluated on Graphite; provisioning file checks |
"""
