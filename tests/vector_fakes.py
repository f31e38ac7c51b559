"""FAKE services for the vector adapters' HTTP boundary (no Azure AI Search or Azure OpenAI runs here).

Each fake is a small aiohttp server on 127.0.0.1 that records every request it gets and answers
in the shape the REST APIs document. They exist to check the requests our adapters build; they
are not emulators: the search fake understands only the tenant and `timestamp` clauses of a filter
(and the `outcome eq null` filter of the backfill), orders by cosine when a vector query is sent, by
`orderby=timestamp asc` when asked, and by upload order otherwise, and answers hybrid, keyword and
semantic queries with stand-in scores of the documented shape -- it does no BM25, no RRF and no
semantic ranking of its own.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tests.system.fakes import self_signed_context


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class _FakeServer:
    def __init__(self, tls_dir: Path | None = None) -> None:
        self.requests: list[Recorded] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._tls_dir = tls_dir  # serve https with a throwaway certificate

    @property
    def endpoint(self) -> str:
        return f"{'https' if self._tls_dir else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> "_FakeServer":
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        ctx = self_signed_context(self._tls_dir) if self._tls_dir else None
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        rec = Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        self.requests.append(rec)
        return await self.handle(rec)

    async def handle(self, rec: Recorded) -> web.Response:  # pragma: no cover - overridden
        raise NotImplementedError

    @staticmethod
    def json(status: int, payload: Any) -> web.Response:
        return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


class FakeAzureSearch(_FakeServer):
    """Keeps index definitions, synonym maps and documents; answers searches in the documented shape."""

    _INDEX = re.compile(r"^/indexes\('(?P<name>[^']+)'\)(?P<rest>.*)$")
    _SYNONYMS = re.compile(r"^/synonymmaps\('(?P<name>[^']+)'\)$")
    _TENANT = re.compile(r"^tenantId eq '(?P<t>(?:[^']|'')*)'")
    _TIME = re.compile(r" and timestamp (?P<op>ge|gt|le|lt) (?P<at>[0-9T:.Z-]+)")
    _COMPARE = {"ge": str.__ge__, "gt": str.__gt__, "le": str.__le__, "lt": str.__lt__}

    def __init__(self, tls_dir: Path | None = None) -> None:
        super().__init__(tls_dir)
        self.indexes: dict[str, dict[str, Any]] = {}
        self.synonym_maps: dict[str, dict[str, Any]] = {}
        self.docs: dict[str, dict[str, Any]] = {}
        self.hide_index_once = False
        self.reranker_scores: dict[str, float] = {}  # eventId -> @search.rerankerScore of semantic queries
        # False: a deleted document stays findable by searches (the service's refresh lag, made
        # endless); True: gone at once.
        self.deletes_seen_at_once = True
        self.deleted_unseen: dict[str, dict[str, Any]] = {}

    async def handle(self, rec: Recorded) -> web.Response:
        if rec.method == "POST" and rec.path == "/indexes":
            if rec.body["name"] in self.indexes:
                return self.json(409, {"error": {"code": "ResourceNameAlreadyInUse", "message": "exists"}})
            self.indexes[rec.body["name"]] = rec.body
            return self.json(201, rec.body)
        syn = self._SYNONYMS.match(rec.path)
        if syn:
            if rec.method == "PUT":
                created = syn["name"] not in self.synonym_maps
                self.synonym_maps[syn["name"]] = rec.body
                return self.json(201 if created else 200, rec.body)
            if syn["name"] not in self.synonym_maps:
                return self.json(404, {"error": {"code": "ResourceNameNotFound", "message": "No synonym map"}})
            return self.json(200, self.synonym_maps[syn["name"]])
        m = self._INDEX.match(rec.path)
        if not m:
            return self.json(404, {"error": {"code": "NotFound", "message": rec.path}})
        name, rest = m["name"], m["rest"]
        if rest == "" and rec.method == "PUT":  # Update Index: the whole definition is sent
            missing = [f for old in self.indexes.get(name, {}).get("fields", [])
                       if (f := old["name"]) not in {n["name"] for n in rec.body["fields"]}]
            if missing:  # the service refuses to drop fields in an update
                return self.json(400, {"error": {"code": "OperationNotAllowed", "message": f"drops {missing}"}})
            self.indexes[name] = rec.body
            return self.json(200, rec.body)
        if rest == "" and rec.method == "GET":
            if name not in self.indexes or self.hide_index_once:
                self.hide_index_once = False  # plays a racing instance that created it meanwhile
                return self.json(404, {"error": {"code": "ResourceNameNotFound", "message": "No index"}})
            return self.json(200, self.indexes[name])
        if rest == "/docs/search.index":
            results = []
            for action in rec.body["value"]:
                key = action["id"]
                kind = action["@search.action"]
                if kind == "delete":
                    gone = self.docs.pop(key, None)
                    existed = gone is not None
                    if gone is not None and not self.deletes_seen_at_once:
                        self.deleted_unseen[key] = gone
                    results.append({"key": key, "status": True, "errorMessage": None,
                                    "statusCode": 200 if existed else 404})
                    continue
                if kind == "merge" and key not in self.docs:
                    results.append({"key": key, "status": False, "errorMessage": "Document not found.",
                                    "statusCode": 404})
                    continue
                created = key not in self.docs
                doc = {k: v for k, v in action.items() if k != "@search.action"}
                self.docs[key] = {**self.docs.get(key, {}), **doc} if kind in ("mergeOrUpload", "merge") else doc
                results.append({"key": key, "status": True, "errorMessage": None,
                                "statusCode": 201 if created else 200})
            return self.json(200, {"value": results})
        if rest == "/docs/search.post.search":
            return self.json(200, {"value": self._search(rec.body)})
        if rest == "/docs/$count":
            return web.Response(status=200, text=str(len(self.docs)), content_type="text/plain")
        return self.json(404, {"error": {"code": "NotFound", "message": rest}})

    def _search(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        flt = body.get("filter") or ""
        tenant_match = self._TENANT.match(flt)
        if tenant_match:
            findable = [*self.docs.values(), *self.deleted_unseen.values()]
            candidates = [d for d in findable if d["tenantId"] == tenant_match["t"].replace("''", "'")]
            # stored and asked as ...T..:..:..mmmZ: text order is time order
            for clause in self._TIME.finditer(flt):
                keep = self._COMPARE[clause["op"]]
                candidates = [d for d in candidates if keep(d["timestamp"], clause["at"])]
            if body.get("orderby") == "timestamp asc":
                candidates.sort(key=lambda d: d["timestamp"])
        elif flt == "outcome eq null":  # the backfill's page of documents indexed before `outcome`
            candidates = [d for d in self.docs.values() if d.get("outcome") is None]
        else:
            candidates = []
        query = (body.get("vectorQueries") or [None])[0]
        text = body.get("search")
        ordered: list[tuple[float, dict[str, Any]]] = []
        if query is not None:
            for d in candidates:
                cos = sum(a * b for a, b in zip(query["vector"], d["embedding"]))
                ordered.append((1.0 / (1.0 + (1.0 - cos)), d))  # Azure's documented cosine score
            ordered.sort(key=lambda x: -x[0])
        else:
            ordered = [(0.0, d) for d in candidates]  # upload order: the fake ranks nothing by text
        top = body.get("top", 50)
        if query is not None:
            top = min(top, max(query["k"], 1)) if not text else top
        select = [k for k in (body.get("select") or "").split(",") if k]
        out = []
        for rank, (cos_score, d) in enumerate(ordered[:top], start=1):
            if text and query is not None:  # stand-in with the shape of Azure's hybrid RRF value
                score = (1.0 + query.get("weight", 1.0)) / (60 + rank)
            elif text:  # stand-in for a BM25 value (unbounded, decreasing)
                score = 10.0 / rank
            else:
                score = cos_score
            hit: dict[str, Any] = {"@search.score": score, **{k: d.get(k) for k in select}}
            if body.get("queryType") == "semantic":
                hit["@search.rerankerScore"] = self.reranker_scores.get(d.get("eventId", ""), 0.0)
            out.append(hit)
        return out


class FakeAzureOpenAI(_FakeServer):
    """Answers the embeddings API with deterministic, deliberately un-normalised vectors, in reverse
    order (the API returns an `index` per item; clients must not rely on order)."""

    def __init__(self, dimensions: int = 1536, fail_first: int = 0, tls_dir: Path | None = None) -> None:
        super().__init__(tls_dir)
        self.dimensions = dimensions
        self.fail_first = fail_first  # answer this many requests with 429 first

    async def handle(self, rec: Recorded) -> web.Response:
        if not re.fullmatch(r"/openai/deployments/[^/]+/embeddings", rec.path):
            return self.json(404, {"error": {"code": "DeploymentNotFound"}})
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=429, headers={"Retry-After": "0"}, text="slow down")
        dims = rec.body.get("dimensions", self.dimensions)
        data = [{"object": "embedding", "index": i, "embedding": raw_vector(text, dims)}
                for i, text in enumerate(rec.body["input"])]
        return self.json(200, {"object": "list", "data": list(reversed(data)), "model": "text-embedding-3-small",
                               "usage": {"prompt_tokens": 1, "total_tokens": 1}})


def raw_vector(text: str, dims: int) -> list[float]:
    seed = hashlib.sha256(text.encode()).digest()
    return [3.0 * math.sin(seed[i % 32] + i) for i in range(dims)]


@dataclass
class FakeTokenCredential:
    """FAKE Entra ID credential: hands out a fixed token and records the scopes asked for."""

    token: str = "fake-token"
    scopes: list[tuple[str, ...]] = field(default_factory=list)

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(self.token, 4_102_444_800)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> "FakeTokenCredential":
        return self

    async def __aexit__(self, *args: Any) -> None:
        return None
