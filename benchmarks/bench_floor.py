"""The measured floors of requirements P2–P4: the unavoidable work, timed as CPU in this process.

A provider launch (SMART App Launch 2.2 with an Epic-style ``private_key_jwt`` client and
OpenID Connect ``id_token``, then one Graph meeting) cannot cost less than:

* one RS384 signature (the client assertion, RFC 7523 §2.2; Epic signs RS384), 3072-bit key;
* one RS256 verification (the ``id_token``, OpenID Connect Core §3.1.3.7);
* six HTTP exchanges over loopback with httpx, keep-alive (token, Appointment read, Graph
  createOrGet, lobby PATCH, read-back, and the browser-facing answer) — the server runs in
  another process, only the client's CPU counts;
* the launch's minimal store transactions: the single-use ``launch`` + pending authorization
  (durable), consuming the pending authorization, the meeting and its subscription-setup row
  (durable), and one read (identity) — SQLite in WAL mode inline on the event loop's thread, or
  PostgreSQL over one connection.

A Graph change notification acknowledged after decryption (requirement P4) cannot cost less than one
RSA-OAEP unwrap (SHA-1, the certificate's key), one HMAC-SHA256 check and one AES-CBC decrypt
(Graph docs, "Decrypting resource data from change notifications"), plus its durable append
(one committed SQLite row, ``synchronous=FULL``).

Every component is repeated ``--repeat`` times per round, the rounds interleaved, and the median
CPU per operation kept. :func:`launch_floor` and :func:`notification_floor` are imported by
``bench_clinic_burst.py`` and ``bench_attendance.py`` so every ratio uses a floor of the same run.

    python benchmarks/bench_floor.py [--repeat 200] [--rounds 5] [--stores sqlite postgres]

Writes ``benchmarks/results/floor.md``. ``--serve PORTFILE`` is the loopback peer (internal).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import platform
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

PG_URL = os.environ.get("TEAMS_EHR_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"
EXCHANGES = 6
_OAEP_SHA1 = OAEP(mgf=MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
_BODY = json.dumps({"resourceType": "Appointment", "id": "a" * 16, "pad": "x" * 700}).encode()


@dataclass
class Floor:
    """Median CPU milliseconds per operation, by component."""

    parts: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, ms: float, count: int = 1) -> None:
        self.parts[name], self.counts[name] = ms, count

    @property
    def total(self) -> float:
        return sum(self.parts[name] * self.counts[name] for name in self.parts)

    def rows(self) -> list[str]:
        return [
            f"| {name} | {self.counts[name]} | {self.parts[name]:.3f} | "
            f"{self.parts[name] * self.counts[name]:.3f} |"
            for name in self.parts
        ]


def _median_per_op(rounds: list[float], repeat: int) -> float:
    return statistics.median(rounds) / repeat * 1000


def _cpu(call: Callable[[], object], repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        call()
    return time.process_time() - start


async def _acpu(call: Callable[[], Awaitable[object]], repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        await call()
    return time.process_time() - start


# -- crypto ---------------------------------------------------------------------------------------


def crypto_ops() -> dict[str, Callable[[], object]]:
    """One RS384 client assertion, one RS256 id_token verification."""
    # the client key as `LocalSigner.generate("RS384")` makes it; FakeEhr signs with 2048 bits
    client_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    issuer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer_public = issuer_key.public_key()
    now = int(time.time())
    id_token = jwt.encode(
        {"iss": "https://ehr.test", "aud": "client", "sub": "u", "iat": now, "exp": now + 3600},
        issuer_key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )

    def sign() -> object:
        claims = {
            "iss": "client",
            "sub": "client",
            "aud": "https://ehr.test/oauth2/token",
            "jti": secrets.token_urlsafe(16),
            "exp": int(time.time()) + 300,
        }
        return jwt.encode(claims, client_key, algorithm="RS384", headers={"kid": "c1"})

    def verify() -> object:
        return jwt.decode(id_token, issuer_public, algorithms=["RS256"], audience="client")

    return {"RS384 signature (client assertion)": sign, "RS256 verification (id_token)": verify}


def notification_ops() -> tuple[Callable[[], object], int]:
    """Decrypting one Graph encryptedContent: RSA-OAEP(SHA-1) unwrap, HMAC-SHA256, AES-CBC."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    plaintext = json.dumps({"eventType": "rosterUpdated", "pad": "p" * 500}).encode()
    symmetric = os.urandom(32)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(symmetric), modes.CBC(symmetric[:16])).encryptor()
    data = encryptor.update(padder.update(plaintext) + padder.finalize()) + encryptor.finalize()
    content = {
        "data": base64.b64encode(data).decode(),
        "dataKey": base64.b64encode(key.public_key().encrypt(symmetric, _OAEP_SHA1)).decode(),
        "dataSignature": base64.b64encode(
            hmac.new(symmetric, data, hashlib.sha256).digest()
        ).decode(),
    }

    def decrypt() -> object:
        raw = base64.b64decode(content["data"])
        unwrapped = key.decrypt(base64.b64decode(content["dataKey"]), _OAEP_SHA1)
        expected = hmac.new(unwrapped, raw, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, base64.b64decode(content["dataSignature"])):
            raise RuntimeError("bad signature")
        decryptor = Cipher(algorithms.AES(unwrapped), modes.CBC(unwrapped[:16])).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        padded = decryptor.update(raw) + decryptor.finalize()
        return json.loads(unpadder.update(padded) + unpadder.finalize())

    return decrypt, len(plaintext)


# -- the store ------------------------------------------------------------------------------------


@contextmanager
def sqlite_connection() -> Iterator[sqlite3.Connection]:
    with tempfile.TemporaryDirectory(prefix="teams-ehr-floor-") as directory:
        conn = sqlite3.connect(f"{directory}/floor.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB, at INTEGER)")
        try:
            yield conn
        finally:
            conn.close()


def sqlite_launch(conn: sqlite3.Connection) -> Callable[[], object]:
    """The launch's minimal transactions on SQLite (three writes, one read), inline."""

    def write(synchronous: str, rows: int) -> None:
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(rows):
            conn.execute("INSERT INTO t VALUES (?, ?, ?)", (secrets.token_hex(12), b"v" * 200, 1))
        conn.execute("COMMIT")

    def launch() -> object:
        write("FULL", 2)  # single-use launch + pending authorization
        write("NORMAL", 1)  # consume the pending authorization
        conn.execute("SELECT v FROM t WHERE k = ?", ("identity",)).fetchone()
        write("FULL", 2)  # meeting + subscription setup
        return None

    return launch


def sqlite_append(conn: sqlite3.Connection) -> Callable[[], object]:
    def append() -> object:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", (secrets.token_hex(12), b"n" * 600, 1))
        conn.execute("COMMIT")
        return None

    return append


async def postgres_launch_cpu(url: str, repeat: int, rounds: int) -> float | None:
    """The same transactions on PostgreSQL (psycopg async, one connection); ``None`` if absent."""
    try:
        import psycopg
    except ImportError:
        return None
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.Error:
        return None
    table = f"teams_ehr_floor_{secrets.token_hex(4)}"
    async with conn:
        await conn.execute(f"CREATE TABLE {table} (k TEXT PRIMARY KEY, v BYTEA, at BIGINT)")
        try:

            async def write(rows: int) -> None:
                async with conn.transaction():
                    for _ in range(rows):
                        await conn.execute(
                            f"INSERT INTO {table} VALUES (%s, %s, %s)",
                            (secrets.token_hex(12), b"v" * 200, 1),
                        )

            async def launch() -> None:
                await write(2)
                await write(1)
                await (
                    await conn.execute(f"SELECT v FROM {table} WHERE k = %s", ("identity",))
                ).fetchone()
                await write(2)

            await _acpu(launch, 5)
            samples = [await _acpu(launch, repeat) for _ in range(rounds)]
        finally:
            await conn.execute(f"DROP TABLE {table}")
    return _median_per_op(samples, repeat)


# -- loopback HTTP --------------------------------------------------------------------------------


async def _asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _BODY})


def serve(port_file: str) -> None:
    """The loopback peer: a bare ASGI app under uvicorn (its CPU is not measured)."""
    import uvicorn

    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that name it (else Nagle and
    # delayed ACKs add ~40 ms to each response written in two parts)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(_asgi, log_level="warning", lifespan="off", access_log=False)
    Path(port_file).write_text(str(sock.getsockname()[1]))
    uvicorn.Server(config).run(sockets=[sock])


@contextmanager
def loopback_peer() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        port_file = Path(directory) / "port"
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if port_file.exists() and port_file.read_text():
                    url = f"http://127.0.0.1:{port_file.read_text()}"
                    try:
                        httpx.get(url, timeout=1.0)
                        break
                    except httpx.TransportError:
                        pass
                time.sleep(0.05)
            else:
                raise RuntimeError("the loopback peer did not start")
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def exchange_cpu(url: str, repeat: int, rounds: int) -> float:
    """Client CPU per HTTP exchange (alternating a form POST and a GET, keep-alive)."""
    async with httpx.AsyncClient(timeout=10.0) as client:

        async def pair() -> None:
            posted = await client.post(f"{url}/token", data={"grant_type": "authorization_code"})
            posted.json()
            got = await client.get(f"{url}/Appointment/a1", headers={"Authorization": "Bearer t"})
            got.json()

        await _acpu(pair, 10)
        samples = [await _acpu(pair, repeat // 2 or 1) for _ in range(rounds)]
    return _median_per_op(samples, (repeat // 2 or 1) * 2)


# -- the floors -----------------------------------------------------------------------------------


async def launch_floor(
    stores: list[str], repeat: int = 200, rounds: int = 5, pg_url: str = PG_URL
) -> dict[str, Floor]:
    """The floor of one provider launch per store kind (``sqlite``, ``postgres``)."""
    ops = crypto_ops()
    samples: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):  # interleaved
        for name, op in ops.items():
            samples[name].append(_cpu(op, repeat))
    crypto = {name: _median_per_op(values, repeat) for name, values in samples.items()}
    with loopback_peer() as url:
        exchange = await exchange_cpu(url, repeat, rounds)
    floors: dict[str, Floor] = {}
    for store in stores:
        floor = Floor()
        for name, ms in crypto.items():
            floor.add(name, ms)
        floor.add("HTTP exchange over loopback (httpx client CPU)", exchange, EXCHANGES)
        if store == "postgres":
            tx = await postgres_launch_cpu(pg_url, repeat, rounds)
            if tx is None:
                continue
            floor.add("store: 3 write transactions + 1 read (PostgreSQL, psycopg)", tx)
        else:
            with sqlite_connection() as conn:
                launch = sqlite_launch(conn)
                _cpu(launch, 5)
                tx = _median_per_op([_cpu(launch, repeat) for _ in range(rounds)], repeat)
            floor.add("store: 3 write transactions + 1 read (SQLite WAL, inline)", tx)
        floors[store] = floor
    return floors


def notification_floor(repeat: int = 200, rounds: int = 5) -> Floor:
    """The floor of one notification acknowledged after decryption (requirement P4)."""
    decrypt, _ = notification_ops()
    with sqlite_connection() as conn:
        append = sqlite_append(conn)
        crypto, durable = [], []
        for _ in range(rounds):
            crypto.append(_cpu(decrypt, repeat))
            durable.append(_cpu(append, repeat))
    floor = Floor()
    floor.add(
        "RSA-OAEP unwrap + HMAC-SHA256 + AES-CBC (one encryptedContent)",
        _median_per_op(crypto, repeat),
    )
    floor.add("durable append (one SQLite row, synchronous=FULL)", _median_per_op(durable, repeat))
    return floor


def table(title: str, floor: Floor) -> list[str]:
    return [
        f"| {title} | count | CPU ms each | CPU ms |",
        "|---|---|---|---|",
        *floor.rows(),
        f"| **floor** | | | **{floor.total:.3f}** |",
    ]


async def main_async(args: argparse.Namespace) -> str:
    floors = await launch_floor(args.stores, args.repeat, args.rounds, args.pg_url)
    notification = notification_floor(args.repeat, args.rounds)
    lines = [
        f"# Floors — the unavoidable CPU per operation (median of {args.rounds} interleaved rounds "
        f"of {args.repeat}; Python {platform.python_version()}, {os.cpu_count()} CPUs)",
        "",
    ]
    for store, floor in floors.items():
        lines += [*table(f"provider launch, {store}", floor), ""]
    for store in args.stores:
        if store not in floors:
            lines += [f"- {store}: not reachable here, not measured.", ""]
    lines += [
        *table("one notification, decrypted before the 202", notification),
        "",
        f"- notification floor rate: {1000 / notification.total:,.0f}/s per core.",
        "- CPU is `time.process_time` of this process; the loopback peer's CPU is not counted. "
        "The floors leave out everything avoidable: thread hops, repeated reads, models, logging.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--stores", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    text = anyio.run(main_async, args, backend="asyncio")
    print(text)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "floor.md").write_text(text)


if __name__ == "__main__":
    main()
