"""Prepares a Keystone and a running imagemeta for tempest, as an operator and devstack would:

* registers imagemeta in the catalog (README, "Running behind Keystone"): services `compute`
  and `image`, public/internal/admin endpoints in RegionOne (replacing earlier ones), and
  with REMOTE_IMAGE_URL a second node as `image_remote` (tempest's alternate image endpoint);
* uploads a small public image as the admin, for tempest's `[compute] image_ref`.

    python prepare.py KEYSTONE_URL ADMIN_PASSWORD COMPUTE_URL IMAGE_URL [REMOTE_IMAGE_URL]

Prints the image's id as its last line. Stdlib only.
"""
import json
import os
import sys
import urllib.request

keystone, password, compute_url, image_url = sys.argv[1:5]
remote_image_url = sys.argv[5] if len(sys.argv) > 5 else None


def call(method, url, token=None, body=None, data=None, content_type="application/json"):
    if body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", content_type)
    if token:
        req.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return r.headers, (json.loads(text) if text else None)


headers, _ = call("POST", keystone + "/v3/auth/tokens", body={"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": password}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
token = headers["X-Subject-Token"]

registrations = [("compute", "nova", compute_url), ("image", "glance", image_url)]
if remote_image_url:
    registrations.append(("image_remote", "glance-remote", remote_image_url))
for kind, name, url in registrations:
    _, services = call("GET", f"{keystone}/v3/services?type={kind}", token)
    if services["services"]:
        service = services["services"][0]["id"]
    else:
        _, created = call("POST", f"{keystone}/v3/services", token, {"service": {"type": kind, "name": name}})
        service = created["service"]["id"]
    _, endpoints = call("GET", f"{keystone}/v3/endpoints?service_id={service}", token)
    for e in endpoints["endpoints"]:
        call("DELETE", f"{keystone}/v3/endpoints/{e['id']}", token)
    for interface in ("public", "internal", "admin"):
        call("POST", f"{keystone}/v3/endpoints", token, {"endpoint": {
            "service_id": service, "interface": interface, "region_id": "RegionOne", "url": url}})
    print(f"catalog: {kind} -> {url}", file=sys.stderr)

_, image = call("POST", image_url + "/v2/images", token, {
    "name": "tempest-image", "visibility": "public", "disk_format": "raw", "container_format": "bare"})
call("PUT", f"{image_url}/v2/images/{image['id']}/file", token, data=os.urandom(4096),
     content_type="application/octet-stream")
print(image["id"])
