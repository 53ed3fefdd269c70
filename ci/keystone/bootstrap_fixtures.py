#!/usr/bin/env python3
"""Create imagemeta's test users/projects in a running harness Keystone.

    $KEYSTONE_VENV/bin/python ci/keystone/bootstrap_fixtures.py STATE_DIR

Standard library only (urllib), so any Python 3 works. Idempotent: existing
projects/users/roles are looked up by name and reused (passwords of existing
users are NOT reset, because that would revoke their tokens). Role grants are
PUTs, which Keystone treats as idempotent.

Creates, all in domain "default":
  * roles member, reader (bootstrap already makes them; also admin, manager,
    service, with the implications admin -> manager -> member -> reader)
  * project "service" + user "imagemeta"/"imagemeta-secret" with roles admin and
    service on it (the keystonemiddleware service user)
  * projects "alpha", "beta"; users "<p>-member"/"secret" (member + reader on
    <p>) and "<p>-reader"/"secret" (reader only on <p>)

Then logs every fixture user in (project-scoped) as a smoke test and writes
STATE_DIR/fixtures.json. The Keystone URL is read from STATE_DIR/keystone.env.
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-secret"
SERVICE_PROJECT, SERVICE_USER, SERVICE_PASSWORD = "service", "imagemeta", "imagemeta-secret"
TENANTS = ("alpha", "beta")
USER_PASSWORD = "secret"
DOMAIN_ID, DOMAIN_NAME = "default", "Default"


class Keystone:
    def __init__(self, url):
        self.url = url.rstrip("/")
        self.token = None

    def call(self, method, path, body=None, token=None, ok=(200, 201, 204)):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        tok = token or self.token
        if tok:
            req.add_header("X-Auth-Token", tok)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw, status, headers = r.read(), r.status, r.headers
        except urllib.error.HTTPError as e:
            raw, status, headers = e.read(), e.code, e.headers
        if status not in ok:
            raise SystemExit(f"{method} {path} -> HTTP {status}: {raw[:500]!r}")
        return status, headers, (json.loads(raw) if raw else None)

    def password_token(self, user, password, scope):
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": DOMAIN_ID}, "password": password}}},
            "scope": scope}}
        _, headers, data = self.call("POST", "/v3/auth/tokens?nocatalog", body, ok=(201,))
        return headers["X-Subject-Token"], data["token"]

    def find(self, collection, name, **query):
        qs = "&".join([f"name={urllib.parse.quote(name)}"] + [f"{k}={v}" for k, v in query.items()])
        _, _, data = self.call("GET", f"/v3/{collection}?{qs}")
        items = data[collection]
        return items[0] if items else None

    def ensure(self, collection, singular, name, extra=None, **query):
        found = self.find(collection, name, **query)
        if found:
            print(f"  {singular} {name!r}: exists ({found['id']})")
            return found
        body = {singular: dict({"name": name}, **(extra or {}))}
        _, _, data = self.call("POST", f"/v3/{collection}", body, ok=(201,))
        print(f"  {singular} {name!r}: created ({data[singular]['id']})")
        return data[singular]

    def grant(self, project_id, user_id, role_id):
        self.call("PUT", f"/v3/projects/{project_id}/users/{user_id}/roles/{role_id}")


def read_env(state):
    env = {}
    with open(os.path.join(state, "keystone.env")) as f:
        for line in f:
            if "=" in line:
                k, v = line.strip().split("=", 1)
                env[k] = v
    return env


def main():
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} STATE_DIR")
    state = os.path.abspath(sys.argv[1])
    env = read_env(state)
    url = env["KEYSTONE_URL"]
    ks = Keystone(url)
    print(f"fixtures: Keystone {url}, state {state}")

    # System-scoped admin token: with enforce_scope=True this is the scope the
    # identity API's admin operations are written for.
    ks.token, admin_tok = ks.password_token(ADMIN_USER, ADMIN_PASSWORD, {"system": {"all": True}})
    admin_user_id = admin_tok["user"]["id"]

    roles = {}
    for r in ("admin", "manager", "member", "reader", "service"):
        found = ks.find("roles", r)
        if found is None and r in ("member", "reader"):
            found = ks.ensure("roles", "role", r)
        if found is not None:
            roles[r] = found["id"]
    print(f"  roles: {', '.join(sorted(roles))}")

    def project(name, description):
        return ks.ensure("projects", "project", name,
                         {"domain_id": DOMAIN_ID, "description": description, "enabled": True},
                         domain_id=DOMAIN_ID)

    def user(name, password, project_obj):
        return ks.ensure("users", "user", name,
                         {"domain_id": DOMAIN_ID, "password": password, "enabled": True,
                          "default_project_id": project_obj["id"]},
                         domain_id=DOMAIN_ID)

    admin_project = ks.find("projects", "admin", domain_id=DOMAIN_ID)

    svc_project = project(SERVICE_PROJECT, "service users (imagemeta test harness)")
    svc_user = user(SERVICE_USER, SERVICE_PASSWORD, svc_project)
    svc_roles = [r for r in ("admin", "service") if r in roles]
    for r in svc_roles:
        ks.grant(svc_project["id"], svc_user["id"], roles[r])

    users = {}          # name -> fixture record
    projects = {}
    for p in TENANTS:
        proj = project(p, f"imagemeta test tenant {p}")
        projects[p] = {"id": proj["id"], "name": p, "domain_id": DOMAIN_ID}
        # "-admin": the admin role outside the admin project (is_admin_project false).
        for suffix, granted in (("member", ["member", "reader"]), ("reader", ["reader"]), ("admin", ["admin"])):
            name = f"{p}-{suffix}"
            u = user(name, USER_PASSWORD, proj)
            for r in granted:
                ks.grant(proj["id"], u["id"], roles[r])
            users[name] = {"id": u["id"], "name": name, "password": USER_PASSWORD,
                           "domain_id": DOMAIN_ID, "project": p, "project_id": proj["id"],
                           "roles": granted}

    # Smoke test: every fixture user can log in and gets the roles we expect.
    def check(name, password, project_id, must_have):
        _, tok = ks.password_token(name, password, {"project": {"id": project_id}})
        got = sorted(r["name"] for r in tok["roles"])
        missing = set(must_have) - set(got)
        if missing:
            raise SystemExit(f"{name}: token roles {got} lack {sorted(missing)}")
        print(f"  login ok: {name:<13} project={tok['project']['name']:<8} roles={got}")
        return got

    for name, u in users.items():
        u["effective_roles"] = check(name, u["password"], u["project_id"], u["roles"])
    svc_effective = check(SERVICE_USER, SERVICE_PASSWORD, svc_project["id"], svc_roles)

    fixtures = {
        "keystone_url": url,
        "state_dir": state,
        "auth_url": url + "/v3",
        "region": "RegionOne",
        "domain": {"id": DOMAIN_ID, "name": DOMAIN_NAME},
        "roles": roles,
        "admin": {"id": admin_user_id, "name": ADMIN_USER, "password": ADMIN_PASSWORD,
                  "domain_id": DOMAIN_ID, "project": "admin",
                  "project_id": admin_project["id"] if admin_project else None},
        "service_user": {"id": svc_user["id"], "name": SERVICE_USER, "password": SERVICE_PASSWORD,
                         "domain_id": DOMAIN_ID, "user_domain_name": DOMAIN_NAME,
                         "project": SERVICE_PROJECT, "project_id": svc_project["id"],
                         "project_domain_name": DOMAIN_NAME,
                         "roles": svc_roles, "effective_roles": svc_effective},
        "projects": projects,
        "users": users,
    }
    out = os.path.join(state, "fixtures.json")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(fixtures, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
