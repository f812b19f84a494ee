"""Static checks of the rendered manifests: schema, binaries, ports and
probes, credentials, drain, security, resources, storage, references,
disruption, ingress and URLs, autoscaling."""

from __future__ import annotations

import collections
import re
import yaml

from k8s_checks.common import (
    AUTOSCALING_METRIC, Binary, CLUSTER_SCOPED, CREDENTIAL_SETTINGS, CUSTOM_KINDS, Container,
    FOREIGN_ENV, GRACE_MARGIN_S, K8S, OPERATOR_SECRETS, ROOT, Report, containers, kn, kv_utils,
    matches, split_address, workloads,
)


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
