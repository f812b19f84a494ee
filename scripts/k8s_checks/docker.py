"""The Dockerfiles: hadolint and consistency with the manifests."""

from __future__ import annotations

import re
import subprocess

from k8s_checks.common import DOCKER, Report


# --------------------------------------------------------------------------- docker

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
