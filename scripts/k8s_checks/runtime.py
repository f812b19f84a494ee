"""The binaries started with each overlay's settings: probes, metrics,
TLS and tokens, a job, SIGTERM within the grace period."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

from k8s_checks.common import Container, Report


# --------------------------------------------------------------------------- runtime

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grpc_health(port: int, service: str, timeout: float = 5.0) -> str:
    """grpc.health.v1.Health/Check over plaintext HTTP/2, as the kubelet's gRPC probe does it.
    Returns SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN or an error text."""

    def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

    def literal(name: str, value: str) -> bytes:  # HPACK literal without indexing, no Huffman
        def s(x: bytes) -> bytes:
            assert len(x) < 127
            return bytes([len(x)]) + x
        return b"\x00" + s(name.encode()) + s(value.encode())

    headers = b"".join(literal(k, v) for k, v in [
        (":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
        (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"), ("te", "trailers")])
    body = (b"\x0a" + bytes([len(service)]) + service.encode()) if service else b""
    message = b"\x00" + struct.pack(">I", len(body)) + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") +
                         frame(1, 4, 1, headers) + frame(0, 1, 1, message))
            buf, data, deadline = b"", b"", time.monotonic() + timeout
            while time.monotonic() < deadline:
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload, buf = buf[9:9 + length], buf[9 + length:]
                    if kind == 4 and not flags & 1:
                        sock.sendall(frame(4, 1, 0, b""))
                    elif kind == 6 and not flags & 1:
                        sock.sendall(frame(6, 1, 0, payload))
                    elif kind == 0 and stream == 1:
                        if flags & 8:
                            payload = payload[1:len(payload) - payload[0]]
                        data += payload
                    elif kind == 3 and stream == 1:
                        return "stream reset"
                    elif kind == 7:
                        return "connection closed (GOAWAY)"
                    if stream == 1 and flags & 1 and kind in (0, 1):
                        if len(data) < 5:
                            return "no response message (status in trailers: unknown service?)"
                        msg = data[5:5 + int.from_bytes(data[1:5], "big")]
                        status = msg[1] if len(msg) >= 2 and msg[0] == 0x08 else 0
                        return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}.get(status, "?")
                chunk = sock.recv(65536)
                if not chunk:
                    return "connection closed"
                buf += chunk
            return "timed out"
    except OSError as e:
        return f"error: {e}"


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def wait_for(pred, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def make_fixtures(tmp: Path) -> dict[tuple[str, str], Path]:
    """Throw-away credentials for the Secrets the pods mount, by (binary, key):
    a CA, the server's certificate (127.0.0.1, localhost, rwp-server), the
    workers' client certificate, a worker token and the tokens file that
    lists it. Made with openssl."""
    if shutil.which("openssl") is None:
        raise SystemExit("k8s-check: the runtime check needs openssl (to make throw-away certificates)")
    d = tmp / "fixtures"
    d.mkdir(parents=True)

    def openssl(*args: str) -> None:
        out = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"k8s-check: openssl {' '.join(args)} failed: {out.stderr.strip()}")

    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *newkey, "-days", "2", "-subj", "/CN=k8s-check CA", "-keyout", "ca.key", "-out", "ca.crt",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, names in (("server", "IP:127.0.0.1,DNS:localhost,DNS:rwp-server"), ("worker", "DNS:rwp-worker")):
        (d / f"{name}.ext").write_text(f"subjectAltName={names}\n")
        openssl("req", *newkey, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    token = "rwp_" + os.urandom(32).hex()
    (d / "worker.token").write_text(token + "\n")
    digest = hashlib.sha256(token.encode()).hexdigest()
    (d / "tokens.toml").write_text(f'[[token]]\nname = "k8s-check-workers"\nrole = "worker"\nsha256 = "{digest}"\n')
    fixtures = {("rwp-server", "tls.crt"): d / "server.crt", ("rwp-server", "tls.key"): d / "server.key",
                ("rwp-worker", "tls.crt"): d / "worker.crt", ("rwp-worker", "tls.key"): d / "worker.key"}
    for binary in ("rwp-server", "rwp-worker"):
        fixtures[(binary, "ca.crt")] = d / "ca.crt"
        fixtures[(binary, "tokens.toml")] = d / "tokens.toml"
        fixtures[(binary, "token")] = d / "worker.token"
    return fixtures


class Launch:
    """Starts a container's binary with its rendered args, env and config files,
    and its mounted Secrets filled from `fixtures`."""

    def __init__(self, c: Container, tmp: Path, overrides: list[str], label: str,
                 fixtures: dict[tuple[str, str], Path]) -> None:
        self.c, self.label = c, label
        root = tmp / label
        root.mkdir(parents=True)
        # Secret mounts become local directories; every mention of their
        # path (config files, arguments, environment) is rewritten to them.
        moved: dict[str, str] = {}
        self.missing: list[str] = []
        for mount, (secret, keys) in c.secret_mounts.items():
            local = root / "secrets" / mount.lstrip("/")
            local.mkdir(parents=True)
            moved[mount + "/"] = str(local) + "/"
            for key in keys or ["tls.crt", "tls.key", "ca.crt"]:
                fixture = fixtures.get((c.binary.name, key))
                if fixture is None:
                    self.missing.append(f"{secret}/{key}")
                else:
                    shutil.copy(fixture, local / key)

        def relocate(text: str) -> str:
            for mount, local in moved.items():
                text = text.replace(mount, local)
            return text

        mapping = {}
        for path, text in c.files.items():
            local = root / "files" / path.lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(relocate(text))
            mapping[path] = str(local)
        args = []
        for name, value in c.args:
            value = relocate(mapping.get(value, value)) if value is not None else None
            args.append(f"--{name}" if value is None else f"--{name}={value}")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root)}
        for name, e in c.env.items():
            if "value" in e:
                env[name] = relocate(mapping.get(e["value"], e["value"]))
            elif name == "RWP_TOKEN":
                env[name] = fixtures[(c.binary.name, "token")].read_text().strip()
            else:
                env[name] = f"{label}-from-{next(iter(e['valueFrom']))}"
        self.log = root / "log"
        self.proc = subprocess.Popen([str(c.binary.path), *args, *overrides], env=env, cwd=root,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.argv = " ".join([c.binary.name, *args, *overrides])

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()[-8:]
        return "\n      ".join([f"$ {self.argv}", *lines])

    def stop(self, grace: float) -> tuple[int | None, float]:
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None, grace
        return self.proc.returncode, time.monotonic() - start


def check_runtime(r: Report, overlay: str, server: Container, sobj: str, workers: list[tuple[Container, str]],
                  tmp: Path, metrics_needed: set[str], fixtures: dict[tuple[str, str], Path]) -> None:
    ports = {"grpc": free_port(), "health": free_port(), "metrics": free_port()}
    over = [f"--listen=127.0.0.1:{ports['grpc']}", f"--data-dir={tmp / overlay / 'data'}"]
    if "metrics_listen" in server.settings:
        over.append(f"--metrics-listen=127.0.0.1:{ports['metrics']}")
    # The probes' port: plaintext health when set, else the gRPC port.
    probe_port = ports["grpc"]
    if "health_listen" in server.settings:
        over.append(f"--health-listen=127.0.0.1:{ports['health']}")
        probe_port = ports["health"]
    tls = "tls_cert" in server.settings
    for cm in server.configmaps | {cm for c, _ in workers for cm in c.configmaps}:
        r.cover("runtime", overlay, f"ConfigMap/{cm}")
    s = Launch(server, tmp / overlay, over, "server", fixtures)
    launched = [s]
    try:
        if not r.check(not s.missing, "runtime", overlay, sobj, f"no test credentials for {s.missing}"):
            return
        up = wait_for(lambda: grpc_health(probe_port, "", 1.0) == "SERVING", 120, s.proc)
        if not r.check(up, "runtime", overlay, sobj, f"the server did not come up:\n      {s.tail()}"):
            return
        probe_services = {p["grpc"].get("service", "") for k, p in server.c.items()
                          if k.endswith("Probe") and "grpc" in p}
        for service in sorted(probe_services):
            got = grpc_health(probe_port, service)
            r.check(got == "SERVING", "runtime", overlay, sobj, f"health of {service!r}: {got}, expected SERVING")
        control = grpc_health(probe_port, "rwp.v1.NoSuchService")
        r.check(control != "SERVING", "runtime", overlay, sobj,
                "control: an unknown service must not answer SERVING (the health check would prove nothing)")
        if tls:
            plaintext = grpc_health(ports["grpc"], "", 2.0)
            r.check(plaintext != "SERVING", "runtime", overlay, sobj,
                    f"the gRPC port answered plaintext ({plaintext}) although it must speak TLS only")
        if "metrics_listen" in server.settings:
            status, text = http_get(ports["metrics"], "/metrics")
            for m in sorted(metrics_needed):
                r.check(status == 200 and re.search(rf"^# TYPE {m} gauge$", text, re.M) is not None, "runtime",
                        overlay, sobj, f"/metrics has no gauge {m} (HTTP {status})")
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = server.c.get(kind, {}).get("httpGet")
                if p:
                    st, _ = http_get(ports["metrics"], p["path"])
                    r.check(st == 200, "runtime", overlay, sobj, f"{kind} GET {p['path']}: HTTP {st}")
        for c, obj in workers:
            wport = free_port()
            over = [f"--server={'https' if tls else 'http'}://127.0.0.1:{ports['grpc']}", "--device=cpu"]
            if "metrics_listen" in c.settings:
                over.append(f"--metrics-listen=127.0.0.1:{wport}")
            w = Launch(c, tmp / overlay, over, f"worker-{c.c['name']}", fixtures)
            launched.append(w)
            if not r.check(not w.missing, "runtime", overlay, obj, f"no test credentials for {w.missing}"):
                continue

            def exited() -> bool:
                return not r.check(w.proc.poll() is None, "runtime", overlay, obj,
                                   f"the worker exited (code {w.proc.returncode}):\n      {w.tail()}")

            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.c.get(kind, {}).get("httpGet")
                if p:
                    ok = wait_for(lambda: http_get(wport, p["path"])[0] == 200, 60, w.proc)
                    if not ok and w.proc.poll() is not None:
                        break
                    r.check(ok, "runtime", overlay, obj, f"{kind} GET {p['path']} never answered 200:\n      {w.tail()}")
            if exited():
                continue
            if "metrics_listen" in server.settings:
                def registered() -> bool:
                    _, text = http_get(ports["metrics"], "/metrics")
                    m = re.search(r"^rwp_active_workers (\S+)$", text, re.M)
                    return m is not None and float(m.group(1)) >= 1
                ok = wait_for(registered, 30, w.proc)
                if exited():
                    continue
                r.check(ok, "runtime", overlay, obj, f"the worker never asked the server for work:\n      {w.tail()}")
            grace = c.pod.get("terminationGracePeriodSeconds", 30)
            code, took = w.stop(grace)
            r.check(code == 0, "runtime", overlay, obj,
                    f"SIGTERM: exit {code} after {took:.1f} s (grace {grace} s):\n      {w.tail()}")
        grace = server.pod.get("terminationGracePeriodSeconds", 30)
        code, took = s.stop(grace)
        r.check(code == 0, "runtime", overlay, sobj,
                f"SIGTERM: exit {code} after {took:.1f} s (grace {grace} s):\n      {s.tail()}")
    finally:
        for launch in launched:
            if launch.proc.poll() is None:
                launch.proc.kill()
                launch.proc.wait()
