"""What every check shares: imports, the settings of the deployment, the
report, the binaries' --print-config, rendered manifests and containers."""

from __future__ import annotations

import collections
import json
import os
import subprocess
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

import yaml

try:
    import kubernetes_validate
    from kubernetes_validate import utils as kv_utils  # noqa: F401 (the schema check's)
except ImportError:  # reported in main()
    kubernetes_validate = None

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKER = ROOT / "deploy" / "docker"

# Environment variables the containers may set that are not the binaries' own.
FOREIGN_ENV = {"RUST_LOG", "RUST_BACKTRACE", "CUDA_CACHE_PATH", "HOME", "TMPDIR"}
# Secrets the manifests reference but never contain: the operator (or
# cert-manager) creates them; docs/deploy.md says how.
OPERATOR_SECRETS = {"rwp-server-tls", "rwp-ingress-grpc-tls", "rwp-server-grpc-tls", "rwp-worker-grpc-tls",
                    "rwp-tokens", "rwp-worker-token", "rwp-data-credentials"}
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
