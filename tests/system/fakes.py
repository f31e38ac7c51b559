"""Fakes of the two Azure endpoints no local stand-in exists for, at their HTTP boundary: the app's
production code talks to them exactly as it talks to Azure.

- `FakeEntraKeys`: the signing keys of an Entra ID tenant (a JWKS document) and tokens signed with
  them, RS256 as Entra signs access tokens. The app fetches the keys over HTTP (`AUTH_JWKS_URL`)
  and validates issuer, audience and signature as in Azure.
- `FakeIngestion`: Application Insights' ingestion endpoint (`POST <IngestionEndpoint>/v2.1/track`),
  recording the envelopes the app's exporter sends.
"""
from __future__ import annotations

import gzip
import ipaddress
import json
import ssl
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def self_signed_context(tmp_dir: Path) -> ssl.SSLContext:
    """A throwaway TLS certificate for 127.0.0.1, so bearer tokens (https only) can be tested."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_dir / "fake.crt", tmp_dir / "fake.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class _Handler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # quiet: the test's output is the app's log
        pass


class _Server:
    def __init__(self, handler: type[_Handler], tls_dir: Path | None = None) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._scheme = "http"
        if tls_dir is not None:  # https with a throwaway certificate: tls_dir / "fake.crt" to trust
            self._server.socket = self_signed_context(tls_dir).wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeEntraKeys(_Server):
    """A JWKS endpoint with one RSA key, and RS256 tokens signed by it."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        document = json.dumps({"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}).encode()
        self.fetches = 0
        outer = self

        class Handler(_Handler):
            def do_GET(self) -> None:  # noqa: N802
                outer.fetches += 1
                self.reply(*((200, document) if self.path == "/keys" else (404, b"{}")))

        super().__init__(Handler)

    def public_key_pem(self) -> bytes:
        """The signing key's public half as PEM: what the JWKS publishes, for key-confusion tokens."""
        return self._key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def jwks_url(self) -> str:
        return f"{self.base}/keys"

    def claims(self, issuer: str, audience: str, tenants: list[str], tenant_claim: str = "tenants",
               ttl: int = 600) -> dict[str, Any]:
        """The claims of an Entra access token granted `tenants`, valid for `ttl` seconds from now."""
        now = int(time.time())
        return {"iss": issuer, "aud": audience, "sub": "deployed-settings-test", "oid": str(uuid.uuid4()),
                "iat": now, "nbf": now, "exp": now + ttl, tenant_claim: tenants}

    def sign(self, claims: dict[str, Any]) -> str:
        """`claims` signed RS256 with this tenant's key, its `kid` in the header, as Entra signs."""
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    def token(self, issuer: str, audience: str, tenants: list[str], tenant_claim: str = "tenants") -> str:
        return self.sign(self.claims(issuer, audience, tenants, tenant_claim))


class FakeIngestion(_Server):
    """Application Insights' track endpoint: accepts every envelope, keeps them (and each POST's
    path, body and Authorization header). Either telemetry backend of the app posts here. With
    `tls_dir`, https (azure-core sends a bearer token over https only, as to the real endpoint)."""

    def __init__(self, tls_dir: Path | None = None) -> None:
        self.envelopes: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.paths: list[str] = []
        self.authorization: list[str | None] = []
        self._cond = threading.Condition()
        outer = self

        class Handler(_Handler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                track = self.path.endswith("/v2.1/track")
                items = json.loads(body) if track else []
                with outer._cond:
                    if track:
                        outer.paths.append(self.path)
                        outer.raw.append(body)
                        outer.authorization.append(self.headers.get("Authorization"))
                    outer.envelopes.extend(items)
                    outer._cond.notify_all()
                reply = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []})
                self.reply(200 if track else 404, reply.encode())

        super().__init__(Handler, tls_dir)

    @property
    def connection_string(self) -> str:
        # The shape of the connection string Azure hands out (appInsights.properties.ConnectionString).
        return f"InstrumentationKey={uuid.uuid4()};IngestionEndpoint={self.base}/;LiveEndpoint={self.base}/"

    def received(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.envelopes)

    def wait_for(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0) -> list[dict[str, Any]]:
        """The envelopes once `pred` holds for them (fails with what arrived after `timeout` s)."""
        with self._cond:
            assert self._cond.wait_for(lambda: pred(self.envelopes), timeout), self.envelopes
            return list(self.envelopes)

    def metrics(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.received() if e["name"] == "Microsoft.ApplicationInsights.Metric"
                and e["data"]["baseData"]["metrics"][0]["name"] == name]

    def logs(self) -> list[dict[str, Any]]:
        return [e for e in self.received() if e["data"]["baseType"] in ("MessageData", "ExceptionData")]
