"""The NetworkPolicies, evaluated: who may reach which port."""

from __future__ import annotations

from k8s_checks.common import DNS_NS, INGRESS_NS, MONITORING_NS, Report, containers, kn, matches, workloads


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
