"""Client-compatibility suite: the REAL OpenStack clients against imagemeta.

openstacksdk, the ``openstack`` CLI (python-openstackclient) and python-glanceclient (what Nova
uses to reach the image service) talk to imagemeta's Glance Image API v2 listener, and plain HTTP checks the Compute API (``/v2.1``) view of the same
store. No Keystone: the keystoneauth ``admin_token`` plugin (OSC's "token_endpoint") sends a
static token, and the image endpoint is given as an endpoint override, so the clients do their
ordinary version discovery (``GET /`` -> 300 -> ``/v2/``) against imagemeta.

Run with ``clients/run.sh``; ``IMAGEMETA_BIN`` overrides the binary
(default ``<repo>/target/debug/imagemeta``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import glanceclient
import openstack
import pytest
import requests
from glanceclient import exc as glance_exc
from openstack import exceptions as sdk_exc

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BIN = REPO / "target" / "debug" / "imagemeta"
VENV_BIN = Path(sys.executable).parent
OPENSTACK_CLI = shutil.which("openstack", path=str(VENV_BIN)) or str(VENV_BIN / "openstack")

PROJECT_A = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
PROJECT_B = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
PROJECT_ADMIN = "adadadadadadadadadadadadadadadad"
TOKEN_A = "token-member-a"
TOKEN_B = "token-member-b"
TOKEN_ADMIN = "token-admin"

MD5_KEY = "owner_specified.openstack.md5"
SHA256_KEY = "owner_specified.openstack.sha256"
OBJECT_KEY = "owner_specified.openstack.object"

# Base attributes of the Glance image schema: never part of the compute API's "metadata".
GLANCE_BASE_KEYS = {
    "id", "name", "status", "visibility", "protected", "os_hidden", "checksum",
    "os_hash_algo", "os_hash_value", "owner", "size", "virtual_size", "disk_format",
    "container_format", "min_disk", "min_ram", "created_at", "updated_at", "tags",
    "self", "file", "schema", "locations", "direct_url",
}

READY_TIMEOUT = 60.0

# openstacksdk is noisy with its own deprecation warnings; they are not findings.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen
    workdir: Path
    compute_url: str  # http://127.0.0.1:PORT (no version)
    image_url: str  # http://127.0.0.1:PORT (unversioned, as in a catalog)
    stderr_path: Path
    stdout_lines: list = field(default_factory=list)

    def stderr_tail(self, n: int = 40) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def _start_server(stores: tuple = ()) -> Server:
    """The server; `stores` names file stores (the first the default) in place of the one
    data directory."""
    binary = Path(os.environ.get("IMAGEMETA_BIN") or DEFAULT_BIN)
    if not binary.is_file():
        pytest.fail(f"imagemeta binary not found at {binary}: run 'cargo build' first")
    workdir = Path(tempfile.mkdtemp(prefix="imagemeta-clients-"))
    (workdir / "data").mkdir()
    tokens = {
        TOKEN_A: {"user_id": "user-a", "project_id": PROJECT_A, "roles": ["member", "reader"]},
        TOKEN_B: {"user_id": "user-b", "project_id": PROJECT_B, "roles": ["member", "reader"]},
        TOKEN_ADMIN: {
            "user_id": "admin",
            "project_id": PROJECT_ADMIN,
            "roles": ["admin", "member", "reader"],
        },
    }
    (workdir / "tokens.json").write_text(json.dumps(tokens))
    stderr_path = workdir / "server.stderr"
    cmd = [
        str(binary), "serve",
        "--compute-listen", "127.0.0.1:0",
        "--image-listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0",
        "--database", f"sqlite:{workdir / 'db'}",
        *(["--image-data-dir", str(workdir / "data")] if not stores else
          [arg for name in stores for arg in ("--image-store", f"{name}=file://{workdir / name}")]
          + ["--default-image-store", stores[0]]),
        "--auth", "static",
        "--tokens", str(workdir / "tokens.json"),
        # web-download from the loopback HTTP server of the import tests, on any port.
        "--import-allowed-ports=",
        # The image cache API (`openstack cached image …`, the SDK's cache calls).
        "--image-cache-dir", str(workdir / "cache"),
    ]
    env = dict(os.environ)
    env.setdefault("IMAGEMETA_SYNCHRONOUS", "off")
    # Glance's predefined metadata definitions, as devstack loads them: from Glance's package
    # on PyPI when run.sh fetched it (GLANCE_METADEFS), else imagemeta's built-in copies.
    load = [str(binary), "metadefs", "load", "--database", f"sqlite:{workdir / 'db'}"]
    if os.environ.get("GLANCE_METADEFS"):
        load += ["--from", os.environ["GLANCE_METADEFS"]]
    subprocess.run(load, check=True, capture_output=True, env=env, timeout=60)
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
    lines: list[str] = []
    urls: dict[str, str] = {}
    ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            m = re.match(r"^imagemeta: (compute|image) API listening on (http://\S+)$", line)
            if m:
                urls[m.group(1)] = m.group(2).rstrip("/")
                if "compute" in urls and "image" in urls:
                    ready.set()
        ready.set()  # EOF: the process is gone

    threading.Thread(target=reader, daemon=True).start()
    ready.wait(READY_TIMEOUT)
    server = Server(proc, workdir, urls.get("compute", ""), urls.get("image", ""),
                    stderr_path, lines)
    if "compute" not in urls or "image" not in urls:
        _stop_server(server)
        pytest.fail(
            "imagemeta did not announce both listeners "
            f"(exit code {proc.poll()}, waited at most {READY_TIMEOUT:.0f}s).\n"
            f"command: {' '.join(cmd)}\n"
            f"stdout: {lines}\nstderr tail:\n{server.stderr_tail()}"
        )
    return server


def _stop_server(server: Server) -> None:
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def _wire_log():
    """Log every HTTP exchange the SDK makes (keystoneauth's curl-style REQ/RESP lines), so a
    failing test shows the exact requests and responses under "Captured log call"."""
    logger = logging.getLogger("keystoneauth")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(old)


@pytest.fixture(scope="session")
def server():
    srv = _start_server()
    try:
        yield srv
    finally:
        _stop_server(srv)
        if os.environ.get("IMAGEMETA_KEEP_TMP"):
            print(f"\nkept {srv.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(srv.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def multi_server():
    """A second server with two file stores (Glance's multi-store): `file` and `remote`."""
    srv = _start_server(stores=("file", "remote"))
    try:
        yield srv
    finally:
        _stop_server(srv)
        shutil.rmtree(srv.workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------


def _connect(server: Server, token: str) -> openstack.connection.Connection:
    """An openstacksdk Connection with a static token and endpoint overrides: no Keystone,
    no clouds.yaml, no OS_* environment."""
    return openstack.connect(
        load_yaml_config=False,
        load_envvars=False,
        auth_type="admin_token",
        auth={"endpoint": server.image_url, "token": token},
        image_endpoint_override=server.image_url,
        compute_endpoint_override=server.compute_url + "/v2.1",
        region_name="RegionOne",
    )


@pytest.fixture(scope="session")
def sdk_a(server):
    conn = _connect(server, TOKEN_A)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def sdk_b(server):
    conn = _connect(server, TOKEN_B)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def sdk_admin(server):
    conn = _connect(server, TOKEN_ADMIN)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def cli_home(server):
    home = server.workdir / "cli-home"
    home.mkdir(exist_ok=True)
    return home


class CLIError(AssertionError):
    pass


def run_cli(server: Server, home: Path, *args: str, token: str = TOKEN_A, check: bool = True,
            json_out: bool = False):
    """Run the real `openstack` CLI from the venv with a static token (keystoneauth's
    admin_token plugin, which OSC also calls token_endpoint) and the image endpoint
    override. The environment is scrubbed of any OS_* and clouds.yaml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "OS_AUTH_TYPE": "token_endpoint",
        "OS_ENDPOINT": server.image_url,
        "OS_TOKEN": token,
        "OS_IMAGE_ENDPOINT_OVERRIDE": server.image_url,
        "OS_IMAGE_API_VERSION": "2",
        "OS_REGION_NAME": "RegionOne",
        "PYTHONWARNINGS": "ignore",
    })
    cmd = [OPENSTACK_CLI, "--debug", *args]
    if json_out:
        cmd += ["-f", "json"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL, cwd=str(home))
    if check and p.returncode != 0:
        raise CLIError(
            f"`openstack {' '.join(args)}` exited {p.returncode}\nstdout:\n{p.stdout}\n"
            f"wire log (from --debug):\n{cli_wire_log(p.stderr)}\n"
            f"stderr tail:\n{p.stderr[-3000:]}\nserver stderr tail:\n{server.stderr_tail(20)}"
        )
    if json_out and p.returncode == 0:
        try:
            return json.loads(p.stdout)
        except ValueError as e:
            raise CLIError(f"`openstack {' '.join(args)}` printed non-JSON: {p.stdout!r}") from e
    return p


def cli_wire_log(stderr: str) -> str:
    """The REQ/RESP lines of `openstack --debug` output."""
    keep = [ln for ln in stderr.splitlines()
            if re.search(r"REQ: curl|RESP: \[|RESP BODY:|Client Error|HttpException", ln)]
    return "\n".join(re.sub(r"X-Auth-Token: [^\"]+", "X-Auth-Token: ***", ln)[:1500]
                     for ln in keep[-30:])


def compute(server: Server, method: str, path: str, token: str = TOKEN_A, **kw):
    headers = {"X-Auth-Token": token, "Accept": "application/json"}
    if "json" in kw:
        headers["Content-Type"] = "application/json"
    headers.update(kw.pop("headers", {}))
    return requests.request(method, server.compute_url + "/v2.1" + path, headers=headers,
                            timeout=30, **kw)


def glance_raw(server: Server, method: str, path: str, token: str = TOKEN_A, **kw):
    headers = {"X-Auth-Token": token, "Accept": "application/json"}
    headers.update(kw.pop("headers", {}))
    return requests.request(method, server.image_url + path, headers=headers, timeout=30, **kw)


def describe(resp: requests.Response) -> str:
    """One request/response exchange, for assertion messages (and FINDINGS.md)."""
    req = resp.request
    body = req.body
    if isinstance(body, bytes):
        body = body[:300]
    return (f"{req.method} {req.url} body={body!r} -> {resp.status_code} "
            f"{dict(resp.headers)} {resp.text[:600]!r}")


# --------------------------------------------------------------------------------------
# Data helpers
# --------------------------------------------------------------------------------------


@dataclass
class Payload:
    path: Path
    data: bytes
    md5: str
    sha256: str
    sha512: str


def make_payload(dirpath: Path, size: int = 1024 * 1024) -> Payload:
    data = secrets.token_bytes(size)
    path = dirpath / f"payload-{uuid.uuid4().hex[:8]}.raw"
    path.write_bytes(data)
    return Payload(path, data, hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest(),
                   hashlib.sha512(data).hexdigest())


def next_second() -> None:
    """Sleep into the next wall-clock second. The default list order is created_at desc,
    then id desc, and created_at may be stored in whole seconds (glance on MySQL does), so
    tests that assert "newest first" create their images in distinct seconds."""
    time.sleep(1.02 - (time.time() % 1.0))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def payload(server):
    return make_payload(server.workdir)


def sdk_create_uploaded(conn, payload: Payload, name: str, **kwargs):
    """create_image with data from a file, the way a user of the SDK does it, with the SDK's
    own checksum validation on (it computes md5/sha256 locally, stores them as
    owner_specified.openstack.*, and compares the server's checksum after upload)."""
    img = conn.image.create_image(
        name,
        filename=str(payload.path),
        disk_format="raw",
        container_format="bare",
        allow_duplicates=True,
        validate_checksum=True,
        **kwargs,
    )
    assert img.id, img
    return conn.image.get_image(img.id)


@pytest.fixture(scope="module")
def uploaded(sdk_a, payload):
    """One active image owned by project A, created through openstacksdk."""
    img = sdk_create_uploaded(sdk_a, payload, unique("sdk-uploaded"), tags=["sdk-tag"],
                              my_prop="my value")
    yield img
    try:
        sdk_a.image.delete_image(img.id, ignore_missing=True)
    except sdk_exc.SDKException:
        pass


# --------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------


def test_version_discovery_document(server):
    r = requests.get(server.image_url + "/", timeout=10)
    assert r.status_code == 300, describe(r)
    versions = r.json()["versions"]
    current = [v for v in versions if v["status"] == "CURRENT"]
    assert len(current) == 1, versions
    for v in versions:
        assert re.match(r"^v2\.\d+$", v["id"]), v
        hrefs = [link["href"] for link in v["links"] if link["rel"] == "self"]
        assert hrefs == [server.image_url + "/v2/"], v


def test_sdk_image_schemas(sdk_a):
    # glanceclient (and so Nova) builds its models from these.
    schema = sdk_a.image.get_image_schema()
    assert schema.name == "image"
    assert schema.additional_properties == {"type": "string"}, schema.additional_properties
    assert "disk_format" in schema.properties and "os_hash_value" in schema.properties
    assert sdk_a.image.get_images_schema().name == "images"


def test_sdk_discovers_image_v2(sdk_a):
    # A call through the proxy makes keystoneauth run discovery; the endpoint it settles on
    # must be the /v2/ href of the versions document.
    list(sdk_a.image.images(limit=1))
    endpoint = sdk_a.image.get_endpoint()
    assert endpoint.rstrip("/").endswith("/v2"), endpoint
    major = sdk_a.image.get_api_major_version()
    assert major[0] == 2, major


# --------------------------------------------------------------------------------------
# openstacksdk
# --------------------------------------------------------------------------------------


def test_sdk_create_image_with_data(sdk_a, payload, uploaded):
    img = uploaded
    assert img.status == "active"
    assert img.size == len(payload.data)
    assert img.checksum == payload.md5
    assert img.hash_algo == "sha512"
    assert img.hash_value == payload.sha512
    assert img.disk_format == "raw"
    assert img.container_format == "bare"
    assert img.virtual_size == len(payload.data)
    assert img.visibility == "shared"  # Glance's default visibility
    assert img.owner == PROJECT_A
    assert img.is_protected is False
    assert img.is_hidden is False
    assert img.min_disk == 0 and img.min_ram == 0
    assert img.tags == ["sdk-tag"]
    assert img.properties["my_prop"] == "my value"
    assert img.properties[MD5_KEY] == payload.md5
    assert img.properties[SHA256_KEY] == payload.sha256
    assert img.properties[OBJECT_KEY] == f"images/{img.name}"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", img.created_at), img.created_at
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", img.updated_at), img.updated_at
    assert img.file == f"/v2/images/{img.id}/file"
    assert img.schema == "/v2/schemas/image"


def test_sdk_create_raw_response_is_flat(server, uploaded):
    # What the SDK parsed must come from a flat Glance body: extras at top level.
    r = glance_raw(server, "GET", f"/v2/images/{uploaded.id}")
    assert r.status_code == 200, describe(r)
    body = r.json()
    assert body["my_prop"] == "my value", body
    assert "properties" not in body, body
    for key in ("name", "disk_format", "container_format", "visibility", "size",
                "virtual_size", "status", "checksum", "protected", "min_ram", "min_disk",
                "owner", "os_hidden", "os_hash_algo", "os_hash_value", "id", "created_at",
                "updated_at", "tags", "self", "file", "schema"):
        assert key in body, (key, body)
    assert body["self"] == f"/v2/images/{uploaded.id}"


def test_sdk_list_images(sdk_a, uploaded):
    ids = [i.id for i in sdk_a.image.images()]
    assert uploaded.id in ids
    assert len(ids) == len(set(ids)), "duplicates in the paged list"
    by_name = list(sdk_a.image.images(name=uploaded.name))
    assert [i.id for i in by_name] == [uploaded.id]
    assert by_name[0].status == "active"
    assert by_name[0].properties.get("my_prop") == "my value"
    by_tag = [i.id for i in sdk_a.image.images(tag="sdk-tag")]
    assert uploaded.id in by_tag
    assert [i.id for i in sdk_a.image.images(tag="no-such-tag-" + uuid.uuid4().hex)] == []
    active = [i.id for i in sdk_a.image.images(status="active")]
    assert uploaded.id in active
    assert uploaded.id not in [i.id for i in sdk_a.image.images(status="queued")]


def test_sdk_list_pagination(sdk_a, payload):
    # Three queued images with a common tag, listed one per page: the SDK follows `next`.
    tag = unique("page")
    made = []
    for _ in range(3):
        next_second()
        made.append(sdk_a.image.create_image(unique("sdk-page"), disk_format="raw",
                                             container_format="bare", allow_duplicates=True,
                                             tags=[tag]).id)
    try:
        seen = [i.id for i in sdk_a.image.images(tag=tag, limit=1)]
        assert sorted(seen) == sorted(made), seen
        assert len(seen) == 3
        # Default order: newest first.
        assert seen == list(reversed(made)), (seen, made)
    finally:
        for i in made:
            sdk_a.image.delete_image(i, ignore_missing=True)


def test_sdk_list_filters_and_sorting(sdk_a, sdk_b, sdk_admin):
    """The list parameters the SDK and OSC pass through (glance-v2.md 13, 14), each scoped
    by a unique tag so images of other tests do not interfere."""
    tag = unique("filt")
    mk = sdk_a.image.create_image
    alpha = mk(unique("alpha"), disk_format="raw", container_format="bare",
               allow_duplicates=True, tags=[tag], visibility="private")
    next_second()
    beta = mk(unique("beta"), disk_format="qcow2", container_format="bare",
              allow_duplicates=True, tags=[tag], visibility="community")
    next_second()
    gamma = sdk_admin.image.create_image(unique("gamma"), disk_format="raw",
                                         container_format="ovf", allow_duplicates=True,
                                         tags=[tag], visibility="public")
    ids = {alpha.id: "alpha", beta.id: "beta", gamma.id: "gamma"}

    def names(conn, **q):
        return [ids[i.id] for i in conn.image.images(tag=tag, **q) if i.id in ids]

    try:
        alpha.upload(sdk_a.image, data=b"x" * 3000)
        assert names(sdk_a) == ["gamma", "beta", "alpha"]  # newest first
        assert names(sdk_a, sort_key="name", sort_dir="asc") == ["alpha", "beta", "gamma"]
        assert names(sdk_a, sort="name:desc") == ["gamma", "beta", "alpha"]
        assert names(sdk_a, size_min=2000) == ["alpha"]
        assert names(sdk_a, disk_format="qcow2") == ["beta"]
        assert names(sdk_a, container_format="ovf") == ["gamma"]
        assert names(sdk_a, status="active") == ["alpha"]
        assert names(sdk_a, visibility="private") == ["alpha"]
        assert names(sdk_a, name=f"in:{alpha.name},{gamma.name}") == ["gamma", "alpha"]
        # An admin sees A's private image; other projects' community images only on request.
        assert names(sdk_admin, owner=PROJECT_A) == ["alpha"]
        assert names(sdk_admin, owner=PROJECT_A, visibility="all") == ["beta", "alpha"]
        # Project B: public by default; community only when asked; never A's private.
        assert names(sdk_b) == ["gamma"]
        assert names(sdk_b, visibility="community") == ["beta"]
        assert names(sdk_b, visibility="all") == ["gamma", "beta"]
        # Tags are a set: replacing them collapses duplicates.
        upd = sdk_a.image.update_image(alpha.id, tags=[tag, "x", "x"])
        assert sorted(upd.tags) == sorted([tag, "x"]), upd.tags
    finally:
        for i in (alpha.id, beta.id):
            sdk_a.image.delete_image(i, ignore_missing=True)
        sdk_admin.image.delete_image(gamma.id, ignore_missing=True)


def test_sdk_time_filters_round_trip(sdk_a):
    """A timestamp the API shows, fed back into a list filter, must select consistently:
    `eq:` finds the image, `gt:` does not, `gte:` does (timestamps are whole seconds,
    glance-v2.md 1 and 13; glance's MySQL DATETIME columns store whole seconds too)."""
    tag = unique("ts")
    img = sdk_a.image.create_image(unique("sdk-ts"), disk_format="raw",
                                   container_format="bare", allow_duplicates=True, tags=[tag])
    try:
        ca = sdk_a.image.get_image(img.id).created_at

        def ids(**q):
            return [i.id for i in sdk_a.image.images(tag=tag, **q)]

        assert ids(created_at=f"gte:{ca}") == [img.id]
        assert ids(created_at=f"lt:{ca}") == []
        assert ids(created_at=f"eq:{ca}") == [img.id], f"created_at=eq:{ca}"
        assert ids(created_at=f"gt:{ca}") == [], f"created_at=gt:{ca}"
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_sdk_property_quota_is_413(sdk_a):
    img = sdk_a.image.create_image(unique("sdk-quota"), disk_format="raw",
                                   container_format="bare", allow_duplicates=True)
    try:
        # 3 owner_specified.* keys + 126 new ones = 129 > 128 (image_property_quota).
        with pytest.raises(sdk_exc.HttpException) as ei:
            sdk_a.image.update_image(img.id, **{f"k{n}": "v" for n in range(126)})
        assert ei.value.status_code == 413
        assert "k0" not in sdk_a.image.get_image(img.id).properties  # atomic
        sdk_a.image.update_image(img.id, **{f"k{n}": "v" for n in range(125)})
        assert len(sdk_a.image.get_image(img.id).properties) == 128
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_sdk_get_image(sdk_a, uploaded):
    img = sdk_a.image.get_image(uploaded.id)
    assert img.id == uploaded.id
    assert img.name == uploaded.name
    assert img.status == "active"


def test_sdk_find_image(sdk_a, uploaded):
    by_name = sdk_a.image.find_image(uploaded.name)
    assert by_name is not None and by_name.id == uploaded.id
    by_id = sdk_a.image.find_image(uploaded.id)
    assert by_id is not None and by_id.id == uploaded.id
    assert sdk_a.image.find_image(unique("no-such-image")) is None
    with pytest.raises(sdk_exc.ResourceNotFound):
        sdk_a.image.find_image(unique("no-such-image"), ignore_missing=False)


def test_sdk_update_properties_set_and_unset(sdk_a, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("sdk-update"))
    try:
        new_name = unique("sdk-renamed")
        # Set the way OSC's `image set` does: update by id, so the SDK diffs against {id}
        # and sends every change as a JSON-patch `add` (glance: add = upsert).
        upd = sdk_a.image.update_image(img.id, prop_a="alpha", prop_b="beta", name=new_name,
                                       min_ram=512)
        assert upd.name == new_name
        got = sdk_a.image.get_image(img.id)
        assert got.name == new_name
        assert got.min_ram == 512
        assert got.properties["prop_a"] == "alpha"
        assert got.properties["prop_b"] == "beta"
        assert got.properties[MD5_KEY] == payload.md5
        # Overwrite an existing property the same way (`add` on an existing key).
        sdk_a.image.update_image(img.id, prop_a="alpha2")
        got = sdk_a.image.get_image(img.id)
        assert got.properties["prop_a"] == "alpha2"
        assert got.properties["prop_b"] == "beta"
        # Replace from a fetched resource: the SDK diffs old vs new and sends `replace`.
        props = dict(got.properties)
        props["prop_b"] = "beta2"
        sdk_a.image.update_image(got, properties=props)
        got = sdk_a.image.get_image(img.id)
        assert got.properties["prop_b"] == "beta2"
        # Unset the way OSC does: hand the SDK the fetched image with a trimmed properties
        # dict, which becomes `remove /prop_a`.
        props = dict(got.properties)
        props.pop("prop_a")
        sdk_a.image.update_image(got, properties=props)
        got = sdk_a.image.get_image(img.id)
        assert "prop_a" not in got.properties, got.properties
        assert got.properties["prop_b"] == "beta2"
        assert got.properties[MD5_KEY] == payload.md5
        assert got.properties[OBJECT_KEY] == f"images/{img.name}"
        assert got.status == "active"
        assert got.checksum == payload.md5
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_sdk_add_remove_tag(sdk_a, uploaded):
    sdk_a.image.add_tag(uploaded, "extra-tag")
    sdk_a.image.add_tag(uploaded, "extra-tag")  # idempotent
    tags = sdk_a.image.get_image(uploaded.id).tags
    assert sorted(tags) == ["extra-tag", "sdk-tag"], tags
    sdk_a.image.remove_tag(uploaded, "extra-tag")
    assert sdk_a.image.get_image(uploaded.id).tags == ["sdk-tag"]
    with pytest.raises(sdk_exc.NotFoundException):
        sdk_a.image.remove_tag(uploaded, "never-set")


def test_sdk_download_streamed(sdk_a, payload, uploaded):
    resp = sdk_a.image.download_image(uploaded, stream=True)
    try:
        assert resp.status_code == 200
        got = b"".join(resp.iter_content(chunk_size=64 * 1024))
    finally:
        resp.close()
    assert len(got) == len(payload.data)
    assert got == payload.data
    assert hashlib.md5(got).hexdigest() == payload.md5
    assert resp.headers.get("Content-MD5") == payload.md5
    assert resp.headers.get("Content-Type", "").startswith("application/octet-stream")


def test_sdk_download_to_file(sdk_a, payload, uploaded, tmp_path):
    out = tmp_path / "out.raw"
    sdk_a.image.download_image(uploaded, output=str(out))  # hash-checked by the SDK
    assert out.read_bytes() == payload.data


def test_sdk_download_in_memory(sdk_a, payload, uploaded):
    resp = sdk_a.image.download_image(uploaded)
    data = resp.content if hasattr(resp, "content") else resp
    assert data == payload.data


def test_sdk_deactivate_reactivate(sdk_a, sdk_admin, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("sdk-deact"))
    try:
        sdk_a.image.deactivate_image(img)
        assert sdk_a.image.get_image(img.id).status == "deactivated"
        sdk_a.image.deactivate_image(img)  # no-op on an already deactivated image
        assert sdk_a.image.get_image(img.id).status == "deactivated"
        # A non-admin may not download a deactivated image (403); an admin may.
        r = sdk_a.image.get(f"/images/{img.id}/file")
        assert r.status_code == 403, describe(r)
        # The SDK does not check the status of the data GET: it hashes the error body and
        # fails the integrity check instead (InvalidResponse). Either way it must not succeed.
        with pytest.raises(sdk_exc.SDKException):
            sdk_a.image.download_image(img)
        assert sdk_admin.image.download_image(img).content == payload.data
        sdk_a.image.reactivate_image(img)
        assert sdk_a.image.get_image(img.id).status == "active"
        assert sdk_a.image.download_image(img).content == payload.data
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_sdk_deactivate_queued_is_forbidden(sdk_a):
    img = sdk_a.image.create_image(unique("sdk-queued-deact"), disk_format="raw",
                                   container_format="bare", allow_duplicates=True)
    try:
        r = sdk_a.image.post(f"/images/{img.id}/actions/deactivate")
        assert r.status_code == 403, describe(r)
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_sdk_delete(sdk_a, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("sdk-delete"))
    sdk_a.image.delete_image(img)
    with pytest.raises(sdk_exc.ResourceNotFound):
        sdk_a.image.get_image(img.id)
    with pytest.raises(sdk_exc.ResourceNotFound):
        sdk_a.image.delete_image(img.id, ignore_missing=False)
    assert sdk_a.image.delete_image(img.id, ignore_missing=True) is None
    assert img.id not in [i.id for i in sdk_a.image.images()]
    assert sdk_a.image.find_image(img.name) is None


def test_sdk_protected_image_cannot_be_deleted(server, sdk_a):
    img = sdk_a.image.create_image(unique("sdk-protected"), disk_format="raw",
                                   container_format="bare", allow_duplicates=True,
                                   is_protected=True)
    try:
        assert sdk_a.image.get_image(img.id).is_protected is True
        with pytest.raises(sdk_exc.ForbiddenException) as ei:
            sdk_a.image.delete_image(img)
        assert f"Image {img.id} is protected and cannot be deleted." in str(ei.value)
        # The compute API refuses too, with Nova's fault body.
        r = compute(server, "DELETE", f"/images/{img.id}")
        assert r.status_code == 403, describe(r)
        assert r.json() == {"forbidden": {"code": 403, "message":
                                          "You are not allowed to delete the image."}}, describe(r)
        sdk_a.image.update_image(img, is_protected=False)
        sdk_a.image.delete_image(img)
        with pytest.raises(sdk_exc.ResourceNotFound):
            sdk_a.image.get_image(img.id)
    finally:
        try:
            sdk_a.image.update_image(img.id, is_protected=False)
            sdk_a.image.delete_image(img.id, ignore_missing=True)
        except sdk_exc.SDKException:
            pass


def test_sdk_missing_image_is_404(sdk_a):
    missing = str(uuid.uuid4())
    with pytest.raises(sdk_exc.ResourceNotFound) as ei:
        sdk_a.image.get_image(missing)
    assert ei.value.status_code == 404
    # The SDK digs glance's explanation out of the (HTML, for Accept */*) error body.
    assert f"No image found with ID {missing}" in str(ei.value), str(ei.value)
    assert (ei.value.request_id or "").startswith("req-"), ei.value.request_id
    with pytest.raises(sdk_exc.NotFoundException):
        sdk_a.image.update_image(missing, name="x")
    with pytest.raises(sdk_exc.NotFoundException):
        sdk_a.image.add_tag(missing, "t")
    r = sdk_a.image.get(f"/images/{missing}/file")
    assert r.status_code == 404, describe(r)


def test_sdk_queued_image_has_no_data(sdk_a):
    img = sdk_a.image.create_image(unique("sdk-queued"), disk_format="raw",
                                   container_format="bare", allow_duplicates=True)
    try:
        got = sdk_a.image.get_image(img.id)
        assert got.status == "queued"
        assert got.size is None and got.checksum is None
        r = sdk_a.image.get(f"/images/{img.id}/file")
        assert r.status_code == 204, describe(r)
        assert r.content == b""
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_sdk_upload_image_to_existing(sdk_a, payload):
    img = sdk_a.image.create_image(unique("sdk-upload-later"), disk_format="raw",
                                   container_format="bare", allow_duplicates=True)
    try:
        with open(payload.path, "rb") as f:
            resp = img.upload(sdk_a.image, data=f)
        assert resp.status_code == 204, describe(resp)
        got = sdk_a.image.get_image(img.id)
        assert got.status == "active"
        assert got.size == len(payload.data)
        assert got.checksum == payload.md5
        # A second upload to an active image is a conflict.
        resp = img.upload(sdk_a.image, data=b"again")
        assert resp.status_code == 409, describe(resp)
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_sdk_chunked_upload(sdk_a, payload):
    # A generator body makes requests send Transfer-Encoding: chunked with no
    # Content-Length (what tempest does, and what the SDK does for streams of unknown size).
    img = sdk_a.image.create_image(unique("sdk-chunked"), disk_format="raw",
                                   container_format="bare", allow_duplicates=True)
    try:
        def chunks():
            for i in range(0, len(payload.data), 64 * 1024):
                yield payload.data[i:i + 64 * 1024]

        resp = sdk_a.image.put(f"/images/{img.id}/file", data=chunks(),
                               headers={"Content-Type": "application/octet-stream", "Accept": ""})
        assert resp.status_code == 204, describe(resp)
        assert "Content-Length" not in resp.request.headers
        got = sdk_a.image.get_image(img.id)
        assert got.status == "active" and got.size == len(payload.data)
        assert got.checksum == payload.md5 and got.hash_value == payload.sha512
        assert sdk_a.image.download_image(got).content == payload.data
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_sdk_upload_size_mismatch_is_400_and_stays_queued(sdk_a):
    img = sdk_a.image.create_image(unique("sdk-mismatch"), disk_format="raw",
                                   container_format="bare", allow_duplicates=True)
    try:
        resp = img.upload(sdk_a.image, data=b"0123456789", size=11)
        assert resp.status_code == 400, describe(resp)
        got = sdk_a.image.get_image(img.id)
        assert got.status == "queued" and got.size is None and got.checksum is None, got
        # The image can still be uploaded afterwards.
        resp = img.upload(sdk_a.image, data=b"0123456789")
        assert resp.status_code == 204, describe(resp)
        got = sdk_a.image.get_image(img.id)
        assert got.status == "active" and got.size == 10
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_sdk_hidden_image(sdk_a):
    img = sdk_a.image.create_image(unique("sdk-hidden"), disk_format="raw",
                                   container_format="bare", allow_duplicates=True)
    try:
        sdk_a.image.update_image(img.id, is_hidden=True)
        assert sdk_a.image.get_image(img.id).is_hidden is True
        assert img.id not in [i.id for i in sdk_a.image.images()]
        assert img.id in [i.id for i in sdk_a.image.images(is_hidden=True)]
        # find_image falls back to ?os_hidden=true when the name is not in the default list.
        found = sdk_a.image.find_image(img.name)
        assert found is not None and found.id == img.id
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


# --------------------------------------------------------------------------------------
# The openstack CLI
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_image(server, cli_home, payload):
    name = unique("cli-image")
    out = run_cli(server, cli_home, "image", "create", "--file", str(payload.path),
                  "--disk-format", "raw", "--container-format", "bare",
                  "--property", "cli_key=cli value", "--tag", "cli-tag", name, json_out=True)
    yield out
    run_cli(server, cli_home, "image", "delete", out["id"], check=False)


def _props(out: dict) -> dict:
    p = out.get("properties") or {}
    if isinstance(p, str):  # older OSC rendered properties as "k='v', ..."
        raise AssertionError(f"properties not a JSON object: {p!r}")
    return p


def test_cli_create(cli_image, payload):
    out = cli_image
    assert out["status"] == "active", out
    assert out["size"] == len(payload.data)
    assert out["checksum"] == payload.md5
    assert out["disk_format"] == "raw"
    assert out["container_format"] == "bare"
    assert out["visibility"] == "shared"
    assert out["owner"] == PROJECT_A
    assert out["tags"] == ["cli-tag"]
    assert out["protected"] is False
    assert out["virtual_size"] == len(payload.data)
    assert out["file"] == f"/v2/images/{out['id']}/file"
    assert out["schema"] == "/v2/schemas/image"
    props = _props(out)
    # OSC lists everything that is not one of its named columns under "properties".
    assert props["cli_key"] == "cli value", props
    assert props[OBJECT_KEY] == f"images/{out['name']}", props
    assert props[MD5_KEY] == "" and props[SHA256_KEY] == "", props  # OSC does not hash
    assert props["os_hash_algo"] == "sha512", props
    assert props["os_hash_value"] == payload.sha512, props
    assert props["os_hidden"] is False, props


def test_cli_list(server, cli_home, cli_image):
    rows = run_cli(server, cli_home, "image", "list", json_out=True)
    mine = [r for r in rows if r["ID"] == cli_image["id"]]
    assert mine == [{"ID": cli_image["id"], "Name": cli_image["name"], "Status": "active"}], rows
    rows = run_cli(server, cli_home, "image", "list", "--name", cli_image["name"], json_out=True)
    assert [r["ID"] for r in rows] == [cli_image["id"]]
    rows = run_cli(server, cli_home, "image", "list", "--tag", "cli-tag", json_out=True)
    assert cli_image["id"] in [r["ID"] for r in rows]
    rows = run_cli(server, cli_home, "image", "list", "--long", "--name", cli_image["name"],
                   json_out=True)
    assert len(rows) == 1
    row = rows[0]
    assert row["Disk Format"] == "raw" and row["Container Format"] == "bare", row
    assert row["Size"] == cli_image["size"] and row["Checksum"] == cli_image["checksum"], row
    assert row["Visibility"] == "shared" and row["Project"] == PROJECT_A, row


def test_cli_show(server, cli_home, cli_image, payload):
    by_id = run_cli(server, cli_home, "image", "show", cli_image["id"], json_out=True)
    by_name = run_cli(server, cli_home, "image", "show", cli_image["name"], json_out=True)
    for out in (by_id, by_name):
        assert out["id"] == cli_image["id"]
        assert out["name"] == cli_image["name"]
        assert out["status"] == "active"
        assert out["size"] == len(payload.data)
        assert out["checksum"] == payload.md5
        assert _props(out)["cli_key"] == "cli value"
    p = run_cli(server, cli_home, "image", "show", unique("no-such"), check=False)
    assert p.returncode == 1
    assert "No Image found" in p.stderr, p.stderr


def test_cli_set_and_unset(server, cli_home, payload):
    name = unique("cli-set")
    out = run_cli(server, cli_home, "image", "create", "--file", str(payload.path),
                  "--property", "keep=1", name, json_out=True)
    iid = out["id"]
    try:
        new = unique("cli-renamed")
        run_cli(server, cli_home, "image", "set", "--property", "a=b", "--property", "c=d",
                "--name", new, "--min-disk", "2", iid)
        shown = run_cli(server, cli_home, "image", "show", iid, json_out=True)
        assert shown["name"] == new
        assert shown["min_disk"] == 2
        props = _props(shown)
        assert props["a"] == "b" and props["c"] == "d" and props["keep"] == "1", props
        run_cli(server, cli_home, "image", "unset", "--property", "a", iid)
        shown = run_cli(server, cli_home, "image", "show", new, json_out=True)
        props = _props(shown)
        assert "a" not in props, props
        assert props["c"] == "d" and props["keep"] == "1", props
        # Unsetting an absent property is a client-side error (exit 1).
        p = run_cli(server, cli_home, "image", "unset", "--property", "a", iid, check=False)
        assert p.returncode == 1, p
    finally:
        run_cli(server, cli_home, "image", "delete", iid, check=False)


def test_cli_tags(server, cli_home, cli_image):
    iid = cli_image["id"]
    run_cli(server, cli_home, "image", "set", "--tag", "t2", "--tag", "t3", iid)
    shown = run_cli(server, cli_home, "image", "show", iid, json_out=True)
    assert sorted(shown["tags"]) == ["cli-tag", "t2", "t3"], shown["tags"]
    run_cli(server, cli_home, "image", "unset", "--tag", "t2", "--tag", "t3", iid)
    shown = run_cli(server, cli_home, "image", "show", iid, json_out=True)
    assert shown["tags"] == ["cli-tag"], shown["tags"]


def test_cli_save(server, cli_home, cli_image, payload, tmp_path):
    out = tmp_path / "saved.raw"
    run_cli(server, cli_home, "image", "save", "--file", str(out), cli_image["id"])
    assert out.read_bytes() == payload.data
    out2 = tmp_path / "saved-by-name.raw"
    run_cli(server, cli_home, "image", "save", "--file", str(out2), cli_image["name"])
    assert out2.read_bytes() == payload.data


def test_cli_deactivate_activate(server, cli_home, payload):
    out = run_cli(server, cli_home, "image", "create", "--file", str(payload.path),
                  unique("cli-deact"), json_out=True)
    iid = out["id"]
    try:
        run_cli(server, cli_home, "image", "set", "--deactivate", iid)
        assert run_cli(server, cli_home, "image", "show", iid,
                       json_out=True)["status"] == "deactivated"
        run_cli(server, cli_home, "image", "set", "--activate", iid)
        assert run_cli(server, cli_home, "image", "show", iid,
                       json_out=True)["status"] == "active"
    finally:
        run_cli(server, cli_home, "image", "delete", iid, check=False)


def test_cli_create_from_empty_stdin(server, cli_home):
    # Without --file, OSC uploads standard input when it is not a terminal: here /dev/null,
    # so a zero-byte upload (glance: active, size 0, md5 of the empty string).
    out = run_cli(server, cli_home, "image", "create", "--private", "--min-ram", "256",
                  unique("cli-empty"), json_out=True)
    try:
        assert out["status"] == "active", out
        assert out["size"] == 0, out
        assert out["checksum"] == "d41d8cd98f00b204e9800998ecf8427e", out
        assert out["visibility"] == "private"
        assert out["min_ram"] == 256
        assert out["disk_format"] == "raw" and out["container_format"] == "bare"
    finally:
        run_cli(server, cli_home, "image", "delete", out["id"], check=False)


def test_cli_hidden_protected_and_id(server, cli_home):
    iid = str(uuid.uuid4())
    name = unique("cli-hidden")
    out = run_cli(server, cli_home, "image", "create", "--id", iid, "--protected",
                  "--disk-format", "vmdk", "--container-format", "ovf", "--min-disk", "3",
                  name, json_out=True)
    try:
        assert out["id"] == iid
        assert out["protected"] is True
        assert out["disk_format"] == "vmdk" and out["container_format"] == "ovf"
        assert out["min_disk"] == 3
        assert out["status"] == "active" and out["size"] == 0  # empty stdin uploaded
        run_cli(server, cli_home, "image", "set", "--hidden", iid)
        shown = run_cli(server, cli_home, "image", "show", iid, json_out=True)
        assert _props(shown).get("os_hidden") is True, shown
        rows = run_cli(server, cli_home, "image", "list", json_out=True)
        assert iid not in [r["ID"] for r in rows]
        rows = run_cli(server, cli_home, "image", "list", "--hidden", json_out=True)
        assert iid in [r["ID"] for r in rows]
        # show by name finds hidden images too (second lookup with os_hidden=true)
        assert run_cli(server, cli_home, "image", "show", name, json_out=True)["id"] == iid
        p = run_cli(server, cli_home, "image", "delete", iid, check=False)
        assert p.returncode == 1, p
        assert run_cli(server, cli_home, "image", "show", iid, json_out=True)["id"] == iid
        run_cli(server, cli_home, "image", "set", "--unprotected", "--unhidden", iid)
        rows = run_cli(server, cli_home, "image", "list", json_out=True)
        assert iid in [r["ID"] for r in rows]
        # The id cannot be reused, even after deletion (409 from glance -> exit 1).
        run_cli(server, cli_home, "image", "delete", iid)
        p = run_cli(server, cli_home, "image", "create", "--id", iid, unique("cli-reuse"),
                    check=False)
        assert p.returncode == 1 and "409" in p.stderr, cli_wire_log(p.stderr)
    finally:
        run_cli(server, cli_home, "image", "set", "--unprotected", iid, check=False)
        run_cli(server, cli_home, "image", "delete", iid, check=False)


def test_cli_members(server, cli_home):
    """Optional in the spec (section 19.11): `image add project`, `image set --accept`,
    `image member list`, `image remove project`."""
    out = run_cli(server, cli_home, "image", "create", "--shared", unique("cli-shared"),
                  json_out=True)
    iid = out["id"]
    try:
        assert out["visibility"] == "shared"
        m = run_cli(server, cli_home, "image", "add", "project", iid, PROJECT_B, json_out=True)
        assert m["image_id"] == iid and m["member_id"] == PROJECT_B, m
        assert m["status"] == "pending", m
        # A pending member can GET the image but does not list it by default.
        assert run_cli(server, cli_home, "image", "show", iid, token=TOKEN_B,
                       json_out=True)["id"] == iid
        rows = run_cli(server, cli_home, "image", "list", token=TOKEN_B, json_out=True)
        assert iid not in [r["ID"] for r in rows]
        rows = run_cli(server, cli_home, "image", "list", "--member-status", "pending",
                       "--shared", token=TOKEN_B, json_out=True)
        assert iid in [r["ID"] for r in rows]
        run_cli(server, cli_home, "image", "set", "--accept", "--project", PROJECT_B, iid,
                token=TOKEN_B)
        rows = run_cli(server, cli_home, "image", "list", token=TOKEN_B, json_out=True)
        assert iid in [r["ID"] for r in rows]
        members = run_cli(server, cli_home, "image", "member", "list", iid, json_out=True)
        assert [(r["Image ID"], r["Member ID"], r["Status"]) for r in members] == [
            (iid, PROJECT_B, "accepted")], members
        run_cli(server, cli_home, "image", "remove", "project", iid, PROJECT_B)
        p = run_cli(server, cli_home, "image", "show", iid, token=TOKEN_B, check=False)
        assert p.returncode == 1 and "No Image found" in p.stderr, p.stderr
    finally:
        run_cli(server, cli_home, "image", "delete", iid, check=False)


def test_cli_visibility_rules(server, cli_home):
    p = run_cli(server, cli_home, "image", "create", "--public", unique("cli-pub"), check=False)
    assert p.returncode == 1 and "403" in p.stderr, cli_wire_log(p.stderr)
    out = run_cli(server, cli_home, "image", "create", "--public", unique("cli-pub"),
                  token=TOKEN_ADMIN, json_out=True)
    try:
        assert out["visibility"] == "public" and out["owner"] == PROJECT_ADMIN
        rows = run_cli(server, cli_home, "image", "list", "--public", token=TOKEN_B,
                       json_out=True)
        assert out["id"] in [r["ID"] for r in rows]
        p = run_cli(server, cli_home, "image", "set", "--name", "taken", out["id"],
                    token=TOKEN_B, check=False)
        assert p.returncode == 1 and "403" in p.stderr, cli_wire_log(p.stderr)
        # `image list --property` filters client-side on what the server returned.
        rows = run_cli(server, cli_home, "image", "list", "--property",
                       f"{OBJECT_KEY}=images/{out['name']}", token=TOKEN_B, json_out=True)
        assert [r["ID"] for r in rows] == [out["id"]], rows
    finally:
        run_cli(server, cli_home, "image", "delete", out["id"], token=TOKEN_ADMIN, check=False)


def test_cli_delete(server, cli_home, payload):
    name = unique("cli-delete")
    out = run_cli(server, cli_home, "image", "create", "--file", str(payload.path), name,
                  json_out=True)
    run_cli(server, cli_home, "image", "delete", name)
    p = run_cli(server, cli_home, "image", "show", out["id"], check=False)
    assert p.returncode == 1 and "No Image found" in p.stderr, p.stderr
    p = run_cli(server, cli_home, "image", "delete", out["id"], check=False)
    assert p.returncode == 1, p


# --------------------------------------------------------------------------------------
# Cross-API: the Compute API view of the same store
# --------------------------------------------------------------------------------------


def test_compute_metadata_shows_glance_properties(server, sdk_a, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("x-meta"))
    try:
        sdk_a.image.update_image(img.id, os_distro="cirros", hw_disk_bus="virtio")
        r = compute(server, "GET", f"/images/{img.id}/metadata")
        assert r.status_code == 200, describe(r)
        md = r.json()["metadata"]
        assert md["os_distro"] == "cirros", md
        assert md["hw_disk_bus"] == "virtio", md
        assert md[MD5_KEY] == payload.md5, md
        assert md[SHA256_KEY] == payload.sha256, md
        assert md[OBJECT_KEY] == f"images/{img.name}", md
        leaked = GLANCE_BASE_KEYS & set(md)
        assert not leaked, f"base attributes in compute metadata: {leaked}: {md}"
        # Exactly the non-base properties Glance shows.
        raw = glance_raw(server, "GET", f"/v2/images/{img.id}").json()
        expected = {k: v for k, v in raw.items() if k not in GLANCE_BASE_KEYS}
        assert md == expected, (md, expected)
        # One key.
        r = compute(server, "GET", f"/images/{img.id}/metadata/os_distro")
        assert r.status_code == 200, describe(r)
        assert r.json() == {"meta": {"os_distro": "cirros"}}
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_compute_metadata_post_visible_in_sdk(server, sdk_a, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("x-post"))
    try:
        r = compute(server, "POST", f"/images/{img.id}/metadata", json={"metadata": {"x": "1"}})
        assert r.status_code == 200, describe(r)
        md = r.json()["metadata"]
        assert md["x"] == "1" and md[MD5_KEY] == payload.md5, md
        got = sdk_a.image.get_image(img.id)
        assert got.properties["x"] == "1", got.properties
        assert got.status == "active" and got.checksum == payload.md5
        raw = glance_raw(server, "GET", f"/v2/images/{img.id}")
        assert raw.json()["x"] == "1", describe(raw)
        # PUT one item, then DELETE it: the SDK sees both.
        r = compute(server, "PUT", f"/images/{img.id}/metadata/y", json={"meta": {"y": "2"}})
        assert r.status_code == 200, describe(r)
        assert sdk_a.image.get_image(img.id).properties["y"] == "2"
        r = compute(server, "DELETE", f"/images/{img.id}/metadata/y")
        assert r.status_code == 204, describe(r)
        props = sdk_a.image.get_image(img.id).properties
        assert "y" not in props and props["x"] == "1", props
        # And the SDK's change of x shows up on the compute side.
        sdk_a.image.update_image(img.id, x="3")
        r = compute(server, "GET", f"/images/{img.id}/metadata/x")
        assert r.json() == {"meta": {"x": "3"}}, describe(r)
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_compute_metadata_put_replaces_glance_properties(server, sdk_a, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("x-putall"), keep="no")
    try:
        r = compute(server, "PUT", f"/images/{img.id}/metadata",
                    json={"metadata": {"only": "this"}})
        assert r.status_code == 200, describe(r)
        assert r.json() == {"metadata": {"only": "this"}}, describe(r)
        got = sdk_a.image.get_image(img.id)
        assert got.properties == {"only": "this"}, got.properties
        # Base attributes are untouched.
        assert got.status == "active" and got.name == img.name and got.checksum == payload.md5
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_compute_image_status_active_and_queued(server, sdk_a, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("x-status"))
    queued = sdk_a.image.create_image(unique("x-queued"), disk_format="raw",
                                      container_format="bare", allow_duplicates=True,
                                      min_ram=128, min_disk=1)
    try:
        r = compute(server, "GET", f"/images/{img.id}")
        assert r.status_code == 200, describe(r)
        c = r.json()["image"]
        assert c["id"] == img.id and c["name"] == img.name, c
        assert c["status"] == "ACTIVE" and c["progress"] == 100, c
        assert c["OS-EXT-IMG-SIZE:size"] == len(payload.data), c
        assert c["minRam"] == 0 and c["minDisk"] == 0, c
        assert c["metadata"][MD5_KEY] == payload.md5, c
        links = {link["rel"]: link for link in c["links"]}
        assert links["self"]["href"] == f"{server.compute_url}/v2.1/images/{img.id}", links
        assert links["bookmark"]["href"] == f"{server.compute_url}/images/{img.id}", links
        r = compute(server, "GET", f"/images/{queued.id}")
        assert r.status_code == 200, describe(r)
        q = r.json()["image"]
        assert q["status"] == "SAVING" and q["progress"] == 25, q
        assert q["OS-EXT-IMG-SIZE:size"] == 0, q
        assert q["minRam"] == 128 and q["minDisk"] == 1, q
        # Deactivated -> UNKNOWN / 0.
        sdk_a.image.deactivate_image(img)
        d = compute(server, "GET", f"/images/{img.id}").json()["image"]
        assert d["status"] == "UNKNOWN" and d["progress"] == 0, d
        sdk_a.image.reactivate_image(img)
        # Both show up in the compute detail list.
        r = compute(server, "GET", "/images/detail")
        assert r.status_code == 200, describe(r)
        listed = {i["id"]: i for i in r.json()["images"]}
        assert listed[img.id]["status"] == "ACTIVE", listed.get(img.id)
        assert listed[queued.id]["status"] == "SAVING", listed.get(queued.id)
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)
        sdk_a.image.delete_image(queued.id, ignore_missing=True)


def test_compute_list_pagination_over_shared_store(server, sdk_a):
    tag = unique("cpage")
    made = []
    for _ in range(3):
        next_second()
        made.append(sdk_a.image.create_image(unique("cp"), disk_format="raw",
                                             container_format="bare", allow_duplicates=True,
                                             tags=[tag], cpage=tag).id)
    try:
        r = compute(server, "GET", f"/images/detail?property-cpage={tag}&limit=2")
        assert r.status_code == 200, describe(r)
        # ("cpage" starts with a letter outside "property-", so Nova's lstrip quirk and a
        # proper prefix strip agree on it.)
        page = r.json()
        got = [i["id"] for i in page["images"]]
        assert got == [made[2], made[1]], describe(r)
        nxt = page["images_links"][0]["href"]
        assert "marker=" + made[1] in nxt, nxt
        r = requests.get(nxt, headers={"X-Auth-Token": TOKEN_A}, timeout=30)
        assert [i["id"] for i in r.json()["images"]] == [made[0]], describe(r)
    finally:
        for i in made:
            sdk_a.image.delete_image(i, ignore_missing=True)


def test_compute_alternate_link_names_image_listener(server, sdk_a):
    # nova-images.md 4.1: alternate = "<glance endpoint, version stripped>/images/<id>". With
    # no --image-url given, the Glance endpoint is imagemeta's own image listener.
    img = sdk_a.image.create_image(unique("x-links"), disk_format="raw",
                                   container_format="bare", allow_duplicates=True)
    try:
        r = compute(server, "GET", f"/images/{img.id}")
        assert r.status_code == 200, describe(r)
        alt = [link for link in r.json()["image"]["links"] if link["rel"] == "alternate"]
        assert alt == [{"rel": "alternate", "type": "application/vnd.openstack.image",
                        "href": f"{server.image_url}/images/{img.id}"}], describe(r)
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_compute_delete_makes_sdk_404(server, sdk_a, payload, cli_home):
    img = sdk_create_uploaded(sdk_a, payload, unique("x-delete"))
    r = compute(server, "DELETE", f"/images/{img.id}")
    assert r.status_code == 204, describe(r)
    with pytest.raises(sdk_exc.ResourceNotFound):
        sdk_a.image.get_image(img.id)
    r = sdk_a.image.get(f"/images/{img.id}/file")
    assert r.status_code == 404, describe(r)
    p = run_cli(server, cli_home, "image", "show", img.id, check=False)
    assert p.returncode == 1 and "No Image found" in p.stderr, p.stderr
    r = compute(server, "GET", f"/images/{img.id}")
    assert r.status_code == 404, describe(r)


def test_sdk_delete_makes_compute_404(server, sdk_a, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("x-delete2"))
    sdk_a.image.delete_image(img)
    r = compute(server, "GET", f"/images/{img.id}/metadata")
    assert r.status_code == 404, describe(r)
    assert r.json() == {"itemNotFound": {"code": 404, "message": "Image not found."}}, describe(r)


# --------------------------------------------------------------------------------------
# Ownership and visibility
# --------------------------------------------------------------------------------------


def test_other_project_cannot_see_private_image(server, sdk_a, sdk_b, sdk_admin, payload,
                                                cli_home):
    img = sdk_create_uploaded(sdk_a, payload, unique("own-private"), visibility="private")
    try:
        assert sdk_a.image.get_image(img.id).visibility == "private"
        with pytest.raises(sdk_exc.ResourceNotFound) as ei:
            sdk_b.image.get_image(img.id)
        assert ei.value.status_code == 404
        assert img.id not in [i.id for i in sdk_b.image.images()]
        assert sdk_b.image.find_image(img.name) is None
        with pytest.raises(sdk_exc.ResourceNotFound):
            sdk_b.image.update_image(img.id, name="stolen")
        with pytest.raises(sdk_exc.ResourceNotFound):
            sdk_b.image.delete_image(img.id, ignore_missing=False)
        r = sdk_b.image.get(f"/images/{img.id}/file")
        assert r.status_code == 404, describe(r)
        p = run_cli(server, cli_home, "image", "show", img.id, token=TOKEN_B, check=False)
        assert p.returncode == 1 and "No Image found" in p.stderr, p.stderr
        # The compute API agrees.
        r = compute(server, "GET", f"/images/{img.id}/metadata", token=TOKEN_B)
        assert r.status_code == 404, describe(r)
        # An admin sees it.
        assert sdk_admin.image.get_image(img.id).owner == PROJECT_A
        assert img.id in [i.id for i in sdk_admin.image.images()]
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_other_project_gets_403_updating_public_image(server, sdk_a, sdk_b, sdk_admin, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("own-public"))
    try:
        # A member may not publicize; an admin may.
        with pytest.raises(sdk_exc.ForbiddenException):
            sdk_a.image.update_image(img, visibility="public")
        sdk_admin.image.update_image(img.id, visibility="public")
        seen = sdk_b.image.get_image(img.id)
        assert seen.visibility == "public" and seen.owner == PROJECT_A
        assert img.id in [i.id for i in sdk_b.image.images()]
        assert sdk_b.image.download_image(img).content == payload.data
        with pytest.raises(sdk_exc.ForbiddenException) as ei:
            sdk_b.image.update_image(img.id, name="hijacked")
        assert ei.value.status_code == 403
        with pytest.raises(sdk_exc.ForbiddenException):
            sdk_b.image.add_tag(img.id, "b-tag")
        with pytest.raises(sdk_exc.ForbiddenException):
            sdk_b.image.delete_image(img.id, ignore_missing=False)
        # The SDK ignores the status of action POSTs, so check the response itself.
        r = sdk_b.image.post(f"/images/{img.id}/actions/deactivate")
        assert r.status_code == 403, describe(r)
        # The compute API maps Glance's 403 to its own.
        r = compute(server, "POST", f"/images/{img.id}/metadata",
                    json={"metadata": {"b": "1"}}, token=TOKEN_B)
        assert r.status_code == 403, describe(r)
        assert r.json() == {"forbidden": {"code": 403,
                                          "message": f"Not authorized for image {img.id}."}}, \
            describe(r)
        r = compute(server, "DELETE", f"/images/{img.id}", token=TOKEN_B)
        assert r.status_code == 403, describe(r)
        unchanged = sdk_a.image.get_image(img.id)
        assert unchanged.name == img.name and "b" not in unchanged.properties
        assert "b-tag" not in unchanged.tags
    finally:
        sdk_admin.image.delete_image(img.id, ignore_missing=True)


def test_non_admin_cannot_create_public_image(sdk_a):
    with pytest.raises(sdk_exc.ForbiddenException):
        sdk_a.image.create_image(unique("pub"), disk_format="raw", container_format="bare",
                                 allow_duplicates=True, visibility="public")


def test_bad_token_is_401(server):
    r = glance_raw(server, "GET", "/v2/images", token="not-a-token")
    assert r.status_code == 401, describe(r)
    conn = _connect(server, "not-a-token")
    try:
        with pytest.raises(sdk_exc.HttpException) as ei:
            list(conn.image.images())
        assert ei.value.status_code == 401
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# python-glanceclient: how Nova reaches the image service (and the `glance` CLI's library)
# --------------------------------------------------------------------------------------


def _glance(server: Server, token: str = TOKEN_A):
    """glanceclient's v2 client with an endpoint and a token. It fetches /v2/schemas/image and
    validates every image it builds or changes against it (warlock models)."""
    return glanceclient.Client("2", endpoint=server.image_url, token=token)


def test_glanceclient_image_lifecycle(server, payload):
    gc = _glance(server)
    name = unique("gc")
    img = gc.images.create(name=name, disk_format="raw", container_format="bare", hw_disk_bus="virtio")
    try:
        assert img.status == "queued", img
        assert img["hw_disk_bus"] == "virtio", img
        with open(payload.path, "rb") as f:
            gc.images.upload(img.id, f, image_size=len(payload.data))
        got = gc.images.get(img.id)
        assert (got.status, got.size, got.checksum) == ("active", len(payload.data), payload.md5), got
        assert (got.os_hash_algo, got.os_hash_value) == ("sha512", payload.sha512), got
        # glanceclient checks the download against the image's hash as it reads.
        assert b"".join(gc.images.data(img.id)) == payload.data

        gc.images.update(img.id, os_distro="cirros", remove_props=["hw_disk_bus"])
        got = gc.images.get(img.id)
        assert got["os_distro"] == "cirros" and "hw_disk_bus" not in got, got
        r = compute(server, "GET", f"/images/{img.id}/metadata")
        assert r.status_code == 200, describe(r)
        assert r.json()["metadata"]["os_distro"] == "cirros", r.json()
        assert "hw_disk_bus" not in r.json()["metadata"], r.json()

        gc.image_tags.update(img.id, "gc-tag")
        assert gc.images.get(img.id).tags == ["gc-tag"]
        assert [i.id for i in gc.images.list(filters={"tag": ["gc-tag"], "name": name})] == [img.id]
        gc.image_tags.delete(img.id, "gc-tag")
        assert gc.images.get(img.id).tags == []
    finally:
        gc.images.delete(img.id)
    with pytest.raises(glance_exc.HTTPNotFound):
        gc.images.get(img.id)


def test_glanceclient_lists_page_by_page(server):
    """glanceclient lists with `limit` and follows the `next` links."""
    gc = _glance(server)
    tag = unique("gc-page")
    made = [gc.images.create(name=f"{tag}-{n}", tags=[tag]).id for n in range(5)]
    try:
        listed = [i.id for i in gc.images.list(filters={"tag": [tag]}, page_size=2)]
        assert sorted(listed) == sorted(made), (listed, made)
        assert len(listed) == 5
    finally:
        for image_id in made:
            gc.images.delete(image_id)


def test_glanceclient_members(server):
    owner, member = _glance(server, TOKEN_A), _glance(server, TOKEN_B)
    img = owner.images.create(name=unique("gc-shared"), visibility="shared")
    try:
        assert owner.image_members.create(img.id, PROJECT_B).status == "pending"
        member.image_members.update(img.id, PROJECT_B, "accepted")
        assert [(m.member_id, m.status) for m in owner.image_members.list(img.id)] == [(PROJECT_B, "accepted")]
        assert member.images.get(img.id).id == img.id
        assert img.id in [i.id for i in member.images.list(filters={"visibility": "shared"})]
        owner.image_members.delete(img.id, PROJECT_B)
        with pytest.raises(glance_exc.HTTPNotFound):
            member.images.get(img.id)
    finally:
        owner.images.delete(img.id)


def test_glanceclient_errors(server):
    with pytest.raises(glance_exc.HTTPUnauthorized):
        list(_glance(server, "not-a-token").images.list())
    gc = _glance(server)
    with pytest.raises(glance_exc.HTTPNotFound):
        gc.images.get(str(uuid.uuid4()))
    img = gc.images.create(name=unique("gc-protected"), protected=True)
    try:
        with pytest.raises(glance_exc.HTTPForbidden):
            gc.images.delete(img.id)
    finally:
        gc.images.update(img.id, protected=False)
        gc.images.delete(img.id)


# --------------------------------------------------------------------------------------
# openstacksdk's compute proxy: the Compute API's image and image-metadata calls
# --------------------------------------------------------------------------------------


def test_sdk_compute_images_and_metadata(server, sdk_a, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("sdk-compute"))
    try:
        listed = {i.id: i for i in sdk_a.compute.images(details=True)}
        assert img.id in listed, list(listed)
        assert listed[img.id].status == "ACTIVE", listed[img.id]
        assert img.id in {i.id for i in sdk_a.compute.images(details=False)}
        got = sdk_a.compute.get_image(img.id)
        assert (got.name, got.status, got.min_disk, got.min_ram) == (img.name, "ACTIVE", 0, 0), got
        assert got.size == len(payload.data), got
        assert sdk_a.compute.find_image(img.name).id == img.id

        sdk_a.compute.set_image_metadata(img.id, os_distro="cirros", hw_disk_bus="virtio")
        md = sdk_a.compute.get_image_metadata(img.id).metadata
        assert (md["os_distro"], md["hw_disk_bus"]) == ("cirros", "virtio"), md
        sdk_a.compute.delete_image_metadata(img.id, ["hw_disk_bus"])
        md = sdk_a.compute.get_image_metadata(img.id).metadata
        assert "hw_disk_bus" not in md and md["os_distro"] == "cirros", md
        # The image service sees what the Compute API wrote (the SDK models both keys).
        seen = sdk_a.image.get_image(img.id)
        assert (seen.os_distro, seen.hw_disk_bus) == ("cirros", None), seen

        sdk_a.compute.delete_image(img.id)
        with pytest.raises(sdk_exc.NotFoundException):
            sdk_a.compute.get_image(img.id)
        with pytest.raises(sdk_exc.NotFoundException):
            sdk_a.image.get_image(img.id)
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


def test_sdk_compute_metadata_errors(server, sdk_a, sdk_b, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("sdk-compute-err"))
    try:
        with pytest.raises(sdk_exc.NotFoundException):
            sdk_b.compute.get_image(img.id)  # another project's private image
        with pytest.raises(sdk_exc.NotFoundException):
            sdk_a.compute.get_image_metadata(str(uuid.uuid4()))
        with pytest.raises(sdk_exc.NotFoundException):
            sdk_a.compute.delete_image_metadata(img.id, ["no-such-key"])
        with pytest.raises(sdk_exc.HttpException) as bad:
            sdk_a.compute.set_image_metadata(img.id, **{"k" * 256: "v"})
        assert bad.value.status_code == 400, bad.value
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


# --------------------------------------------------------------------------------------
# openstacksdk's cloud layer: what Ansible's openstack.cloud modules call
# --------------------------------------------------------------------------------------


def test_sdk_cloud_layer_image_lifecycle(sdk_a, payload, tmp_path):
    name = unique("cloud")
    img = sdk_a.create_image(
        name, filename=str(payload.path), disk_format="raw", container_format="bare", wait=True,
        meta={"os_distro": "cirros"}, tags=["cloud-tag"],
    )
    try:
        assert img.status == "active", img
        got = sdk_a.get_image(name)
        assert got is not None and got.id == img.id and got.checksum == payload.md5, got
        assert got.os_distro == "cirros", got
        assert img.id in [i.id for i in sdk_a.list_images()]
        assert [i.id for i in sdk_a.search_images(name)] == [img.id]
        # With the image itself, as Ansible's module does (this SDK fails on a bare id: it
        # reads the properties of an image it did not fetch).
        sdk_a.update_image_properties(image=got, hw_disk_bus="virtio")
        assert sdk_a.get_image(img.id).hw_disk_bus == "virtio"
        out = tmp_path / "cloud.raw"
        sdk_a.download_image(name, output_path=str(out))
        assert out.read_bytes() == payload.data
        assert sdk_a.delete_image(name, wait=True) is True
        assert sdk_a.get_image(name) is None
    finally:
        sdk_a.image.delete_image(img.id, ignore_missing=True)


# --------------------------------------------------------------------------------------
# Interoperable image import and tasks
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(payload):
    """A loopback HTTP server that serves the payload at /payload.raw (web-download's source)."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            if self.path != "/payload.raw":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload.data)))
            self.end_headers()
            self.wfile.write(payload.data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/payload.raw"
    httpd.shutdown()


def wait_active(conn, image_id: str, timeout: float = 30.0):
    deadline = time.time() + timeout
    while True:
        img = conn.image.get_image(image_id)
        if img.status == "active":
            return img
        assert img.status in ("queued", "uploading", "importing"), img
        assert time.time() < deadline, f"{image_id} stayed {img.status}"
        time.sleep(0.1)


def test_cli_image_import_info(server, cli_home):
    out = run_cli(server, cli_home, "image", "import", "info", json_out=True)
    assert out["import-methods"] == ["glance-direct", "web-download", "copy-image"], out


def test_cli_create_with_import(server, cli_home, sdk_a, payload):
    """`openstack image create --import`: the SDK reads the import methods the create answer
    names, stages the file and imports it with glance-direct."""
    name = unique("cli-import")
    out = run_cli(server, cli_home, "image", "create", "--import", "--file", str(payload.path),
                  "--disk-format", "raw", "--container-format", "bare", name, json_out=True)
    img = wait_active(sdk_a, out["id"])
    assert (img.size, img.checksum, img.hash_value) == (len(payload.data), payload.md5, payload.sha512)
    assert b"".join(sdk_a.image.download_image(img.id, stream=True).iter_content(65536)) == payload.data
    sdk_a.image.delete_image(img.id)


def test_cli_stage_then_import(server, cli_home, sdk_a, payload):
    """`openstack image stage` then `openstack image import` with its default body
    (all_stores_must_succeed false), as an operator types them."""
    img = sdk_a.image.create_image(unique("cli-stage"), disk_format="raw", container_format="bare")
    run_cli(server, cli_home, "image", "stage", "--file", str(payload.path), img.id)
    assert sdk_a.image.get_image(img.id).status == "uploading"
    run_cli(server, cli_home, "image", "import", "--method", "glance-direct", img.id)
    assert wait_active(sdk_a, img.id).checksum == payload.md5
    sdk_a.image.delete_image(img.id)


def test_cli_web_download_import_and_task_list(server, cli_home, sdk_a, sdk_admin, payload, web):
    img = sdk_a.image.create_image(unique("cli-web"), disk_format="raw", container_format="bare")
    run_cli(server, cli_home, "image", "import", "--method", "web-download", "--uri", web, img.id)
    assert wait_active(sdk_a, img.id).checksum == payload.md5
    # The task that ran it, as the admin's `openstack image task list` and `show` see it.
    tasks = run_cli(server, cli_home, "image", "task", "list", json_out=True, token=TOKEN_ADMIN)
    assert tasks and all(set(t) == {"ID", "Type", "Status", "Owner"} for t in tasks), tasks
    mine = [t for t in tasks if t["Type"] == "api_image_import" and t["Owner"] == PROJECT_A]
    assert mine, tasks
    shown = [run_cli(server, cli_home, "image", "task", "show", t["ID"], json_out=True, token=TOKEN_ADMIN)
             for t in mine]
    this = [t for t in shown if (t.get("result") or {}).get("image_id") == img.id]
    assert len(this) == 1, shown
    assert this[0]["status"] == "success" and this[0]["input"]["import_req"]["method"]["uri"] == web, this
    # Not for members.
    denied = run_cli(server, cli_home, "image", "task", "list", check=False)
    assert denied.returncode != 0 and "403" in denied.stderr
    sdk_a.image.delete_image(img.id)


def test_sdk_import_calls(server, sdk_a, payload, web):
    info = sdk_a.image.get_import_info()
    assert info.import_methods["value"] == ["glance-direct", "web-download", "copy-image"], info
    img = sdk_a.image.create_image(unique("sdk-import"), disk_format="raw", container_format="bare")
    assert img.image_import_methods == ["glance-direct", "web-download", "copy-image"], img
    sdk_a.image.import_image(img, method="web-download", uri=web)
    assert wait_active(sdk_a, img.id).size == len(payload.data)
    # A bad URL is refused with Glance's words (the SDK does not raise on it: the raw answer),
    # and the image stays queued.
    other = sdk_a.image.create_image(unique("sdk-import-bad"), disk_format="raw", container_format="bare")
    r = glance_raw(server, "POST", f"/v2/images/{other.id}/import",
                   json={"method": {"name": "web-download", "uri": "ftp://127.0.0.1/x"}})
    assert r.status_code == 400 and "does not pass filtering: ftp://127.0.0.1/x" in r.text, describe(r)
    assert sdk_a.image.get_image(other.id).status == "queued"
    for i in (img, other):
        sdk_a.image.delete_image(i.id)


def test_glanceclient_stage_and_import(server, payload):
    """python-glanceclient (what Nova uses): stage, import, and the image's tasks."""
    gc = glanceclient.Client("2", endpoint=server.image_url, token=TOKEN_A)
    assert gc.images.get_import_info()["import-methods"]["value"] == ["glance-direct", "web-download", "copy-image"]
    img = gc.images.create(name=unique("gc-import"), disk_format="raw", container_format="bare")
    gc.images.stage(img["id"], open(payload.path, "rb"))
    gc.images.image_import(img["id"], method="glance-direct")
    deadline = time.time() + 30
    while gc.images.get(img["id"])["status"] != "active":
        assert time.time() < deadline
        time.sleep(0.1)
    assert gc.images.get(img["id"])["checksum"] == payload.md5
    gc.images.delete(img["id"])



def test_several_stores_import_copy_and_delete_from_store(multi_server, payload):
    """Glance's multi-store calls as the SDK and `openstack image import` make them: the
    stores, an import to named stores, copy-image to every store, a copy deleted from one.
    (The SDK's Image has no `stores` attribute: it lands in `properties`.)"""
    sdk = _connect(multi_server, TOKEN_A)
    admin = _connect(multi_server, TOKEN_ADMIN)
    home = multi_server.workdir / "cli-home"
    home.mkdir(exist_ok=True)
    assert [(s.id, s.is_default) for s in sdk.image.stores()] == [("file", True), ("remote", None)]

    # `openstack image stage` + `image import --store remote`: the data goes to that store.
    img = sdk.image.create_image(unique("multi-import"), disk_format="raw", container_format="bare")
    run_cli(multi_server, home, "image", "stage", "--file", str(payload.path), img.id)
    # (`--store` takes several values: the image goes first.)
    run_cli(multi_server, home, "image", "import", img.id, "--method", "glance-direct", "--store", "remote")
    got = wait_active(sdk, img.id)
    assert (got.properties.get("stores"), got.checksum) == ("remote", payload.md5), got

    # copy-image: not for members; an admin copies it to every store that lacks it.
    denied = run_cli(multi_server, home, "image", "import", "--method", "copy-image", "--all-stores",
                     img.id, check=False)
    # (The SDK under `openstack image import` does not raise on the answer: OSC exits 0.)
    assert '"POST /v2/images/%s/import HTTP/1.1" 403' % img.id in denied.stderr, denied.stderr
    assert sdk.image.get_image(img.id).properties.get("stores") == "remote"
    run_cli(multi_server, home, "image", "import", "--method", "copy-image", "--all-stores", img.id,
            token=TOKEN_ADMIN)
    deadline = time.time() + 30
    while (got := sdk.image.get_image(img.id)).properties.get("stores") != "remote,file":
        assert time.time() < deadline, got
        time.sleep(0.1)
    assert got.properties.get("os_glance_failed_import") == "", got

    # The SDK's import to both stores at once, then one copy deleted through the SDK.
    both = sdk.image.create_image(unique("multi-both"), disk_format="raw", container_format="bare")
    sdk.image.stage_image(both, data=payload.data)
    sdk.image.import_image(both, method="glance-direct", stores=["file", "remote"])
    while (got := sdk.image.get_image(both.id)).properties.get("stores") != "file,remote":
        assert time.time() < deadline, got
        time.sleep(0.1)
    admin.image.delete_image(both, store="file")
    assert sdk.image.get_image(both.id).properties.get("stores") == "remote"
    assert b"".join(sdk.image.download_image(both.id, stream=True).iter_content(65536)) == payload.data
    for i in (img, both):
        sdk.image.delete_image(i.id)
    for name in ("file", "remote"):
        assert not list((multi_server.workdir / name).iterdir()), f"nothing left in {name}"
    sdk.close()
    admin.close()


# --------------------------------------------------------------------------------------
# Metadata definitions (metadefs)
# --------------------------------------------------------------------------------------


def test_sdk_metadef_calls(sdk_admin, sdk_a):
    """openstacksdk's metadef proxy calls, as Horizon and tooling make them."""
    types = {t.name for t in sdk_a.image.metadef_resource_types()}
    assert {"OS::Glance::Image", "OS::Nova::Flavor", "OS::Cinder::Volume"} <= types, types
    loaded = sdk_a.image.get_metadef_namespace("OS::Compute::Watchdog")
    assert (loaded.visibility, loaded.is_protected, loaded.owner) == ("public", True, "admin")
    names = [n.namespace for n in sdk_a.image.metadef_namespaces(resource_types="OS::Nova::Flavor")]
    assert "OS::Compute::Watchdog" in names and len(names) == len(set(names)) > 10, names

    name = unique("sdk-ns")
    ns = sdk_admin.image.create_metadef_namespace(namespace=name, visibility="public", display_name="D")
    assert (ns.namespace, ns.visibility, ns.is_protected, ns.owner) == (name, "public", False, PROJECT_ADMIN)
    ns = sdk_admin.image.update_metadef_namespace(name, display_name="Changed", visibility="public")
    assert ns.display_name == "Changed"
    obj = sdk_admin.image.create_metadef_object(name, name="obj", description="o", required=[], properties={
        "p": {"type": "string", "title": "P"}})
    assert obj.name == "obj"
    assert [o.name for o in sdk_a.image.metadef_objects(name)] == ["obj"]
    prop = sdk_admin.image.create_metadef_property(name, name="speed", title="Speed", type="integer", minimum=1)
    assert (prop.name, prop.type, prop.minimum) == ("speed", "integer", 1)
    assert sdk_a.image.get_metadef_property("speed", name).title == "Speed"
    assoc = sdk_admin.image.create_metadef_resource_type_association(name, name="OS::Nova::Flavor", prefix="hw:")
    assert (assoc.name, assoc.prefix) == ("OS::Nova::Flavor", "hw:")
    assert [a.name for a in sdk_a.image.metadef_resource_type_associations(name)] == ["OS::Nova::Flavor"]
    sdk_admin.image.add_tag_to_metadef_namespace(name, "t1")
    ns = sdk_admin.image.get_metadef_namespace(name)
    ns.set_tags(sdk_admin.image, ["t2", "t3"], append=True)
    assert sorted(t["name"] for t in sdk_a.image.get_metadef_namespace(name).tags) == ["t1", "t2", "t3"]
    # Members read it, but may not change it.
    with pytest.raises(sdk_exc.ForbiddenException):
        sdk_a.image.delete_metadef_namespace(name)
    sdk_admin.image.delete_metadef_resource_type_association("OS::Nova::Flavor", name)
    sdk_admin.image.delete_metadef_property("speed", name)
    sdk_admin.image.delete_all_metadef_objects(name)
    sdk_admin.image.delete_metadef_namespace(name)
    with pytest.raises(sdk_exc.NotFoundException):
        sdk_a.image.get_metadef_namespace(name)
    schema = sdk_a.image.get_metadef_namespace_schema()
    assert schema.required == ["namespace"] and schema.additional_properties is False


def test_cli_metadef_commands(server, cli_home):
    """`openstack image metadef …` as an operator types them."""
    name = unique("cli-ns")
    out = run_cli(server, cli_home, "image", "metadef", "namespace", "create", "--public",
                  "--description", "made by the CLI", name, token=TOKEN_ADMIN, json_out=True)
    assert (out["namespace"], out["visibility"]) == (name, "public"), out
    listed = run_cli(server, cli_home, "image", "metadef", "namespace", "list", json_out=True)
    assert name in [n["namespace"] for n in listed] and "OS::Compute::Watchdog" in [n["namespace"] for n in listed]
    run_cli(server, cli_home, "image", "metadef", "namespace", "set", "--display-name", "Shown", "--public",
            name, token=TOKEN_ADMIN)
    shown = run_cli(server, cli_home, "image", "metadef", "namespace", "show", name, json_out=True)
    assert shown["display_name"] == "Shown", shown
    run_cli(server, cli_home, "image", "metadef", "property", "create", "--name", "mode", "--type", "string",
            "--title", "Mode", "--schema", json.dumps({"enum": ["a", "b"]}), name, token=TOKEN_ADMIN)
    prop = run_cli(server, cli_home, "image", "metadef", "property", "show", name, "mode", json_out=True)
    assert (prop["name"], prop["title"], prop["enum"]) == ("mode", "Mode", ["a", "b"]), prop
    props = run_cli(server, cli_home, "image", "metadef", "property", "list", name, json_out=True)
    assert [p["name"] for p in props] == ["mode"], props
    run_cli(server, cli_home, "image", "metadef", "object", "create", "--namespace", name, "obj", token=TOKEN_ADMIN)
    objects = run_cli(server, cli_home, "image", "metadef", "object", "list", name, json_out=True)
    assert [o["name"] for o in objects] == ["obj"], objects
    types = run_cli(server, cli_home, "image", "metadef", "resource", "type", "list", json_out=True)
    assert "OS::Glance::Image" in [t["Name"] for t in types], types
    run_cli(server, cli_home, "image", "metadef", "resource", "type", "association", "create", name,
            "OS::Glance::Image", token=TOKEN_ADMIN)
    assocs = run_cli(server, cli_home, "image", "metadef", "resource", "type", "association", "list", name,
                     json_out=True)
    assert [a["Name"] for a in assocs] == ["OS::Glance::Image"], assocs
    denied = run_cli(server, cli_home, "image", "metadef", "namespace", "delete", name, check=False)
    assert denied.returncode != 0 and "403" in denied.stderr
    run_cli(server, cli_home, "image", "metadef", "namespace", "delete", name, token=TOKEN_ADMIN)
    gone = run_cli(server, cli_home, "image", "metadef", "namespace", "show", name, check=False)
    assert gone.returncode != 0 and "404" in gone.stderr


def test_glanceclient_metadefs(server):
    """python-glanceclient checks every body against the metadefs schemas it fetches first, and
    updates by sending the whole document it read back."""
    gc = glanceclient.Client("2", endpoint=server.image_url, token=TOKEN_ADMIN)
    name = unique("gc-ns")
    ns = gc.metadefs_namespace.create(namespace=name, visibility="public", description="d")
    assert ns["namespace"] == name
    gc.metadefs_property.create(name, name="p1", title="P1", type="string")
    gc.metadefs_object.create(name, name="o1", properties={"x": {"type": "integer", "title": "X"}})
    # (generators: the requests go out as they are read)
    assert [t["name"] for t in gc.metadefs_tag.create_multiple(name, tags=["a", "b"])] == ["a", "b"]
    # (glanceclient's append=True fails in the client itself: its header value is a bool)
    gc.metadefs_tag.create(name, "c")
    ns = gc.metadefs_namespace.update(name, display_name="Updated")
    assert ns["display_name"] == "Updated"
    full = gc.metadefs_namespace.get(name)
    assert sorted(t["name"] for t in full["tags"]) == ["a", "b", "c"], full
    assert list(full["properties"]) == ["p1"] and [o["name"] for o in full["objects"]] == ["o1"], full
    prop = gc.metadefs_property.update(name, "p1", name="p1", title="Renamed", type="string")
    assert prop["title"] == "Renamed"
    assert name in [n["namespace"] for n in gc.metadefs_namespace.list(filters={"visibility": "public"})]
    gc.metadefs_namespace.delete(name)
    with pytest.raises(glance_exc.HTTPNotFound):
        gc.metadefs_namespace.get(name)


# --------------------------------------------------------------------------------------
# The image cache
# --------------------------------------------------------------------------------------


def wait_cached(conn, image_id: str, timeout: float = 30.0):
    deadline = time.time() + timeout
    while True:
        cache = conn.image.get_image_cache()
        if image_id in [c["image_id"] for c in cache.cached_images]:
            return cache
        assert time.time() < deadline, f"{image_id} never got cached: {cache}"
        time.sleep(0.1)


def test_sdk_image_cache_calls(sdk_a, sdk_admin, payload):
    img = sdk_create_uploaded(sdk_a, payload, unique("sdk-cache"))
    sdk_admin.image.queue_image(img.id)
    cache = wait_cached(sdk_admin, img.id)
    entry = [c for c in cache.cached_images if c["image_id"] == img.id][0]
    assert entry["size"] == len(payload.data) and entry["hits"] == 0, entry
    # A download through the SDK is served from the copy, and counted.
    assert b"".join(sdk_a.image.download_image(img.id, stream=True).iter_content(65536)) == payload.data
    entry = [c for c in sdk_admin.image.get_image_cache().cached_images if c["image_id"] == img.id][0]
    assert entry["hits"] == 1, entry
    with pytest.raises(sdk_exc.ForbiddenException):
        sdk_a.image.get_image_cache()
    sdk_admin.image.cache_delete_image(img.id)
    assert img.id not in [c["image_id"] for c in sdk_admin.image.get_image_cache().cached_images]
    sdk_admin.image.queue_image(img.id)
    wait_cached(sdk_admin, img.id)
    sdk_admin.image.clear_cache("cache")
    sdk_admin.image.clear_cache()
    assert sdk_admin.image.get_image_cache().cached_images == []
    sdk_a.image.delete_image(img.id)


def test_cli_cached_image_commands(server, cli_home, sdk_a, sdk_admin, payload):
    """`openstack cached image queue|list|delete|clear`, as an operator types them."""
    img = sdk_create_uploaded(sdk_a, payload, unique("cli-cache"))
    run_cli(server, cli_home, "cached", "image", "queue", img.id, token=TOKEN_ADMIN)
    wait_cached(sdk_admin, img.id)
    listed = run_cli(server, cli_home, "cached", "image", "list", json_out=True, token=TOKEN_ADMIN)
    mine = [row for row in listed if row["ID"] == img.id]
    assert len(mine) == 1 and mine[0]["State"] == "cached" and mine[0]["Hits"] == 0, listed
    run_cli(server, cli_home, "cached", "image", "delete", img.id, token=TOKEN_ADMIN)
    listed = run_cli(server, cli_home, "cached", "image", "list", json_out=True, token=TOKEN_ADMIN)
    assert img.id not in [row["ID"] for row in listed], listed
    run_cli(server, cli_home, "cached", "image", "clear", "--queue", token=TOKEN_ADMIN)
    run_cli(server, cli_home, "cached", "image", "clear", token=TOKEN_ADMIN)
    denied = run_cli(server, cli_home, "cached", "image", "list", check=False)
    assert denied.returncode != 0 and "403" in denied.stderr
    sdk_a.image.delete_image(img.id)


def test_builtin_metadefs_are_glances_own():
    """imagemeta's built-in definition files (metadefs/) are byte for byte the ones Glance's
    package on PyPI installs."""
    pypi = os.environ.get("GLANCE_METADEFS")
    if not pypi:
        pytest.fail("GLANCE_METADEFS is not set: run the client tests with clients/run.sh")
    theirs = {p.name: p.read_bytes() for p in Path(pypi).glob("*.json")}
    ours = {p.name: p.read_bytes() for p in (REPO / "metadefs").glob("*.json")}
    assert len(theirs) > 30 and sorted(ours) == sorted(theirs), (sorted(ours), sorted(theirs))
    assert [n for n in ours if ours[n] != theirs[n]] == []
