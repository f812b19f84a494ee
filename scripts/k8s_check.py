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
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from k8s_checks.common import (
    AUTOSCALING_METRIC, Binary, CUSTOM_KINDS, Container, DOCKER, K8S, Report, containers,
    image_binary, kn, kubernetes_validate, render, workloads,
)
from k8s_checks.docker import check_docker, dockerfile_uid
from k8s_checks.manifests import (
    check_autoscaling, check_binaries, check_credentials, check_disruption, check_drain,
    check_ingress_and_urls, check_ports_probes, check_references, check_resources, check_schema,
    check_security, check_storage, grpc_services,
)
from k8s_checks.netpol import check_netpol
from k8s_checks.runtime import check_runtime, make_fixtures


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
