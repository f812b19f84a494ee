#!/usr/bin/env python3
"""The checks behind `make k8s-check` (run through scripts/k8s-check.sh).

For every overlay under deploy/k8s/overlays it renders the manifests with
`kubectl kustomize` and checks them:

  schema       every object against the Kubernetes OpenAPI schemas
               (kubernetes-validate, strict: unknown fields are errors);
  binaries     every flag, environment variable and config-file key the
               containers use is one the binary in the image accepts
               (read from its --print-config);
  ports        listen addresses, container ports, Services, the workers'
               server URL and the Ingress agree;
  probes       gRPC probes name a gRPC service of the proto that the server
               binary serves, on its gRPC port (its plaintext health port when
               the gRPC port speaks TLS); HTTP probes hit the metrics port;
  credentials  certificates, keys and token files come from mounted Secrets;
               workers speak TLS, present a certificate and send a token when
               the server requires them, and so does the Ingress;
  drain        terminationGracePeriodSeconds matches the binary's drain timeout;
  security     non-root, read-only root filesystem, no privilege escalation,
               no capabilities, RuntimeDefault seccomp, no API token, the
               uid of the images' Dockerfiles;
  resources    requests and limits; thread counts within the CPU limit;
               GPU overlays: one GPU, the taint tolerated, CUDA image and device;
  references   ConfigMaps, ServiceAccounts, selectors, scale targets,
               Secrets and namespaces resolve;
  storage      the server's data directory is on its PersistentVolumeClaim;
  disruption   one PodDisruptionBudget per workload, of the right kind;
  netpol       NetworkPolicies, evaluated pod to pod: workers and clients reach
               the server, Prometheus the metrics ports, nothing else anything;
  autoscaling  HPA / ScaledObject target the workers and use a metric the
               server exports (confirmed by `runtime`);
  runtime      the binaries are started with the rendered args, environment
               and config files (addresses, data directory and device
               overridden, Secrets filled with a throw-away CA, certificates
               and tokens made with openssl): each gRPC probe's service answers
               SERVING, each HTTP probe 200, /metrics carries the autoscaling
               metric, the worker registers with the server (through its TLS
               and token), and both exit 0 on SIGTERM within their grace period.

Plus the Dockerfiles (hadolint and consistency: `docker`). It prints one line
per rendered object with the checks that covered it, and exits non-zero
naming every failure.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

import yaml

try:
    import kubernetes_validate
    from kubernetes_validate import utils as kv_utils
except ImportError:  # reported in main()
    kubernetes_validate = None

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"

# Environment variables the containers may set that are not the binaries' own.
FOREIGN_ENV = {"RUST_LOG", "RUST_BACKTRACE", "CUDA_CACHE_PATH", "HOME", "TMPDIR"}
# Secrets the manifests reference but never contain: the operator (or
# cert-manager) creates them; docs/deploy.md says how.
OPERATOR_SECRETS = {"rwp-server-tls", "rwp-ingress-grpc-tls", "rwp-server-grpc-tls", "rwp-worker-grpc-tls",
                    "rwp-tokens", "rwp-worker-token"}
# Settings that name a credential file: it must come from a mounted Secret.
CREDENTIAL_SETTINGS = ("tls_cert", "tls_key", "tls_client_ca", "tls_ca", "tokens_file", "token_file")
# Custom resources (no Kubernetes schema): checked by `autoscaling` instead.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}
# The metric the autoscalers use: a gauge of the server's /metrics.
AUTOSCALING_METRIC = "rwp_pending_tasks"
# Namespaces the policies name: Prometheus, the ingress controller, DNS.
MONITORING_NS, INGRESS_NS, DNS_NS = "monitoring", "ingress-nginx", "kube-system"
GRACE_MARGIN_S = (5, 30)  # grace period = drain timeout + between 5 and 30 s

CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass", "IngressClass"}


# --------------------------------------------------------------------------- results

class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.coverage: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
        self.passed: collections.Counter[str] = collections.Counter()
        self.notes: list[str] = []

    def check(self, ok: bool, check: str, overlay: str, obj: str | None, message: str) -> bool:
        if obj is not None:
            self.coverage[(overlay, obj)].add(check)
        if ok:
            self.passed[check] += 1
        else:
            self.failures.append(f"[{check}] {overlay}: {obj + ': ' if obj else ''}{message}")
        return ok

    def cover(self, check: str, overlay: str, obj: str) -> None:
        self.coverage[(overlay, obj)].add(check)


def kn(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --------------------------------------------------------------------------- the binaries

class Binary:
    """What one binary accepts, read from its --print-config (JSON, format
    rwp-config/1: docs/deploy.md): each setting's key, flag and environment
    variable, and the binary's other options (--config, --log-format)."""

    FORMAT = "rwp-config/1"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        # A clean environment: the defaults, and no RWP_* variable of this shell.
        out = subprocess.run([str(path), "--print-config"], capture_output=True, text=True, timeout=60,
                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        if out.returncode != 0:
            raise SystemExit(f"k8s-check: {path} --print-config failed: {out.stderr.strip()}")
        try:
            printed = json.loads(out.stdout)
        except json.JSONDecodeError as e:
            raise SystemExit(f"k8s-check: {path} --print-config did not print JSON: {e}")
        if printed.get("format") != self.FORMAT:
            raise SystemExit(f"k8s-check: {path} --print-config is format {printed.get('format')!r}, "
                             f"not {self.FORMAT!r}")
        self.schema: dict[str, dict] = printed["schema"]
        self.defaults: dict = printed["config"]
        # config-file keys, and the flag and variable of each
        self.keys = set(self.schema)
        self.setting_flags = {s["flag"].removeprefix("--"): key for key, s in self.schema.items()}
        self.setting_env = {s["env"]: key for key, s in self.schema.items()}
        # every long flag -> its environment variable (None: none)
        self.flags: dict[str, str | None] = {s["flag"].removeprefix("--"): s["env"] for s in self.schema.values()}
        for option in printed["options"].values():
            self.flags[option["flag"].removeprefix("--")] = option["env"]
        self.env = {v: k for k, v in self.flags.items() if v}
        self.config_env = printed["options"]["config"]["env"]

    def strings(self) -> bytes:
        return self.path.read_bytes()


def image_binary(image: str) -> str:
    """rwp-server for registry/rwp/rwp-server:tag, and so on."""
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


# --------------------------------------------------------------------------- rendering

def render(kubectl: str, overlay: Path) -> list[dict]:
    out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def containers(workload: dict) -> list[dict]:
    return workload["spec"]["template"]["spec"].get("containers", [])


def matches(selector: dict | None, labels: dict) -> bool:
    """Label selector semantics (matchLabels and matchExpressions)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def flag_args(args: list[str]) -> list[tuple[str, str | None]]:
    """[("config", "/etc/rwp/x.toml"), ("log-format", "json")] from --config=... / --config ..."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ValueError(f"argument {a!r} is not a --flag")
        if "=" in a:
            name, value = a[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            name, value = a[2:], args[i + 1]
            i += 1
        else:
            name, value = a[2:], None
        out.append((name, value))
        i += 1
    return out


class Container:
    """A container with its effective configuration (file < env < flags)."""

    def __init__(self, workload: dict, c: dict, docs: list[dict], binary: Binary) -> None:
        self.workload, self.c, self.binary = workload, c, binary
        self.pod = workload["spec"]["template"]["spec"]
        self.args = flag_args(c.get("args", []))
        self.env = {e["name"]: e for e in c.get("env", [])}
        self.ports = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
        self.port_numbers = {p["containerPort"] for p in c.get("ports", [])}
        # files mounted from ConfigMaps: container path -> text
        cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        self.files: dict[str, str] = {}
        self.configmaps: set[str] = set()
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"], {})
            if "configMap" in v and v["configMap"]["name"] in cms:
                self.configmaps.add(v["configMap"]["name"])
                for key, text in (cms[v["configMap"]["name"]].get("data") or {}).items():
                    self.files[f"{m['mountPath'].rstrip('/')}/{key}"] = text
        # Secrets mounted as files: mount path -> (Secret, the file names it
        # shows there; None: all its keys).
        self.secret_mounts: dict[str, tuple[str, list[str] | None]] = {}
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"], {})
            if "secret" in v:
                items = v["secret"].get("items")
                self.secret_mounts[m["mountPath"].rstrip("/")] = (
                    v["secret"]["secretName"], [i["path"] for i in items] if items else None)
        self.config_path = dict(self.args).get("config")
        if self.config_path is None and binary.config_env in self.env:
            self.config_path = self.env[binary.config_env].get("value")
        self.file_settings: dict = {}
        if self.config_path and self.config_path in self.files:
            self.file_settings = tomllib.loads(self.files[self.config_path])
        self.settings = dict(self.file_settings)
        for name, e in self.env.items():
            if name in binary.setting_env and "value" in e:
                self.settings[binary.setting_env[name]] = e["value"]
        for name, value in self.args:
            if name in binary.setting_flags:
                self.settings[binary.setting_flags[name]] = value

    def port_of(self, port: int | str) -> int | None:
        if isinstance(port, int):
            return port if port in self.port_numbers else None
        return self.ports.get(port)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = str(address).rpartition(":")
    return host.strip("[]"), int(port)


# --------------------------------------------------------------------------- static checks

def check_schema(r: Report, overlay: str, docs: list[dict], version: str) -> None:
    for d in docs:
        obj = kn(d)
        if (d["apiVersion"], d["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kv_utils.validate(d, version, strict=True)
            r.check(True, "schema", overlay, obj, "")
        except kv_utils.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            r.check(False, "schema", overlay, obj, f"{path}: {e.message}")
        except kv_utils.SchemaNotFoundError as e:
            r.check(False, "schema", overlay, obj, e.message)


def check_binaries(r: Report, overlay: str, c: Container, obj: str) -> None:
    b = c.binary
    for name, value in c.args:
        r.check(name in b.flags, "binaries", overlay, obj,
                f"container {c.c['name']}: {b.name} has no flag --{name}")
    for name in c.env:
        if name.startswith("RWP_"):
            r.check(name in b.env, "binaries", overlay, obj,
                    f"container {c.c['name']}: {b.name} reads no environment variable {name}"
                    f" (it reads {', '.join(sorted(b.env))})")
        else:
            r.check(name in FOREIGN_ENV, "binaries", overlay, obj,
                    f"container {c.c['name']}: environment variable {name} is neither {b.name}'s nor allowed"
                    f" ({', '.join(sorted(FOREIGN_ENV))})")
    if c.config_path:
        ok = r.check(c.config_path in c.files, "binaries", overlay, obj,
                     f"config file {c.config_path} is not mounted from a ConfigMap")
        if ok:
            for cm in c.configmaps:
                r.cover("binaries", overlay, f"ConfigMap/{cm}")
            for key in c.file_settings:
                r.check(key in b.keys, "binaries", overlay, obj,
                        f"{c.config_path}: {b.name} has no setting {key!r} (flag --{key.replace('_', '-')})")
    if "log-format" in dict(c.args):
        r.check(dict(c.args)["log-format"] in ("text", "json"), "binaries", overlay, obj, "log format not text/json")
    r.check("command" not in c.c, "binaries", overlay, obj,
            "container overrides the image's ENTRYPOINT (command:); the flags are checked against "
            f"{b.name}, the image's binary")


def grpc_services(server: Binary) -> set[str]:
    """rwp.v1.X for every `service X` of proto/rwp/v1 that the server binary carries."""
    names = set()
    for proto in sorted((ROOT / "proto").rglob("*.proto")):
        text = proto.read_text()
        package = re.search(r"^package\s+([\w.]+);", text, re.M)
        for s in re.findall(r"^service\s+(\w+)", text, re.M):
            names.add(f"{package.group(1)}.{s}" if package else s)
    blob = server.strings()
    return {n for n in names if n.encode() in blob}


def check_ports_probes(r: Report, overlay: str, c: Container, obj: str, services: set[str]) -> dict:
    """Returns what the runtime check needs: {"grpc": port, "metrics": port} of the settings."""
    found = {}
    for key, port_name in (("listen", "grpc"), ("health_listen", "health"), ("metrics_listen", "metrics")):
        if key not in c.binary.keys:
            continue
        value = c.settings.get(key)
        if value is None:
            r.check(port_name not in c.ports, "ports", overlay, obj,
                    f"container port {port_name!r} declared but {key} is not set")
            continue
        host, port = split_address(value)
        found[port_name] = port
        r.check(host in ("0.0.0.0", "::"), "ports", overlay, obj,
                f"{key} = {value}: must listen on all interfaces to be reachable in the pod network")
        r.check(c.ports.get(port_name) == port, "ports", overlay, obj,
                f"{key} = {value} but containerPort {port_name!r} is {c.ports.get(port_name)}")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c.c.get(kind)
        if p is None:
            continue
        if "grpc" in p:
            port, service = p["grpc"]["port"], p["grpc"].get("service", "")
            if "tls_cert" in c.settings:
                r.check(port == found.get("health"), "probes", overlay, obj,
                        f"{kind} gRPC port {port}: the gRPC port speaks TLS, which the kubelet's probes cannot; "
                        f"probe the plaintext health_listen port ({found.get('health')})")
            else:
                r.check(port in (found.get("grpc"), found.get("health")), "probes", overlay, obj,
                        f"{kind} gRPC port {port} is neither the gRPC nor the health listen port")
            r.check(service == "" or service in services, "probes", overlay, obj,
                    f"{kind} service {service!r} is not a gRPC service the server serves ({sorted(services)})")
        elif "httpGet" in p:
            port = c.port_of(p["httpGet"]["port"])
            r.check(port is not None and port == found.get("metrics"), "probes", overlay, obj,
                    f"{kind} HTTP port {p['httpGet']['port']} is not the metrics port {found.get('metrics')}")
            r.check(p["httpGet"].get("path") == "/healthz", "probes", overlay, obj,
                    f"{kind} path {p['httpGet'].get('path')} (the binaries serve /healthz)")
        else:
            r.check(False, "probes", overlay, obj, f"{kind}: only gRPC and HTTP probes (the images have no shell)")
    if "grpc" in found:
        r.check(all(k in c.c for k in ("readinessProbe", "livenessProbe")), "probes", overlay, obj,
                "the gRPC server needs readiness and liveness probes")
        r.check(c.c.get("readinessProbe", {}).get("grpc", {}).get("service", "") != "", "probes", overlay, obj,
                "readiness must name a service (it turns NOT_SERVING while the server drains)")
    elif "metrics" in found:
        r.check("livenessProbe" in c.c, "probes", overlay, obj, "the worker needs a liveness probe")
    return found


def secret_file(c: Container, path: str) -> tuple[str, str] | None:
    """(Secret, key) of a container file that a mounted Secret provides."""
    directory, _, name = str(path).rpartition("/")
    mount = c.secret_mounts.get(directory)
    if mount is None or (mount[1] is not None and name not in mount[1]):
        return None
    return mount[0], name


def check_credentials(r: Report, overlay: str, server: Container | None, workers: list[tuple[Container, str]],
                      sobj: str | None) -> None:
    """Credential files come from Secrets; workers meet what the server requires."""
    for c, obj in ([(server, sobj)] if server else []) + workers:
        for key in CREDENTIAL_SETTINGS:
            if key in c.settings:
                path = c.settings[key]
                r.check(secret_file(c, path) is not None, "credentials", overlay, obj,
                        f"{key} = {path}: not a file of a mounted Secret "
                        f"(Secret mounts: {sorted(c.secret_mounts) or 'none'})")
                r.check(path not in c.files, "credentials", overlay, obj,
                        f"{key} = {path} is in a ConfigMap: credentials belong in Secrets")
        for name, e in c.env.items():
            if name == "RWP_TOKEN":
                r.check("secretKeyRef" in (e.get("valueFrom") or {}), "credentials", overlay, obj,
                        "RWP_TOKEN must come from a Secret (valueFrom.secretKeyRef), not a literal value")
    if server is None:
        return
    tls, mtls, tokens = ("tls_cert" in server.settings, "tls_client_ca" in server.settings,
                         "tokens_file" in server.settings)
    for c, obj in workers:
        url = str(c.settings.get("server", ""))
        r.check(url.startswith("https://") == tls, "credentials", overlay, obj,
                f"server URL {url}: the server {'speaks TLS only' if tls else 'speaks plaintext'}")
        if mtls:
            r.check("tls_cert" in c.settings and "tls_key" in c.settings, "credentials", overlay, obj,
                    "the server requires client certificates (tls_client_ca): set tls_cert and tls_key")
        if tokens:
            r.check("token_file" in c.settings or "RWP_TOKEN" in c.env, "credentials", overlay, obj,
                    "the server requires bearer tokens (tokens_file): give the worker token_file or RWP_TOKEN")


def check_drain(r: Report, overlay: str, c: Container, obj: str) -> None:
    drain = c.settings.get("drain_timeout_ms")
    if not r.check(drain is not None, "drain", overlay, obj,
                   "drain_timeout_ms must be set explicitly (config file, env or flag)"):
        return
    grace = c.pod.get("terminationGracePeriodSeconds", 30)
    lo, hi = int(drain) / 1000 + GRACE_MARGIN_S[0], int(drain) / 1000 + GRACE_MARGIN_S[1]
    r.check(lo <= grace <= hi, "drain", overlay, obj,
            f"terminationGracePeriodSeconds {grace} does not match drain_timeout_ms {drain} "
            f"(must be within {lo:g}..{hi:g} s)")


def dockerfile_uid() -> dict[str, int]:
    """uid of the USER of each final stage, by target name."""
    out = {}
    for path in sorted(DOCKER.glob("Dockerfile.*")):
        if path.suffix == ".dockerignore":
            continue
        stage, users = None, {}
        parents = {}
        for line in path.read_text().splitlines():
            m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
            if m:
                stage = m.group(2)
                parents[stage] = m.group(1)
                users[stage] = users.get(m.group(1))
            m = re.match(r"USER\s+(\S+)", line, re.I)
            if m and stage:
                users[stage] = m.group(1)
        for target in ("server", "worker"):
            if target in users and users[target]:
                out[f"{path.name}:{target}"] = int(users[target].split(":")[0])
    return out


def check_security(r: Report, overlay: str, c: Container, obj: str, uids: dict[str, int]) -> None:
    pod, sc, psc = c.pod, c.c.get("securityContext", {}), c.pod.get("securityContext", {})

    def eff(key):
        return sc.get(key, psc.get(key))

    r.check(eff("runAsNonRoot") is True, "security", overlay, obj, "runAsNonRoot is not true")
    uid = eff("runAsUser")
    r.check(isinstance(uid, int) and uid > 0, "security", overlay, obj, f"runAsUser {uid} must be a non-zero uid")
    image_uids = set(uids.values())
    r.check(uid in image_uids, "security", overlay, obj,
            f"runAsUser {uid} is not the USER of the images' Dockerfiles ({sorted(image_uids)})")
    r.check(sc.get("readOnlyRootFilesystem") is True, "security", overlay, obj, "readOnlyRootFilesystem is not true")
    r.check(sc.get("allowPrivilegeEscalation") is False, "security", overlay, obj,
            "allowPrivilegeEscalation is not false")
    r.check(not sc.get("privileged"), "security", overlay, obj, "privileged")
    r.check("ALL" in (sc.get("capabilities", {}).get("drop") or []) and not sc.get("capabilities", {}).get("add"),
            "security", overlay, obj, "capabilities must drop ALL and add none")
    r.check((eff("seccompProfile") or {}).get("type") == "RuntimeDefault", "security", overlay, obj,
            "seccompProfile is not RuntimeDefault")
    r.check(pod.get("automountServiceAccountToken") is False, "security", overlay, obj,
            "automountServiceAccountToken is not false (the pods never call the API)")
    r.check(pod.get("enableServiceLinks") is False, "security", overlay, obj,
            "enableServiceLinks is not false (Service variables would be named RWP_SERVER_*)")
    r.check(not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), "security",
            overlay, obj, "host namespaces")
    mounts = {m["mountPath"] for m in c.c.get("volumeMounts", [])}
    r.check("/tmp" in mounts, "security", overlay, obj, "read-only root: /tmp must be a volume")


def quantity(q) -> float:
    q = str(q)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for u, f in sorted(units.items(), key=lambda x: -len(x[0])):
        if q.endswith(u):
            return float(q[: -len(u)]) * f
    return float(q)


def check_resources(r: Report, overlay: str, c: Container, obj: str) -> None:
    res = c.c.get("resources", {})
    req, lim = res.get("requests", {}), res.get("limits", {})
    for kind in ("cpu", "memory"):
        ok = r.check(kind in req and kind in lim, "resources", overlay, obj, f"{kind} request and limit required")
        if ok:
            r.check(quantity(lim[kind]) >= quantity(req[kind]), "resources", overlay, obj,
                    f"{kind} limit {lim[kind]} below request {req[kind]}")
    threads_key = "torch_threads" if "torch_threads" in c.binary.keys else "threads"
    threads = c.settings.get(threads_key)
    if "cpu" in lim:
        ok = threads is not None and 0 < int(threads) <= quantity(lim["cpu"])
        r.check(ok, "resources", overlay, obj,
                f"{threads_key} = {threads}: set it to at most the CPU limit {lim['cpu']} "
                "(libtorch's default is the node's core count)")
    if "device" in c.binary.keys:
        device = str(c.settings.get("device", "auto"))
        gpus = lim.get("nvidia.com/gpu")
        tolerated = any(t.get("key") == "nvidia.com/gpu" for t in c.pod.get("tolerations", []))
        tag = c.c["image"].rsplit(":", 1)[-1] if ":" in c.c["image"].rsplit("/", 1)[-1] else ""
        if device.startswith("cuda"):
            r.check(str(gpus) == "1", "resources", overlay, obj, f"device {device} needs limits nvidia.com/gpu: 1")
            r.check(tolerated, "resources", overlay, obj, "GPU pods must tolerate the nvidia.com/gpu taint")
            r.check("cuda" in tag, "resources", overlay, obj, f"device {device} needs the CUDA image, not {tag!r}")
        else:
            r.check(device == "cpu", "resources", overlay, obj, f"device {device}: say cpu or cuda explicitly")
            r.check(gpus is None and "cuda" not in tag, "resources", overlay, obj,
                    "a CPU worker neither asks for a GPU nor runs the CUDA image")


def check_storage(r: Report, overlay: str, docs: list[dict], server: Container, obj: str) -> None:
    sts = server.workload
    r.check(sts["kind"] == "StatefulSet" and sts["spec"].get("replicas") == 1, "storage", overlay, obj,
            "the server is a StatefulSet of exactly one replica")
    data_dir = server.settings.get("data_dir")
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in server.c.get("volumeMounts", [])}
    r.check(data_dir is not None and mounts.get(str(data_dir).rstrip("/")) in claims, "storage", overlay, obj,
            f"data_dir {data_dir} must be the mount path of a volumeClaimTemplate ({sorted(claims)})")
    policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy", {})
    r.check(policy.get("whenDeleted") == "Retain" and policy.get("whenScaled") == "Retain", "storage", overlay, obj,
            "the data volume must be retained when the StatefulSet is deleted or scaled")
    headless = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == sts["spec"].get("serviceName")]
    ok = r.check(bool(headless) and headless[0]["spec"].get("clusterIP") == "None", "storage", overlay, obj,
                 f"serviceName {sts['spec'].get('serviceName')} must be a headless Service")
    if ok:
        r.cover("storage", overlay, kn(headless[0]))


def check_references(r: Report, overlay: str, docs: list[dict]) -> None:
    names = collections.defaultdict(set)
    for d in docs:
        names[d["kind"]].add(d["metadata"]["name"])
    namespaces = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    if r.check(len(namespaces) == 1, "references", overlay, None, f"expected one Namespace, found {namespaces}"):
        ns = namespaces[0]
        labels = next(d for d in docs if d["kind"] == "Namespace")["metadata"].get("labels", {})
        r.check(labels.get("pod-security.kubernetes.io/enforce") == "restricted", "security", overlay,
                f"Namespace/{ns}", "Pod Security Admission must enforce the restricted profile")
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                r.check(d["metadata"].get("namespace") == ns, "references", overlay, kn(d),
                        f"namespace {d['metadata'].get('namespace')!r}, expected {ns!r}")
    pods = [(w, w["spec"]["template"]["metadata"].get("labels", {})) for w in workloads(docs)]
    for w in workloads(docs):
        spec, obj = w["spec"]["template"]["spec"], kn(w)
        r.check(matches(w["spec"]["selector"], w["spec"]["template"]["metadata"].get("labels", {})), "references",
                overlay, obj, "selector does not match the pod template")
        sa = spec.get("serviceAccountName")
        r.check(sa in names["ServiceAccount"], "references", overlay, obj, f"ServiceAccount {sa} missing")
        if sa in names["ServiceAccount"]:
            r.cover("references", overlay, f"ServiceAccount/{sa}")
        for v in spec.get("volumes", []):
            if "configMap" in v:
                cm = v["configMap"]["name"]
                if r.check(cm in names["ConfigMap"], "references", overlay, obj, f"ConfigMap {cm} missing"):
                    r.cover("references", overlay, f"ConfigMap/{cm}")
            if "secret" in v:
                s = v["secret"]["secretName"]
                r.check(s in names["Secret"] or s in OPERATOR_SECRETS, "references", overlay, obj,
                        f"Secret {s} is neither rendered nor an operator-provided Secret")
        for c in containers(w):
            for e in c.get("env", []) + c.get("envFrom", []):
                for kind, ref in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef"),
                                  ("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    target = (e.get("valueFrom") or {}).get(ref) or e.get(ref)
                    if target:
                        n = target["name"]
                        r.check(n in names[kind] or (kind == "Secret" and n in OPERATOR_SECRETS), "references",
                                overlay, obj, f"{kind} {n} (container {c['name']}) is not rendered")
    for d in docs:
        obj = kn(d)
        if d["kind"] in ("Service", "PodDisruptionBudget"):
            # a Service's selector is a plain label map, a PDB's a label selector
            sel = {"matchLabels": d["spec"]["selector"]} if d["kind"] == "Service" else d["spec"].get("selector")
            hit = [w for w, labels in pods if matches(sel, labels)]
            r.check(len(hit) == 1, "references", overlay, obj,
                    f"selector must match the pods of exactly one workload, matches {[kn(w) for w in hit]}")
        if d["kind"] == "Service":
            hit = [w for w, labels in pods if matches({"matchLabels": d["spec"]["selector"]}, labels)]
            for p in d["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                ok = any(any((isinstance(tp, str) and tp in {q.get("name") for q in c.get("ports", [])}) or
                             (isinstance(tp, int) and tp in {q["containerPort"] for q in c.get("ports", [])})
                             for c in containers(w)) for w in hit)
                r.check(ok, "ports", overlay, obj, f"targetPort {tp} is no container port of the selected pods")
        if d["kind"] == "Ingress":
            for tls in d["spec"].get("tls", []):
                s = tls.get("secretName")
                r.check(s in names["Secret"] or s in OPERATOR_SECRETS, "references", overlay, obj,
                        f"TLS Secret {s} is neither rendered nor an operator-provided Secret")


def check_disruption(r: Report, overlay: str, docs: list[dict]) -> None:
    """One PodDisruptionBudget per workload: the server's keeps it from voluntary
    eviction, the workers' lets drains proceed; an unhealthy pod may always go."""
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for w in workloads(docs):
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        mine = [p for p in pdbs if matches(p["spec"].get("selector"), labels)]
        if not r.check(len(mine) == 1, "disruption", overlay, kn(w),
                       f"needs exactly one PodDisruptionBudget, has {[kn(p) for p in mine]}"):
            continue
        p, obj = mine[0], kn(mine[0])
        r.check(p["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow", "disruption", overlay, obj,
                "unhealthyPodEvictionPolicy must be AlwaysAllow (a broken pod must not block node drains)")
        if w["kind"] == "StatefulSet":
            r.check(p["spec"].get("minAvailable") == w["spec"].get("replicas", 1) or
                    p["spec"].get("maxUnavailable") == 0, "disruption", overlay, obj,
                    "the server's budget must not allow a voluntary eviction")
        else:
            mu = p["spec"].get("maxUnavailable")
            r.check(mu is not None and str(mu) not in ("0", "0%"), "disruption", overlay, obj,
                    "the workers' budget must let drains evict some workers (maxUnavailable > 0)")
        r.cover("disruption", overlay, kn(w))
    for d in docs:
        if d["kind"] == "ServiceAccount":
            r.check(d.get("automountServiceAccountToken") is False, "security", overlay, kn(d),
                    "automountServiceAccountToken is not false")


def check_ingress_and_urls(r: Report, overlay: str, docs: list[dict], server: Container | None,
                           worker_containers: list[tuple[Container, str]], services: set[str]) -> None:
    svcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    ns = next((d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"), None)
    grpc_port = server.ports.get("grpc") if server else None
    server_labels = server.workload["spec"]["template"]["metadata"]["labels"] if server else {}

    def service_port_to_grpc(svc: dict, port_ref) -> bool:
        if not matches({"matchLabels": svc["spec"].get("selector", {})}, server_labels):
            return False
        for p in svc["spec"]["ports"]:
            if port_ref in (p["port"], p.get("name")):
                tp = p.get("targetPort", p["port"])
                return tp == "grpc" or tp == grpc_port
        return False

    for c, obj in worker_containers:
        url = c.settings.get("server")
        m = re.match(r"^(https?)://([^:/]+)(?::(\d+))?/?$", str(url))
        if not r.check(m is not None, "ports", overlay, obj, f"server URL {url!r} is not http(s)://host:port"):
            continue
        host, port = m.group(2), int(m.group(3) or (443 if m.group(1) == "https" else 80))
        parts = host.split(".")
        name = parts[0]
        same_ns = len(parts) == 1 or parts[1] == ns
        svc = svcs.get(name)
        r.check(svc is not None and same_ns and service_port_to_grpc(svc, port), "ports", overlay, obj,
                f"server URL {url}: no Service {host}:{port} in front of the server's gRPC port")
        if svc is not None:
            r.cover("ports", overlay, kn(svc))
    for d in docs:
        if d["kind"] != "Ingress":
            continue
        obj = kn(d)
        for rule in d["spec"].get("rules", []):
            for p in rule.get("http", {}).get("paths", []):
                backend = p["backend"]["service"]
                svc = svcs.get(backend["name"])
                ref = backend["port"].get("name", backend["port"].get("number"))
                r.check(svc is not None and service_port_to_grpc(svc, ref), "ports", overlay, obj,
                        f"backend {backend['name']}:{ref} is not the server's gRPC port")
                r.check(p["path"].strip("/") in services, "probes", overlay, obj,
                        f"path {p['path']} is not a gRPC service of the server ({sorted(services)})")
        annotations = d["metadata"].get("annotations", {})
        tls = server is not None and "tls_cert" in server.settings
        want = "GRPCS" if tls else "GRPC"
        r.check(annotations.get("nginx.ingress.kubernetes.io/backend-protocol") == want, "ports", overlay, obj,
                f"the backend speaks {'gRPC over TLS' if tls else 'gRPC (h2c)'}: backend-protocol {want}")
        if server is not None and "tls_client_ca" in server.settings:
            secret = annotations.get("nginx.ingress.kubernetes.io/proxy-ssl-secret", "")
            ns_name, _, name = secret.partition("/")
            r.check(ns_name == ns and name in OPERATOR_SECRETS, "credentials", overlay, obj,
                    f"the server requires client certificates: proxy-ssl-secret must name one in {ns!r} "
                    f"(an operator-provided Secret), not {secret!r}")
            r.check(annotations.get("nginx.ingress.kubernetes.io/proxy-ssl-verify") == "on", "credentials",
                    overlay, obj, "proxy-ssl-verify must be on: the controller checks the server's certificate")


def check_autoscaling(r: Report, overlay: str, docs: list[dict], version: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scalers = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler" or (d["apiVersion"], d["kind"]) in CUSTOM_KINDS]
    r.check(len(scalers) <= 1, "autoscaling", overlay, None,
            f"one autoscaler per workload, found {[kn(d) for d in scalers]}")
    adapter = yaml.safe_load((K8S / "adapter" / "prometheus-adapter-values.yaml").read_text())
    adapter_metrics = {rule["name"]["as"] for rule in adapter["rules"]["external"]}
    for d in scalers:
        obj = kn(d)
        ref = d["spec"]["scaleTargetRef"]
        target = deployments.get(ref["name"]) if ref.get("kind", "Deployment") == "Deployment" else None
        r.check(target is not None, "autoscaling", overlay, obj, f"scale target {ref} is not a rendered Deployment")
        if target is not None:
            r.check("replicas" not in target["spec"], "autoscaling", overlay, kn(target),
                    "an autoscaled Deployment must not set replicas (each apply would reset the count)")
        if d["kind"] == "HorizontalPodAutoscaler":
            lo, hi = d["spec"].get("minReplicas", 1), d["spec"]["maxReplicas"]
            metrics = [m["external"]["metric"]["name"] for m in d["spec"]["metrics"] if m["type"] == "External"]
            r.check(metrics == [AUTOSCALING_METRIC], "autoscaling", overlay, obj,
                    f"external metric {metrics}, expected [{AUTOSCALING_METRIC}]")
            r.check(AUTOSCALING_METRIC in adapter_metrics, "autoscaling", overlay, obj,
                    f"deploy/k8s/adapter/prometheus-adapter-values.yaml serves {sorted(adapter_metrics)}")
        else:
            s = d["spec"]
            lo, hi = s.get("minReplicaCount", 0), s.get("maxReplicaCount", 100)
            r.check(d["apiVersion"] == "keda.sh/v1alpha1" and ref.get("apiVersion") == "apps/v1", "autoscaling",
                    overlay, obj, "keda.sh/v1alpha1 ScaledObject of an apps/v1 Deployment")
            for t in s.get("triggers", []):
                q = t.get("metadata", {}).get("query", "")
                r.check(t.get("type") == "prometheus" and re.search(rf"\b{AUTOSCALING_METRIC}\b", q) is not None,
                        "autoscaling", overlay, obj, f"trigger must query {AUTOSCALING_METRIC}: {q!r}")
                r.check(f'namespace="{d["metadata"].get("namespace")}"' in q, "autoscaling", overlay, obj,
                        f"query {q!r} must select the namespace {d['metadata'].get('namespace')!r}")
                try:
                    float(t["metadata"]["threshold"])
                    r.check(t.get("metricType", "AverageValue") in ("Value", "AverageValue"), "autoscaling",
                            overlay, obj, "metricType")
                except (KeyError, ValueError):
                    r.check(False, "autoscaling", overlay, obj, "trigger threshold must be a number")
            # Its HPA settings are an HPA's: validate them with the HPA schema.
            behavior = s.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
            fake = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "x"}, "spec": {"maxReplicas": hi, "minReplicas": max(lo, 1),
                                                        "scaleTargetRef": ref, "behavior": behavior or {}}}
            try:
                kv_utils.validate(fake, version, strict=True)
                r.check(True, "schema", overlay, obj, "")
            except kv_utils.ValidationError as e:
                r.check(False, "schema", overlay, obj, f"advanced.horizontalPodAutoscalerConfig: {e.message}")
        r.check(0 <= lo <= hi, "autoscaling", overlay, obj, f"min {lo} > max {hi}")


# --------------------------------------------------------------------------- network policies

def netpol_allows(policies: list[dict], src: dict, dst: dict, port: int, proto: str) -> bool:
    """Whether traffic src -> dst:port/proto gets through both pods' policies."""

    def peer_matches(peer: dict, pod: dict, policy_ns: str) -> bool:
        if "ipBlock" in peer:
            return False
        ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
        if ns_sel is None:
            ns_ok = pod["ns"] == policy_ns
        else:
            ns_ok = matches(ns_sel, pod["ns_labels"]) if ns_sel else True
        pod_ok = matches(pod_sel, pod["labels"]) if pod_sel else True
        return ns_ok and pod_ok

    def port_matches(rule_ports, target: dict) -> bool:
        if not rule_ports:
            return True
        for p in rule_ports:
            if p.get("protocol", "TCP") != proto:
                continue
            if "port" not in p:
                return True
            rp = p["port"]
            if isinstance(rp, str):
                if target["ports"].get(rp) == (port, proto):
                    return True
            elif rp == port or (p.get("endPort") and rp <= port <= p["endPort"]):
                return True
        return False

    def side(pod: dict, direction: str, peer: dict, target: dict) -> bool:
        selecting = [p for p in policies if p["metadata"]["namespace"] == pod["ns"]
                     and (matches(p["spec"]["podSelector"], pod["labels"]) or p["spec"]["podSelector"] == {})
                     and direction in p["spec"].get("policyTypes", ["Ingress"])]
        if not selecting:
            return True
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for p in selecting:
            for rule in p["spec"].get(key, []) or []:
                peers = rule.get(peers_key)
                if (not peers or any(peer_matches(x, peer, p["metadata"]["namespace"]) for x in peers)) and \
                        port_matches(rule.get("ports"), target):
                    return True
        return False

    return side(src, "Egress", dst, dst) and side(dst, "Ingress", src, dst)


def check_netpol(r: Report, overlay: str, docs: list[dict]) -> None:
    ns = next(d["metadata"]["name"] for d in docs if d["kind"] == "Namespace")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    has_ingress = any(d["kind"] == "Ingress" for d in docs)

    def nslabels(name, extra=None):
        return {"kubernetes.io/metadata.name": name, **(extra or {})}

    pods = []
    for w in workloads(docs):
        ports = {}
        for c in containers(w):
            for p in c.get("ports", []):
                ports[p.get("name", str(p["containerPort"]))] = (p["containerPort"], p.get("protocol", "TCP"))
        role = w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        pods.append({"name": role, "ns": ns, "ns_labels": nslabels(ns),
                     "labels": w["spec"]["template"]["metadata"]["labels"], "ports": ports})
    http = {"http": (8080, "TCP")}
    pods += [
        {"name": "client", "ns": ns, "ns_labels": nslabels(ns), "labels": {"rwp.io/client": "true"}, "ports": http},
        {"name": "client-allowed-ns", "ns": "team-a", "ns_labels": nslabels("team-a", {"rwp.io/clients": "allowed"}),
         "labels": {"rwp.io/client": "true"}, "ports": http},
        {"name": "client-other-ns", "ns": "team-b", "ns_labels": nslabels("team-b"),
         "labels": {"rwp.io/client": "true"}, "ports": http},
        {"name": "stranger", "ns": ns, "ns_labels": nslabels(ns), "labels": {"app": "other"}, "ports": http},
        {"name": "stranger-other-ns", "ns": "team-a", "ns_labels": nslabels("team-a", {"rwp.io/clients": "allowed"}),
         "labels": {"app": "other"}, "ports": http},
        {"name": "prometheus", "ns": MONITORING_NS, "ns_labels": nslabels(MONITORING_NS),
         "labels": {"app.kubernetes.io/name": "prometheus"}, "ports": {"web": (9090, "TCP")}},
        {"name": "ingress-controller", "ns": INGRESS_NS, "ns_labels": nslabels(INGRESS_NS),
         "labels": {"app.kubernetes.io/name": "ingress-nginx"}, "ports": {"https": (443, "TCP")}},
        {"name": "kube-dns", "ns": DNS_NS, "ns_labels": nslabels(DNS_NS), "labels": {"k8s-app": "kube-dns"},
         "ports": {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")}},
    ]
    expected = {
        ("gradient-worker", "parameter-server", "grpc"), ("client", "parameter-server", "grpc"),
        ("client-allowed-ns", "parameter-server", "grpc"),
        ("prometheus", "parameter-server", "metrics"), ("prometheus", "gradient-worker", "metrics"),
        ("gradient-worker", "kube-dns", "dns"), ("gradient-worker", "kube-dns", "dns-tcp"),
        ("client", "kube-dns", "dns"), ("client", "kube-dns", "dns-tcp"),
    }
    if has_ingress:
        expected.add(("ingress-controller", "parameter-server", "grpc"))
    ours = {"parameter-server", "gradient-worker", "client", "stranger"}  # pods in our namespace
    for src in pods:
        for dst in pods:
            if src is dst or (src["name"] not in ours and dst["name"] not in ours):
                continue  # traffic between other namespaces is not ours to police
            for pname, (port, proto) in dst["ports"].items():
                allowed = netpol_allows(policies, src, dst, port, proto)
                want = (src["name"], dst["name"], pname) in expected
                r.check(allowed == want, "netpol", overlay, None,
                        f"{src['name']} ({src['ns']}) -> {dst['name']}:{pname} is "
                        f"{'allowed' if allowed else 'denied'}, must be {'allowed' if want else 'denied'}")
    for p in policies:
        r.cover("netpol", overlay, kn(p))
        r.check(matches(p["spec"]["podSelector"], {}) or p["spec"]["podSelector"] == {} or
                any(matches(p["spec"]["podSelector"], q["labels"]) for q in pods if q["ns"] == ns),
                "netpol", overlay, kn(p), "selects no pod")
    r.check(any(p["spec"]["podSelector"] == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
                and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies),
            "netpol", overlay, None, "a default-deny policy (all pods, Ingress and Egress) is required")


# --------------------------------------------------------------------------- docker

def check_docker(r: Report, hadolint: str) -> None:
    files = sorted(p for p in DOCKER.glob("Dockerfile.*") if p.suffix != ".dockerignore")
    out = subprocess.run([hadolint, "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), *map(str, files)],
                         capture_output=True, text=True)
    r.check(out.returncode == 0, "docker", "images", None, f"hadolint: {out.stdout.strip()} {out.stderr.strip()}")
    ignores = [DOCKER / f"{f.name}.dockerignore" for f in files]
    texts = {p.read_text() if p.exists() else None for p in ignores}
    r.check(None not in texts and len(texts) == 1, "docker", "images", None,
            "every Dockerfile needs its <Dockerfile>.dockerignore, all identical")
    ignore = next(iter(texts)) or ""
    for must in ("**/target", "**/.venv"):
        r.check(must in ignore.splitlines(), "docker", "images", None, f".dockerignore must exclude {must}")
    r.check("*" in ignore.splitlines(), "docker", "images", None,
            ".dockerignore must start from nothing (*) so .cargo/config.toml and local files stay out")
    for f in files:
        text = f.read_text()
        rpaths = set(re.findall(r"-rpath,([^\s\"]+)", text))
        r.check(len(rpaths) == 1, "docker", "images", None, f"{f.name}: one rpath expected, found {rpaths}")
        copied = re.findall(r"^COPY --from=builder \S+ (\S+)$", text, re.M)
        for rp in rpaths:
            r.check(any(rp == d or rp.startswith(d.rstrip("/") + "/") for d in copied), "docker", "images", None,
                    f"{f.name}: the rpath {rp} is not inside what the final stages copy from the builder {copied}")
        if "cuda" in f.name:
            r.check("--no-as-needed,-ltorch_cuda" in text, "docker", "images", None,
                    f"{f.name}: the worker must link libtorch_cuda past --as-needed, or it sees no GPU")
        r.check("torch==${TORCH_VERSION}" in text and "ARG TORCH_VERSION=2.11.0" in text, "docker", "images", None,
                f"{f.name}: libtorch must come from the torch==2.11.0 wheel")
        for target in re.findall(r"^FROM \S+ AS (server|worker)$", text, re.M):
            r.check(f"/usr/local/bin/rwp-{target}" in text, "docker", "images", None,
                    f"{f.name}: target {target} must run rwp-{target}")
    uids = dockerfile_uid()
    r.check(bool(uids) and all(u > 0 for u in uids.values()), "docker", "images", None,
            f"final stages must run as a numeric non-root USER: {uids}")


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


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--hadolint", required=True)
    ap.add_argument("--bin-dir", required=True, type=Path)
    ap.add_argument("--k8s-version", default="1.32")
    ap.add_argument("--overlays", nargs="*", help="overlay names (default: every one under deploy/k8s/overlays)")
    ap.add_argument("--no-runtime", action="store_true", help="skip starting the binaries")
    opts = ap.parse_args()
    if kubernetes_validate is None:
        print("k8s-check: kubernetes-validate is not installed (scripts/k8s-check.sh installs it)", file=sys.stderr)
        return 2

    binaries = {name: Binary(opts.bin_dir.resolve() / name) for name in ("rwp-server", "rwp-worker")}
    services = grpc_services(binaries["rwp-server"])
    uids = dockerfile_uid()
    r = Report()
    check_docker(r, opts.hadolint)

    names = opts.overlays or sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
    rendered: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="k8s-check-") as tmpdir:
        tmp = Path(tmpdir)
        fixtures = {} if opts.no_runtime else make_fixtures(tmp)
        for overlay in names:
            try:
                docs = render(opts.kubectl, K8S / "overlays" / overlay)
            except RuntimeError as e:
                r.check(False, "render", overlay, None, str(e))
                continue
            rendered[overlay] = docs
            for d in docs:
                r.cover("render", overlay, kn(d))
            check_schema(r, overlay, docs, opts.k8s_version)
            check_references(r, overlay, docs)
            server, server_obj, worker_cs = None, None, []
            for w in workloads(docs):
                for c in containers(w):
                    obj = kn(w)
                    bname = image_binary(c["image"])
                    if not r.check(bname in binaries, "binaries", overlay, obj,
                                   f"image {c['image']}: no binary {bname} (expected rwp-server or rwp-worker)"):
                        continue
                    cont = Container(w, c, docs, binaries[bname])
                    check_binaries(r, overlay, cont, obj)
                    check_ports_probes(r, overlay, cont, obj, services)
                    check_drain(r, overlay, cont, obj)
                    check_security(r, overlay, cont, obj, uids)
                    check_resources(r, overlay, cont, obj)
                    if bname == "rwp-server":
                        server, server_obj = cont, obj
                        check_storage(r, overlay, docs, cont, obj)
                    else:
                        worker_cs.append((cont, obj))
            r.check(server is not None and bool(worker_cs), "render", overlay, None, "needs a server and workers")
            check_ingress_and_urls(r, overlay, docs, server, worker_cs, services)
            check_credentials(r, overlay, server, worker_cs, server_obj)
            check_autoscaling(r, overlay, docs, opts.k8s_version)
            check_disruption(r, overlay, docs)
            check_netpol(r, overlay, docs)
            if server is not None and not opts.no_runtime:
                scalers = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler" or
                           (d["apiVersion"], d["kind"]) in CUSTOM_KINDS]
                needed = {AUTOSCALING_METRIC} if scalers else set()
                for d in scalers:
                    r.cover("runtime", overlay, kn(d))
                check_runtime(r, overlay, server, server_obj, worker_cs, tmp, needed, fixtures)

    # ----- summary
    kv = subprocess.run([opts.kubectl, "version", "--client"], capture_output=True, text=True).stdout.split()
    kv = " ".join(w for w in kv if w.startswith("v"))
    print(f"k8s-check: kubectl kustomize ({opts.kubectl}, {kv}); Kubernetes {opts.k8s_version} schemas "
          f"(kubernetes-validate {metadata.version('kubernetes-validate')}, strict); "
          f"binaries {opts.bin_dir}/rwp-server, rwp-worker; gRPC services {sorted(services)}")
    for overlay, docs in rendered.items():
        print(f"overlay {overlay}: {len(docs)} objects")
        for d in docs:
            checks = sorted(r.coverage[(overlay, kn(d))] - {"render"})
            print(f"  {kn(d):45} {', '.join(checks)}")
    dockerfiles = sorted(p.name for p in DOCKER.glob("Dockerfile.*") if p.suffix != ".dockerignore")
    print(f"images: {', '.join(dockerfiles)}: hadolint, .dockerignore, rpath, USER {sorted(set(uids.values()))}")
    print("checks passed: " + ", ".join(f"{k} {v}" for k, v in sorted(r.passed.items())))
    if r.failures:
        print(f"\nk8s-check FAILED: {len(r.failures)} problem(s)", file=sys.stderr)
        for f in r.failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print("k8s-check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
