#!/usr/bin/env python3
"""End-to-end check of a running ci/swift harness: the Swift API and the S3 API.

    python3 ci/swift/check.py STATE_DIR          # reads STATE_DIR/swift.json

Standard library only (its own AWS SigV4 signer), so any Python 3 works and nothing has to
be installed. Each check prints PASS/FAIL with what it saw; the last line is
"N passed, N failed". Leaves nothing behind (its containers/buckets are deleted at the end).

Swift (tempauth v1): login, container PUT/listing, object PUT/GET/HEAD/DELETE, a static
large object (two segments + ?multipart-manifest=put), GET of the whole SLO and a range of
it, ?multipart-manifest=get, DELETE ?multipart-manifest=delete removing the segments.

S3 (s3api, path-style, SigV4, region us-east-1): bucket create/head/list, PutObject with a
signed sha256 / UNSIGNED-PAYLOAD / aws-chunked STREAMING-AWS4-HMAC-SHA256-PAYLOAD /
STREAMING-UNSIGNED-PAYLOAD-TRAILER (crc32 trailer), x-amz-checksum-crc32, GetObject with
Range, a presigned GET, CopyObject, ListObjectsV2, multipart upload (2 x 5 MiB parts,
ListParts, ListMultipartUploads, complete, abort), DeleteObjects, and the errors a client
sees for a wrong region, a wrong secret and an invalid bucket name.
"""

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import sys
import time
import urllib.parse
import uuid
import zlib

RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  -- {detail}" if detail else ""), flush=True)
    return ok


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.body = status, body
        self.headers = {k.lower(): v for k, v in headers}

    def __repr__(self):
        return f"{self.status} {self.body[:300]!r}"


def raw_request(host, port, method, path, headers=None, body=b""):
    c = http.client.HTTPConnection(host, port, timeout=60)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        hdrs.setdefault("Host", f"{host}:{port}")
        if body or method in ("PUT", "POST"):
            hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            c.putheader(k, v)
        c.endheaders()
        if body:
            c.send(body)
        r = c.getresponse()
        return Resp(r.status, r.getheaders(), r.read())
    finally:
        c.close()


# --------------------------------------------------------------------------- SigV4
def _q(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


class S3:
    def __init__(self, endpoint, access, secret, region="us-east-1"):
        u = urllib.parse.urlsplit(endpoint)
        self.host, self.port = u.hostname, u.port
        self.access, self.secret, self.region = access, secret, region

    def _key(self, date):
        k = hmac.new(("AWS4" + self.secret).encode(), date.encode(), hashlib.sha256).digest()
        for part in (self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        return k

    def sign(self, method, path, query, headers, payload_hash, amzdate=None):
        """Adds x-amz-date, x-amz-content-sha256 and Authorization to headers; returns
        (signing key, scope, amzdate, signature) for chunk signatures."""
        amzdate = amzdate or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        date = amzdate[:8]
        headers["x-amz-date"] = amzdate
        headers["x-amz-content-sha256"] = payload_hash
        headers["Host"] = f"{self.host}:{self.port}"
        canon_headers = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
        signed = ";".join(sorted(canon_headers))
        canon_query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(query.items()))
        creq = "\n".join([method, _q(path, safe="/-_.~"), canon_query,
                          "".join(f"{k}:{canon_headers[k]}\n" for k in sorted(canon_headers)),
                          signed, payload_hash])
        scope = f"{date}/{self.region}/s3/aws4_request"
        sts = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope,
                         hashlib.sha256(creq.encode()).hexdigest()])
        key = self._key(date)
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access}/{scope}, "
                                    f"SignedHeaders={signed}, Signature={sig}")
        return key, scope, amzdate, sig

    def request(self, method, path, query=None, headers=None, body=b"", payload="signed"):
        query, headers = dict(query or {}), dict(headers or {})
        if payload == "signed":
            ph = hashlib.sha256(body).hexdigest()
        elif payload == "unsigned":
            ph = "UNSIGNED-PAYLOAD"
        else:
            ph = payload
        self.sign(method, path, query, headers, ph)
        qs = "&".join(f"{_q(k)}={_q(v)}" if v != "" else _q(k) for k, v in query.items())
        return raw_request(self.host, self.port, method, _q(path, safe="/-_.~") + ("?" + qs if qs else ""),
                           headers, body)

    def put_streaming_signed(self, path, data, chunk_size=64 * 1024, tamper=False):
        """PUT with Content-Encoding: aws-chunked, x-amz-content-sha256:
        STREAMING-AWS4-HMAC-SHA256-PAYLOAD (every chunk signed, chained from the seed)."""
        chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
        def encoded_len():
            return sum(len(f"{len(c):x};chunk-signature=") + 64 + 2 + len(c) + 2 for c in chunks)
        headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
                   "Content-Length": str(encoded_len())}
        key, scope, amzdate, prev = self.sign("PUT", path, {}, headers, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        empty = hashlib.sha256(b"").hexdigest()
        body = b""
        for c in chunks:
            sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amzdate, scope, prev, empty,
                             hashlib.sha256(c).hexdigest()])
            prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
            if tamper and c:
                c = c[:-1] + bytes([c[-1] ^ 1])
            body += f"{len(c):x};chunk-signature={prev}\r\n".encode() + c + b"\r\n"
        assert len(body) == int(headers["Content-Length"])
        return raw_request(self.host, self.port, "PUT", _q(path, safe="/-_.~"), headers, body)

    def put_streaming_unsigned_trailer(self, path, data, chunk_size=64 * 1024, bad_crc=False):
        """PUT with aws-chunked, STREAMING-UNSIGNED-PAYLOAD-TRAILER and an x-amz-checksum-crc32
        trailer: what recent AWS SDKs send by default (flexible checksums)."""
        crc = base64.b64encode(zlib.crc32(data + (b"!" if bad_crc else b"")).to_bytes(4, "big")).decode()
        body = b"".join(f"{len(data[i:i + chunk_size]):x}\r\n".encode() + data[i:i + chunk_size] + b"\r\n"
                        for i in range(0, len(data), chunk_size))
        body += b"0\r\n" + f"x-amz-checksum-crc32:{crc}\r\n\r\n".encode()
        headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
                   "x-amz-trailer": "x-amz-checksum-crc32", "Content-Length": str(len(body))}
        self.sign("PUT", path, {}, headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
        return raw_request(self.host, self.port, "PUT", _q(path, safe="/-_.~"), headers, body)

    def presign(self, method, path, expires=300):
        amzdate = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        scope = f"{amzdate[:8]}/{self.region}/s3/aws4_request"
        query = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": f"{self.access}/{scope}",
                 "X-Amz-Date": amzdate, "X-Amz-Expires": str(expires), "X-Amz-SignedHeaders": "host"}
        canon_query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(query.items()))
        creq = "\n".join([method, _q(path, safe="/-_.~"), canon_query,
                          f"host:{self.host}:{self.port}\n", "host", "UNSIGNED-PAYLOAD"])
        sts = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope, hashlib.sha256(creq.encode()).hexdigest()])
        sig = hmac.new(self._key(amzdate[:8]), sts.encode(), hashlib.sha256).hexdigest()
        return _q(path, safe="/-_.~") + "?" + canon_query + "&X-Amz-Signature=" + sig


def xml_text(body, tag):
    m = re.search(rf"<{tag}>(.*?)</{tag}>", body.decode(errors="replace"), re.S)
    return m.group(1) if m else None


def xml_all(body, tag):
    return re.findall(rf"<{tag}>(.*?)</{tag}>", body.decode(errors="replace"), re.S)


# --------------------------------------------------------------------------- Swift
def swift_checks(cfg):
    u = urllib.parse.urlsplit(cfg["proxy"])
    host, port = u.hostname, u.port
    r = raw_request(host, port, "GET", "/auth/v1.0", {"X-Auth-User": cfg["user"], "X-Auth-Key": cfg["key"]})
    if not check("swift: tempauth GET /auth/v1.0", r.status == 200 and "x-auth-token" in r.headers,
                 f"{r.status}, X-Storage-Url {r.headers.get('x-storage-url')}"):
        return
    tok = r.headers["x-auth-token"]
    base = urllib.parse.urlsplit(r.headers["x-storage-url"]).path        # /v1/AUTH_test
    T = {"X-Auth-Token": tok}

    def sw(method, path, headers=None, body=b""):
        return raw_request(host, port, method, base + path, dict(T, **(headers or {})), body)

    r = raw_request(host, port, "GET", "/auth/v1.0", {"X-Auth-User": cfg["user"], "X-Auth-Key": "wrong"})
    check("swift: wrong key -> 401", r.status == 401, str(r.status))
    r = raw_request(host, port, "HEAD", base, {"X-Auth-Token": "AUTH_tkbogus"})
    check("swift: bogus token -> 401", r.status == 401, str(r.status))

    c = f"chk-{uuid.uuid4().hex[:8]}"
    check("swift: PUT container", sw("PUT", f"/{c}").status in (201, 202))
    data = os.urandom(100_000)
    r = sw("PUT", f"/{c}/dir/obj%20one", {"Content-Type": "application/x-test", "X-Object-Meta-Color": "blue"}, data)
    check("swift: PUT object (name with space and slash)",
          r.status == 201 and r.headers.get("etag") == hashlib.md5(data).hexdigest(), f"{r.status} etag {r.headers.get('etag')}")
    r = sw("GET", f"/{c}/dir/obj%20one")
    check("swift: GET object", r.status == 200 and r.body == data and r.headers.get("x-object-meta-color") == "blue",
          f"{r.status}, {len(r.body)} bytes")
    r = sw("GET", f"/{c}/dir/obj%20one", {"Range": "bytes=10-19"})
    check("swift: GET object Range", r.status == 206 and r.body == data[10:20], f"{r.status} {r.headers.get('content-range')}")
    r = sw("GET", f"/{c}?format=json")
    names = [o["name"] for o in json.loads(r.body)] if r.status == 200 else None
    check("swift: container listing right after PUT", names == ["dir/obj one"], str(names))
    check("swift: DELETE object", sw("DELETE", f"/{c}/dir/obj%20one").status == 204)
    check("swift: GET deleted object -> 404", sw("GET", f"/{c}/dir/obj%20one").status == 404)

    # static large object: segments in their own container, manifest in another
    seg_c = c + "_segments"
    check("swift: PUT segment container", sw("PUT", f"/{seg_c}").status in (201, 202))
    s1, s2 = os.urandom(1024 * 1024 + 7), os.urandom(333_333)
    e1 = sw("PUT", f"/{seg_c}/big/1", body=s1).headers.get("etag")
    e2 = sw("PUT", f"/{seg_c}/big/2", body=s2).headers.get("etag")
    check("swift: PUT 2 segments", e1 == hashlib.md5(s1).hexdigest() and e2 == hashlib.md5(s2).hexdigest())
    manifest = json.dumps([{"path": f"/{seg_c}/big/1", "etag": e1, "size_bytes": len(s1)},
                           {"path": f"/{seg_c}/big/2", "etag": e2, "size_bytes": len(s2)}]).encode()
    r = sw("PUT", f"/{c}/big?multipart-manifest=put", {"Content-Type": "application/octet-stream"}, manifest)
    slo_etag = hashlib.md5((e1 + e2).encode()).hexdigest()
    check("swift: PUT SLO manifest ?multipart-manifest=put", r.status == 201,
          f"{r.status}, etag {r.headers.get('etag')} (md5 of segment etags: {slo_etag})")
    r = sw("GET", f"/{c}/big")
    check("swift: GET whole SLO", r.status == 200 and r.body == s1 + s2 and r.headers.get("x-static-large-object") == "True",
          f"{r.status}, {len(r.body)} bytes, etag {r.headers.get('etag')}")
    r = sw("HEAD", f"/{c}/big")
    check("swift: HEAD SLO", r.status == 200 and r.headers.get("content-length") == str(len(s1) + len(s2)),
          f"content-length {r.headers.get('content-length')}, etag {r.headers.get('etag')}")
    a, b = len(s1) - 5, len(s1) + 4
    r = sw("GET", f"/{c}/big", {"Range": f"bytes={a}-{b}"})
    check("swift: GET SLO range across the segment boundary", r.status == 206 and r.body == (s1 + s2)[a:b + 1],
          f"{r.status} {r.headers.get('content-range')}")
    r = sw("GET", f"/{c}/big?multipart-manifest=get&format=raw")
    check("swift: GET ?multipart-manifest=get&format=raw", r.status == 200 and len(json.loads(r.body)) == 2)
    r = sw("DELETE", f"/{c}/big?multipart-manifest=delete", {"Accept": "application/json"})
    body = json.loads(r.body) if r.status == 200 else {}
    check("swift: DELETE ?multipart-manifest=delete", r.status == 200 and body.get("Number Deleted") == 3,
          f"{r.status} {body}")
    r = sw("GET", f"/{seg_c}?format=json")
    check("swift: segments gone with the manifest", r.status in (200, 204) and json.loads(r.body or b"[]") == [], repr(r))
    # a plain DELETE of an SLO leaves its segments (opendal's delete does this)
    e1 = sw("PUT", f"/{seg_c}/s/1", body=s1).headers.get("etag")
    sw("PUT", f"/{c}/big2?multipart-manifest=put", body=json.dumps(
        [{"path": f"/{seg_c}/s/1", "etag": e1, "size_bytes": len(s1)}]).encode())
    sw("DELETE", f"/{c}/big2")
    r = sw("GET", f"/{seg_c}?format=json")
    check("swift: plain DELETE of an SLO keeps the segments", r.status == 200 and len(json.loads(r.body)) == 1)
    sw("DELETE", f"/{seg_c}/s/1")
    check("swift: DELETE containers", sw("DELETE", f"/{seg_c}").status == 204 and sw("DELETE", f"/{c}").status == 204)


# --------------------------------------------------------------------------- S3
def s3_checks(cfg):
    s3 = S3(cfg["proxy"], cfg["s3_access_key"], cfg["s3_secret_key"], cfg["region"])
    b = f"chk-{uuid.uuid4().hex[:8]}"
    r = s3.request("PUT", f"/{b}")
    check("s3: CreateBucket (path-style)", r.status == 200, repr(r))
    r = s3.request("HEAD", f"/{b}")
    check("s3: HeadBucket", r.status == 200, str(r.status))
    r = s3.request("GET", "/")
    check("s3: ListBuckets", r.status == 200 and b in xml_all(r.body, "Name"), str(xml_all(r.body, "Name")))
    r = s3.request("GET", f"/{b}", {"location": ""})
    loc = re.search(r"<LocationConstraint[^>]*?(/>|>(.*?)</LocationConstraint>)", r.body.decode(errors="replace"))
    check("s3: GetBucketLocation", r.status == 200 and loc,
          f"LocationConstraint {(loc.group(2) or '(empty: us-east-1)') if loc else None}")

    data = b"hello s3api\n" * 1000
    r = s3.request("PUT", f"/{b}/plain.txt", headers={"Content-Type": "text/plain"}, body=data)
    check("s3: PutObject, signed payload sha256", r.status == 200 and r.headers.get("etag") == f'"{hashlib.md5(data).hexdigest()}"',
          f"{r.status} etag {r.headers.get('etag')}")
    r = s3.request("PUT", f"/{b}/bad-sha", body=data, payload=hashlib.sha256(b"other").hexdigest())
    check("s3: PutObject with a wrong x-amz-content-sha256 -> 400 XAmzContentSHA256Mismatch",
          r.status == 400 and xml_text(r.body, "Code") == "XAmzContentSHA256Mismatch", repr(r)[:120])
    r = s3.request("PUT", f"/{b}/unsigned.bin", body=data, payload="unsigned")
    check("s3: PutObject, x-amz-content-sha256: UNSIGNED-PAYLOAD over plain HTTP", r.status == 200, repr(r)[:200])
    big = os.urandom(300_000)
    r = s3.put_streaming_signed(f"/{b}/chunked.bin", big)
    check("s3: PutObject, aws-chunked STREAMING-AWS4-HMAC-SHA256-PAYLOAD", r.status == 200, repr(r)[:300])
    if r.status == 200:
        g = s3.request("GET", f"/{b}/chunked.bin")
        check("s3: ... and it reads back decoded", g.body == big and "content-encoding" not in g.headers,
              f"{len(g.body)} bytes, content-encoding {g.headers.get('content-encoding')}")
    r = s3.put_streaming_unsigned_trailer(f"/{b}/trailer.bin", big)
    check("s3: PutObject, aws-chunked STREAMING-UNSIGNED-PAYLOAD-TRAILER + x-amz-checksum-crc32 trailer",
          r.status == 200, repr(r)[:300])
    if r.status == 200:
        g = s3.request("GET", f"/{b}/trailer.bin")
        check("s3: ... and it reads back decoded", g.body == big, f"{len(g.body)} bytes")
    # the signatures and checksums inside aws-chunked bodies are really verified
    r = s3.put_streaming_signed(f"/{b}/tampered.bin", big, tamper=True)
    check("s3: aws-chunked with a wrong chunk signature -> 403 SignatureDoesNotMatch",
          r.status == 403 and xml_text(r.body, "Code") == "SignatureDoesNotMatch", f"{r.status} {xml_text(r.body, 'Code')}")
    r = s3.put_streaming_unsigned_trailer(f"/{b}/tampered.bin", big, bad_crc=True)
    check("s3: aws-chunked with a wrong crc32 trailer -> 400 BadDigest",
          r.status == 400 and xml_text(r.body, "Code") == "BadDigest", f"{r.status} {xml_text(r.body, 'Code')}")
    r = s3.request("HEAD", f"/{b}/tampered.bin")
    check("s3: ... and neither was stored", r.status == 404, str(r.status))
    hdrs = {}
    s3.sign("PUT", f"/{b}/nosha", {}, hdrs, "UNSIGNED-PAYLOAD")
    del hdrs["x-amz-content-sha256"]          # signed headers now name a header that is absent
    hdrs["Authorization"] = hdrs["Authorization"].replace("x-amz-content-sha256;", "")
    r = raw_request(s3.host, s3.port, "PUT", f"/{b}/nosha", hdrs, b"abc")
    check("s3: SigV4 without x-amz-content-sha256 -> 400 InvalidRequest",
          r.status == 400 and xml_text(r.body, "Code") == "InvalidRequest", f"{r.status} {xml_text(r.body, 'Message')}")
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    r = s3.request("PUT", f"/{b}/crc-bad.txt", headers={"x-amz-checksum-crc32": "AAAAAA=="}, body=data)
    check("s3: PutObject with a wrong x-amz-checksum-crc32 header -> 400 BadDigest",
          r.status == 400 and xml_text(r.body, "Code") == "BadDigest", f"{r.status} {xml_text(r.body, 'Code')}")
    r = s3.request("PUT", f"/{b}/crc.txt", headers={"x-amz-checksum-crc32": crc}, body=data)
    check("s3: PutObject with x-amz-checksum-crc32 header", r.status == 200, repr(r)[:200])
    r = s3.request("PUT", f"/{b}/md5.txt", headers={"Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode()}, body=data)
    check("s3: PutObject with Content-MD5", r.status == 200, str(r.status))

    r = s3.request("GET", f"/{b}/plain.txt", headers={"Range": "bytes=6-10"})
    check("s3: GetObject Range bytes=6-10", r.status == 206 and r.body == data[6:11] and r.headers.get("content-range") == f"bytes 6-10/{len(data)}",
          f"{r.status} {r.body!r} {r.headers.get('content-range')}")
    r = s3.request("GET", f"/{b}/plain.txt", headers={"Range": f"bytes=-4"})
    check("s3: GetObject Range bytes=-4 (suffix)", r.status == 206 and r.body == data[-4:], str(r.status))
    r = s3.request("HEAD", f"/{b}/plain.txt")
    check("s3: HeadObject", r.status == 200 and r.headers.get("content-length") == str(len(data)) and r.headers.get("content-type") == "text/plain",
          f"{r.status} {r.headers.get('content-length')} {r.headers.get('content-type')}")
    r = s3.request("GET", f"/{b}/missing")
    check("s3: GetObject missing -> 404 NoSuchKey", r.status == 404 and xml_text(r.body, "Code") == "NoSuchKey", str(r.status))
    u = urllib.parse.urlsplit(cfg["proxy"])
    r = raw_request(u.hostname, u.port, "GET", s3.presign("GET", f"/{b}/plain.txt"))
    check("s3: presigned GET (query-string SigV4)", r.status == 200 and r.body == data, str(r.status))
    r = s3.request("PUT", f"/{b}/copy.txt", headers={"x-amz-copy-source": f"/{b}/plain.txt"})
    check("s3: CopyObject", r.status == 200 and xml_text(r.body, "ETag") is not None, repr(r)[:200])

    # multipart upload
    key = "multi/part object.bin"
    r = s3.request("POST", f"/{b}/{key}", {"uploads": ""})
    upload = xml_text(r.body, "UploadId")
    check("s3: CreateMultipartUpload", r.status == 200 and upload, repr(r)[:200])
    p1, p2 = os.urandom(5 * 1024 * 1024), os.urandom(5 * 1024 * 1024 + 12345)
    etags = []
    for n, part in ((1, p1), (2, p2)):
        r = s3.request("PUT", f"/{b}/{key}", {"partNumber": str(n), "uploadId": upload}, body=part,
                       payload="unsigned" if n == 2 else "signed")
        etags.append(r.headers.get("etag"))
        check(f"s3: UploadPart {n} ({len(part)} bytes, {'UNSIGNED-PAYLOAD' if n == 2 else 'signed sha256'})",
              r.status == 200 and r.headers.get("etag") == f'"{hashlib.md5(part).hexdigest()}"', f"{r.status} {r.headers.get('etag')}")
    r = s3.request("GET", f"/{b}/{key}", {"uploadId": upload})
    check("s3: ListParts", r.status == 200 and xml_all(r.body, "PartNumber") == ["1", "2"], str(xml_all(r.body, "PartNumber")))
    # a second upload, to be aborted
    r = s3.request("POST", f"/{b}/other.bin", {"uploads": ""})
    upload2 = xml_text(r.body, "UploadId")
    s3.request("PUT", f"/{b}/other.bin", {"partNumber": "1", "uploadId": upload2}, body=b"x" * 1000)
    r = s3.request("GET", f"/{b}", {"uploads": ""})
    ids = sorted(xml_all(r.body, "UploadId"))
    check("s3: ListMultipartUploads shows both in-progress uploads", r.status == 200 and ids == sorted([upload, upload2]),
          f"{r.status} keys {xml_all(r.body, 'Key')}")
    r = s3.request("DELETE", f"/{b}/other.bin", {"uploadId": upload2})
    check("s3: AbortMultipartUpload", r.status == 204, str(r.status))
    r = s3.request("GET", f"/{b}", {"uploads": ""})
    check("s3: ListMultipartUploads after abort", xml_all(r.body, "UploadId") == [upload], str(xml_all(r.body, "UploadId")))
    r = s3.request("GET", f"/{b}/other.bin", {"uploadId": upload2})
    check("s3: ListParts of the aborted upload -> 404 NoSuchUpload", r.status == 404 and xml_text(r.body, "Code") == "NoSuchUpload", str(r.status))
    complete = ("<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in ((1, etags[0]), (2, etags[1])))
        + "</CompleteMultipartUpload>").encode()
    r = s3.request("POST", f"/{b}/{key}", {"uploadId": upload}, body=complete)
    want_etag = hashlib.md5(hashlib.md5(p1).digest() + hashlib.md5(p2).digest()).hexdigest() + "-2"
    check("s3: CompleteMultipartUpload (ETag md5-of-md5s-2)", r.status == 200 and want_etag in r.body.decode(),
          f"{r.status} ETag {xml_text(r.body, 'ETag')}")
    r = s3.request("HEAD", f"/{b}/{key}")
    check("s3: HeadObject of the completed upload", r.status == 200 and r.headers.get("content-length") == str(len(p1) + len(p2))
          and r.headers.get("etag") == f'"{want_etag}"', f"{r.headers.get('content-length')} {r.headers.get('etag')}")
    a = len(p1) - 3
    r = s3.request("GET", f"/{b}/{key}", headers={"Range": f"bytes={a}-{a + 5}"})
    check("s3: GetObject Range across the part boundary", r.status == 206 and r.body == (p1 + p2)[a:a + 6], str(r.status))
    r = s3.request("GET", f"/{b}/{key}")
    check("s3: GetObject whole multipart object", r.status == 200 and r.body == p1 + p2, f"{len(r.body)} bytes")
    r = s3.request("GET", f"/{b}", {"uploads": ""})
    check("s3: no upload in progress after complete", r.status == 200 and xml_all(r.body, "UploadId") == [], str(xml_all(r.body, "UploadId")))
    r = s3.request("POST", f"/{b}/small", {"uploads": ""})
    up3 = xml_text(r.body, "UploadId")
    e_small = [s3.request("PUT", f"/{b}/small", {"partNumber": str(n), "uploadId": up3}, body=b"y" * 100).headers.get("etag")
               for n in (1, 2)]
    r = s3.request("POST", f"/{b}/small", {"uploadId": up3}, body=("<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in zip((1, 2), e_small))
        + "</CompleteMultipartUpload>").encode())
    check("s3: Complete with a non-last part < 5 MiB -> 400 EntityTooSmall",
          r.status == 400 and xml_text(r.body, "Code") == "EntityTooSmall", f"{r.status} {xml_text(r.body, 'Code')}")
    s3.request("DELETE", f"/{b}/small", {"uploadId": up3})

    r = s3.request("GET", f"/{b}", {"list-type": "2", "prefix": "multi/"})
    check("s3: ListObjectsV2 prefix", r.status == 200 and xml_all(r.body, "Key") == [key], str(xml_all(r.body, "Key")))
    r = s3.request("GET", f"/{b}", {"list-type": "2", "delimiter": "/"})
    check("s3: ListObjectsV2 delimiter", r.status == 200 and "multi/" in xml_all(r.body, "Prefix"), str(xml_all(r.body, "Prefix")))

    # errors a client should expect
    bad = S3(cfg["proxy"], cfg["s3_access_key"], cfg["s3_secret_key"], "eu-west-1")
    r = bad.request("GET", f"/{b}")
    check("s3: wrong region in the credential scope -> 400 AuthorizationHeaderMalformed",
          r.status == 400 and xml_text(r.body, "Code") == "AuthorizationHeaderMalformed", f"{r.status} {xml_text(r.body, 'Message')}")
    bad = S3(cfg["proxy"], cfg["s3_access_key"], "wrong", cfg["region"])
    r = bad.request("GET", f"/{b}")
    check("s3: wrong secret -> 403 SignatureDoesNotMatch", r.status == 403 and xml_text(r.body, "Code") == "SignatureDoesNotMatch",
          f"{r.status} {xml_text(r.body, 'Code')}")
    r = s3.request("PUT", "/Bad_Bucket")
    check("s3: bucket name with upper case/underscore -> 400 InvalidBucketName", r.status == 400 and xml_text(r.body, "Code") == "InvalidBucketName",
          f"{r.status} {xml_text(r.body, 'Code')}")
    r = s3.request("DELETE", f"/{b}")
    check("s3: DeleteBucket not empty -> 409 BucketNotEmpty", r.status == 409, str(r.status))

    # DeleteObjects then DeleteObject then DeleteBucket
    r = s3.request("GET", f"/{b}", {"list-type": "2"})
    keys = xml_all(r.body, "Key")
    doc = ("<Delete>" + "".join(f"<Object><Key>{k.replace('&', '&amp;')}</Key></Object>" for k in keys[1:]) + "</Delete>").encode()
    r = s3.request("POST", f"/{b}", {"delete": ""}, headers={"Content-MD5": base64.b64encode(hashlib.md5(doc).digest()).decode()}, body=doc)
    check("s3: DeleteObjects (with Content-MD5)", r.status == 200 and len(xml_all(r.body, "Deleted")) == len(keys) - 1,
          f"{r.status} deleted {len(xml_all(r.body, 'Deleted'))} of {len(keys) - 1}")
    doc = f"<Delete><Object><Key>{keys[0]}</Key></Object></Delete>".encode()
    r = s3.request("POST", f"/{b}", {"delete": ""}, body=doc)
    check("s3: DeleteObjects without Content-MD5 or x-amz-checksum-* -> 400 InvalidRequest",
          r.status == 400 and xml_text(r.body, "Code") == "InvalidRequest", f"{r.status} {xml_text(r.body, 'Message')}")
    r = s3.request("POST", f"/{b}", {"delete": ""}, body=doc, headers={
        "x-amz-checksum-crc32": base64.b64encode(zlib.crc32(doc).to_bytes(4, "big")).decode(),
        "x-amz-sdk-checksum-algorithm": "CRC32"})
    check("s3: DeleteObjects with x-amz-checksum-crc32 instead of Content-MD5 (what new AWS SDKs send)",
          r.status == 200 and len(xml_all(r.body, "Deleted")) == 1, f"{r.status} {xml_text(r.body, 'Code')}")
    s3.request("PUT", f"/{b}/last", body=b"last")
    r = s3.request("DELETE", f"/{b}/last")
    check("s3: DeleteObject", r.status == 204, str(r.status))
    r = s3.request("DELETE", f"/{b}/last")
    check("s3: DeleteObject again (missing) -> 204", r.status == 204, str(r.status))
    r = s3.request("DELETE", f"/{b}")
    check("s3: DeleteBucket", r.status == 204, repr(r)[:200])
    r = s3.request("HEAD", f"/{b}")
    check("s3: HeadBucket after delete -> 404", r.status == 404, str(r.status))
    r = s3.request("GET", "/")
    check("s3: DeleteBucket removed its +segments container too", f"{b}+segments" not in r.body.decode(),
          str([n for n in xml_all(r.body, "Name") if n.startswith(b)]))


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} STATE_DIR")
    with open(os.path.join(sys.argv[1], "swift.json")) as f:
        cfg = json.loads(f.read().strip().splitlines()[-1])
    t = time.monotonic()
    swift_checks(cfg)
    s3_checks(cfg)
    passed = sum(RESULTS)
    print(f"# {time.monotonic() - t:.1f}s against {cfg['proxy']}")
    print(f"{passed} passed, {len(RESULTS) - passed} failed")
    sys.exit(0 if passed == len(RESULTS) else 1)


if __name__ == "__main__":
    main()
