#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests (`kubectl kustomize` output) of skein.

    check.py --crds DIR --dockerfile Dockerfile [--secrets FILE] [--k8s V]... RENDERED.yaml

- every built-in object against Kubernetes' own schemas (kubernetes-validate,
  strict: an unknown field is an error), for each --k8s version;
- every custom resource (KEDA's ScaledObject and TriggerAuthentication,
  prometheus-operator's ServiceMonitor) against the openAPIV3Schema of its
  CRD in --crds, strict the same way (an unknown field is an error, as
  `kubectl apply --validate=strict` makes it);
- references: Services, the PodDisruptionBudget and the ServiceMonitor select
  something, the ScaledObject's target and TriggerAuthentication exist, every
  Secret a pod or custom resource names is in --secrets (rendered Secrets);
- prints, as JSON on stdout, every pod that would run, with each container's
  command, args and environment as the kubelet would give them: the image's
  ENV (from the Dockerfile's runtime stage), then the container's env with
  fieldRefs and Secrets filled with stand-ins, and $(VAR) references in
  command and args expanded. skein's test (tests/tests/deploy.rs) runs each
  through `skein-node --check-config`.

Exit 1 with every problem on stderr if any check fails.
"""

import argparse
import copy
import json
import re
import shlex
import sys

import jsonschema
import kubernetes_validate
import yaml

WORKLOADS = {"StatefulSet", "Deployment", "DaemonSet", "Job", "ReplicaSet"}


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def strict(schema):
    """The schema with additionalProperties: false wherever it lists
    properties and allows no others: the API server prunes (and strict
    validation rejects) fields a CRD does not declare."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def crd_schemas(paths):
    schemas = {}
    for path in paths:
        for crd in load_all(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                if v.get("served", True):
                    schema = v["schema"]["openAPIV3Schema"]
                    schemas[(f"{group}/{v['name']}", kind)] = strict(schema)
    return schemas


def image_env(dockerfile):
    """ENV of the Dockerfile's last stage, the runtime image."""
    text = open(dockerfile).read().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if not words:
            continue
        if words[0].upper() == "FROM":
            env = {}
        elif words[0].upper() == "ENV" and len(words) == 2:
            for token in shlex.split(words[1]):
                if "=" in token:
                    k, v = token.split("=", 1)
                    env[k] = v
    return env


def expand(text, env):
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ is a
    literal $, anything else is left as it is."""

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, text)


def labels_match(selector, labels):
    ml = (selector or {}).get("matchLabels", selector or {})
    if not isinstance(ml, dict) or not ml:
        return False
    return all(labels.get(k) == v for k, v in ml.items() if isinstance(v, str))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crds", nargs="+", required=True)
    ap.add_argument("--dockerfile", required=True)
    ap.add_argument("--secrets", help="rendered Secrets that the pods may name")
    ap.add_argument("--k8s", action="append", help="Kubernetes versions (default 1.37.0)")
    ap.add_argument("rendered")
    a = ap.parse_args()

    problems = []
    docs = load_all(a.rendered)
    schemas = crd_schemas(a.crds)
    versions = a.k8s or ["1.37.0"]
    secrets = None
    if a.secrets:
        secrets = {d["metadata"]["name"] for d in load_all(a.secrets) if d.get("kind") == "Secret"}
        secrets |= {d["metadata"]["name"] for d in docs if d.get("kind") == "Secret"}
    counts = {"builtin": 0, "custom": 0}

    for d in docs:
        what = f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        key = (d.get("apiVersion"), d.get("kind"))
        if key in schemas:
            counts["custom"] += 1
            v = jsonschema.Draft7Validator(schemas[key])
            for e in sorted(v.iter_errors(d), key=lambda e: list(e.path)):
                problems.append(f"{what}: {'/'.join(map(str, e.path))}: {e.message}")
        elif "." in (d.get("apiVersion") or "").split("/")[0] and not d["apiVersion"].split("/")[0].endswith(".k8s.io"):
            problems.append(f"{what}: {d['apiVersion']} is a custom resource without a CRD in --crds")
        else:
            counts["builtin"] += 1
            for version in versions:
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    path = "/".join(map(str, e.path))
                    problems.append(f"{what} (Kubernetes {version}): {path}: {e.message}")
                except Exception as e:  # schema not found, etc.
                    problems.append(f"{what} (Kubernetes {version}): {e}")

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    pods = [
        (d, d["spec"]["template"]) for d in docs if d["kind"] in WORKLOADS
    ]

    def need_secret(name, where, optional=False):
        if secrets is not None and name not in secrets and not optional:
            problems.append(f"{where} names the Secret {name}, which no rendered Secret provides")

    for name, svc in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector")
        if not any(labels_match(sel, t["metadata"].get("labels", {})) for _, t in pods):
            problems.append(f"Service/{name} selects no pod")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        if not any(labels_match(pdb["spec"]["selector"], t["metadata"].get("labels", {})) for _, t in pods):
            problems.append(f"PodDisruptionBudget/{name} selects no pod")
    for name, sm in by_kind.get("ServiceMonitor", {}).items():
        ports = {e.get("port") for e in sm["spec"]["endpoints"]}
        chosen = [
            s for s in by_kind.get("Service", {}).values()
            if labels_match(sm["spec"]["selector"], s["metadata"].get("labels", {}))
        ]
        if not chosen:
            problems.append(f"ServiceMonitor/{name} selects no Service")
        for s in chosen:
            if not ports <= {p.get("name") for p in s["spec"]["ports"]}:
                problems.append(f"ServiceMonitor/{name}: Service/{s['metadata']['name']} has no port {ports}")
        for e in sm["spec"]["endpoints"]:
            cred = (e.get("authorization") or {}).get("credentials")
            if cred:
                need_secret(cred["name"], f"ServiceMonitor/{name}")
            ca = ((e.get("tlsConfig") or {}).get("ca") or {}).get("secret")
            if ca:
                need_secret(ca["name"], f"ServiceMonitor/{name}")
    for name, so in by_kind.get("ScaledObject", {}).items():
        ref = so["spec"]["scaleTargetRef"]
        if ref["name"] not in by_kind.get(ref.get("kind", "Deployment"), {}):
            problems.append(f"ScaledObject/{name}: no {ref.get('kind', 'Deployment')}/{ref['name']}")
        for t in so["spec"]["triggers"]:
            auth = (t.get("authenticationRef") or {}).get("name")
            if auth and auth not in by_kind.get("TriggerAuthentication", {}):
                problems.append(f"ScaledObject/{name}: no TriggerAuthentication/{auth}")
            if t["type"] == "metrics-api":
                m = t["metadata"]
                for k in ("url", "valueLocation", "authMode"):
                    if k not in m:
                        problems.append(f"ScaledObject/{name}: metrics-api trigger without {k}")
    for name, ta in by_kind.get("TriggerAuthentication", {}).items():
        for ref in ta["spec"].get("secretTargetRef", []):
            need_secret(ref["name"], f"TriggerAuthentication/{name}")

    defaults = image_env(a.dockerfile)
    out = []
    for w, t in pods:
        ns = w["metadata"].get("namespace", "default")
        spec = t["spec"]
        if w["kind"] == "StatefulSet":
            names = [f"{w['metadata']['name']}-{i}" for i in range(w["spec"].get("replicas", 1))]
        else:
            names = [f"{w['metadata']['name']}-5d8f7c9b6d-x2x7q"]
        for vol in spec.get("volumes", []):
            if "secret" in vol:
                need_secret(vol["secret"]["secretName"], f"{w['kind']}/{w['metadata']['name']}",
                            vol["secret"].get("optional", False))
        for pod_name in names:
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                env = dict(defaults)
                for e in c.get("env", []):
                    if "value" in e:
                        env[e["name"]] = expand(e["value"], env)
                        continue
                    src = e.get("valueFrom", {})
                    if "fieldRef" in src:
                        field = src["fieldRef"]["fieldPath"]
                        env[e["name"]] = {
                            "metadata.name": pod_name,
                            "metadata.namespace": ns,
                            "status.podIP": "10.1.2.3",
                            "spec.nodeName": "node-a",
                        }.get(field, f"field-{field}")
                    elif "secretKeyRef" in src:
                        ref = src["secretKeyRef"]
                        need_secret(ref["name"], f"{w['kind']}/{w['metadata']['name']}", ref.get("optional", False))
                        env[e["name"]] = f"stand-in-for-secret-{ref['name']}-{ref['key']}"
                    else:
                        problems.append(f"{w['kind']}/{w['metadata']['name']}: env {e['name']}: unhandled source {src}")
                out.append({
                    "workload": f"{w['kind']}/{w['metadata']['name']}",
                    "pod": pod_name,
                    "container": c["name"],
                    "image": c.get("image"),
                    "command": [expand(x, env) for x in c.get("command", [])] or None,
                    "args": [expand(x, env) for x in c.get("args", [])],
                    "env": env,
                    "drain_timeout": next(
                        (int(x.split("=", 1)[1]) for x in c.get("args", []) if x.startswith("--drain-timeout=")), None
                    ),
                    "termination_grace": spec.get("terminationGracePeriodSeconds", 30),
                })

    for p in problems:
        print(f"check.py: {a.rendered}: {p}", file=sys.stderr)
    print(json.dumps({"builtin": counts["builtin"], "custom": counts["custom"], "pods": out}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
