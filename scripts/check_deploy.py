#!/usr/bin/env python3
"""Validates the deployment files under deploy/ without a container engine or a cluster.

Run by scripts/check-deploy.sh (`make check-deploy`), which installs the tools first and runs
this with the venv's Python (kubernetes-validate, jsonschema, PyYAML). What is checked against
what is printed at the end; in short:

- Kubernetes: each kustomization (deploy/, deploy/k8s/gpu) is rendered by a small subset of
  kustomize written here (kustomize itself is not packaged in Debian 12 or on PyPI): resources,
  configMapGenerator, patches (strategic merge for built-in kinds, JSON merge for CRDs),
  namespace, namePrefix/nameSuffix with kustomize's name-reference updates, labels, images.
  A key this subset does not know fails the check instead of being skipped. Every rendered
  object is validated strictly (unknown fields rejected) against the Kubernetes OpenAPI
  schemas shipped by kubernetes-validate, for each pinned Kubernetes version; the KEDA
  ScaledObject against deploy/schemas/keda (hand-written from the KEDA docs, not vendored).
  Then a few rules the API server enforces beyond the schemas (names, labels, selector vs
  template, named ports, volume mounts, requests <= limits) and cross-references inside a
  rendering (what scaleTargetRef, selectors and configMap volumes point at).
- Dockerfiles: hadolint (deploy/docker/hadolint.yaml), the final stage's USER is not root,
  every COPY source exists in the build context.
- Compose: `docker-compose config` (Debian 12's v1; also `docker compose` v2 where that plugin
  is installed), pulled images pinned, bind-mounted files and build files exist.
- Prometheus: `promtool check config`, plus scrape targets naming compose services.
- OpenTelemetry collector: parsed; the pipelines name only defined components.

Each validator is first shown a known-bad input and must reject it (a tool that accepts
everything would otherwise pass silently).

`check_deploy.py FILE...` checks only the given files, by type (a kustomization, a manifest
validated on its own, a Dockerfile, a compose file, a Prometheus or collector config).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils as kv
from kubernetes_validate.version import __version__ as KUBERNETES_VALIDATE_VERSION

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KEDA_SCHEMA = DEPLOY / "schemas/keda/scaledobject-v1alpha1.schema.json"
HADOLINT_CONFIG = DEPLOY / "docker/hadolint.yaml"
K8S_DEFS_ID = "https://kubernetes.io/api/_definitions.json"


def rel(p: Path | str) -> str:
    p = Path(p)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


class Report:
    def __init__(self) -> None:
        self.failures = 0
        self.sections: list[tuple[str, list[str]]] = []

    def section(self, title: str) -> None:
        print(f"\n{title}")
        self.sections.append((title, []))

    def ok(self, what: str) -> None:
        print(f"  ok    {what}")

    def fail(self, what: str, errors: list[str] | str) -> None:
        self.failures += 1
        errors = [errors] if isinstance(errors, str) else errors
        print(f"  FAIL  {what}")
        for e in errors:
            for line in str(e).rstrip().splitlines():
                print(f"          {line}")

    def note(self, what: str) -> None:
        print(f"  note  {what}")

    def result(self, what: str, errors: list[str]) -> None:
        if errors:
            self.fail(what, errors)
        else:
            self.ok(what)


def load_all(path: Path) -> list[dict]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        if not isinstance(d, dict):
            raise ValueError(f"{rel(path)}: a document is not a mapping")
    return docs


def load_one(path: Path) -> dict:
    docs = load_all(path)
    if len(docs) != 1:
        raise ValueError(f"{rel(path)}: expected one YAML document, found {len(docs)}")
    return docs[0]


def kname(obj: dict) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


# ---------------------------------------------------------------------------------------------
# Kubernetes schemas (kubernetes-validate) and the KEDA schema


def schema_dir(version: str) -> str:
    """The directory kubernetes-validate reads for `version` (what kv.validate picks)."""
    mm = kv.major_minor(version)
    found = [v for v in kv.all_versions() if kv.major_minor(v) == mm]
    if not found:
        raise SystemExit(
            f"kubernetes-validate {KUBERNETES_VALIDATE_VERSION} ships no schemas for Kubernetes {mm} "
            f"(it has {', '.join(kv.major_minor(v) for v in kv.all_versions())})"
        )
    return f"v{found[-1]}-local-strict"


def error_path(e: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in e.absolute_path) or "(top)"


class Validator:
    def __init__(self, versions: list[str]) -> None:
        self.versions = versions
        for v in versions:
            schema_dir(v)  # fails early on a version the package does not ship
        with open(KEDA_SCHEMA) as f:
            keda = json.load(f)
        jsonschema.Draft202012Validator.check_schema(keda)
        self.keda = {}
        for v in versions:
            defs = kv.schema_contents(f"kubernetes-json-schema/{schema_dir(v)}/_definitions.json", v)
            registry = referencing.Registry().with_resource(
                K8S_DEFS_ID, referencing.Resource.from_contents(defs)
            )
            self.keda[v] = jsonschema.Draft202012Validator(keda, registry=registry)

    def schema_errors(self, obj: dict) -> list[str]:
        errors: list[str] = []
        if obj.get("apiVersion") == "keda.sh/v1alpha1" and obj.get("kind") == "ScaledObject":
            for validator in self.keda.values():
                for e in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
                    errors.append(f"KEDA schema: {error_path(e)}: {e.message}")
            return dedupe(errors)
        for v in self.versions:
            try:
                kv.validate(obj, v, strict=True)
            except kv.ValidationError as e:
                errors.append(f"Kubernetes {kv.major_minor(v)} schema: {error_path(e)}: {e.message}")
            except kv.SchemaNotFoundError as e:
                errors.append(e.message)
        return dedupe(errors)

    def against(self, obj: dict) -> str:
        vs = " + ".join(kv.major_minor(v) for v in self.versions)
        if obj.get("kind") == "ScaledObject":
            return f"KEDA schema (hand-written, not vendored; ObjectMeta from Kubernetes {vs})"
        return f"Kubernetes {vs} (strict)"


def dedupe(xs: list[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in xs if not (x in seen or seen.add(x))]


# ---------------------------------------------------------------------------------------------
# Rules the API server (or KEDA's webhook) enforces beyond the OpenAPI schemas

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
SUFFIX = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(q) -> float | None:
    m = QUANTITY.match(str(q))
    if not m:
        return None
    s = m.group(2)
    if s and s[0] in "eE":
        return float(m.group(1)) * 10 ** int(s[1:])
    return float(m.group(1)) * SUFFIX[s]


def label_errors(labels, where: str) -> list[str]:
    errors = []
    for k, v in (labels or {}).items():
        prefix, _, name = str(k).rpartition("/")
        if (prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix))) or len(name) > 63 or not LABEL_NAME.match(name):
            errors.append(f"{where}: invalid label key {k!r}")
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
            errors.append(f"{where}: invalid label value {k}={v!r} (a string of at most 63 name characters)")
    return errors


def pod_template(obj: dict) -> dict | None:
    if obj.get("kind") in WORKLOADS:
        return ((obj.get("spec") or {}).get("template")) or {}
    return None


def api_rules(obj: dict) -> list[str]:
    errors: list[str] = []
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        errors.append("metadata.name is missing")
    elif kind == "Service":
        if len(name) > 63 or not DNS1035_LABEL.match(name):
            errors.append(f"metadata.name {name!r}: a Service name is a DNS-1035 label")
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        errors.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    hpa_name = (((obj.get("spec") or {}).get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("name")
    if kind == "ScaledObject" and name and len(name) > 54 and not hpa_name:
        errors.append(f"metadata.name {name!r}: KEDA names the HPA keda-hpa-<name>, which must fit 63 characters")
    errors += label_errors(meta.get("labels"), "metadata.labels")
    spec = obj.get("spec") or {}
    tmpl = pod_template(obj)
    if tmpl is not None:
        tlabels = (tmpl.get("metadata") or {}).get("labels") or {}
        errors += label_errors(tlabels, "spec.template.metadata.labels")
        sel = spec.get("selector") or {}
        errors += label_errors(sel.get("matchLabels"), "spec.selector.matchLabels")
        if sel.get("matchExpressions"):
            errors.append("spec.selector.matchExpressions: not checked by this script; use matchLabels")
        for k, v in (sel.get("matchLabels") or {}).items():
            if tlabels.get(k) != v:
                errors.append(f"spec.selector.matchLabels {k}={v} does not match the template's labels")
        errors += pod_rules(tmpl.get("spec") or {}, "spec.template.spec")
    if kind == "PodDisruptionBudget" and "minAvailable" in spec and "maxUnavailable" in spec:
        errors.append("spec: minAvailable and maxUnavailable are mutually exclusive")
    if kind == "ScaledObject":
        lo, hi, idle = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100), spec.get("idleReplicaCount")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            errors.append(f"spec: minReplicaCount {lo} > maxReplicaCount {hi} (KEDA rejects it)")
        if isinstance(idle, int) and isinstance(lo, int) and idle >= lo:
            errors.append(f"spec: idleReplicaCount {idle} must be below minReplicaCount {lo} (KEDA rejects it)")
    return errors


def pod_rules(pod: dict, where: str) -> list[str]:
    errors: list[str] = []
    volumes = [v.get("name") for v in pod.get("volumes") or []]
    if len(set(volumes)) != len(volumes):
        errors.append(f"{where}.volumes: duplicate names {volumes}")
    containers = (pod.get("initContainers") or []) + (pod.get("containers") or [])
    cnames = [c.get("name") for c in containers]
    if len(set(cnames)) != len(cnames):
        errors.append(f"{where}: duplicate container names {cnames}")
    for c in containers:
        cw = f"{where}.containers[{c.get('name')}]"
        if not c.get("name") or len(c["name"]) > 63 or not DNS1123_LABEL.match(c["name"]):
            errors.append(f"{cw}: the name is not a DNS-1123 label")
        if not c.get("image"):
            errors.append(f"{cw}: image is missing")
        ports = {}
        for p in c.get("ports") or []:
            n = p.get("name")
            if n is not None:
                if len(n) > 15 or not IANA_SVC_NAME.match(n) or not re.search("[a-z]", n) or "--" in n:
                    errors.append(f"{cw}.ports: {n!r} is not a valid port name (IANA_SVC_NAME, at most 15 characters)")
                ports[n] = p.get("containerPort")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            pr = c.get(probe) or {}
            for handler in ("httpGet", "tcpSocket", "grpc"):
                port = (pr.get(handler) or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    errors.append(f"{cw}.{probe}.{handler}.port {port!r} names no port of the container")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                errors.append(f"{cw}.volumeMounts: {m.get('name')!r} is not a volume of the pod")
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for r, v in {**req, **lim}.items():
            if quantity(v) is None:
                errors.append(f"{cw}.resources: {r}={v!r} is not a quantity")
        for r in set(req) & set(lim):
            a, b = quantity(req[r]), quantity(lim[r])
            if a is not None and b is not None and a > b:
                errors.append(f"{cw}.resources: request {r}={req[r]} exceeds the limit {lim[r]}")
            if "/" in r and not r.startswith(("requests.", "hugepages-")) and a != b and a is not None and b is not None:
                errors.append(f"{cw}.resources: extended resource {r}: request and limit must be equal")
    return errors


# ---------------------------------------------------------------------------------------------
# The kustomize subset

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "configMapGenerator",
                      "images", "namePrefix", "nameSuffix", "patches"}
# Strategic-merge patch keys of the lists kustomize merges by key in built-in kinds (the
# `patchMergeKey`s of the Kubernetes API types); every other list is replaced by the patch's.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name",
              "volumes": "name", "env": "name", "imagePullSecrets": "name", "ports": "containerPort",
              "volumeMounts": "mountPath", "volumeDevices": "devicePath", "hostAliases": "ip"}
# Fields kustomize's name-reference transformer rewrites when the object they name is renamed
# (namePrefix/nameSuffix). KEDA's scaleTargetRef is not one of them (kustomize issue #5306):
# a renamed Deployment leaves a ScaledObject pointing at the old name, as real kustomize does.
NAME_REFS = {"ConfigMap": [("volumes", "configMap", "name"), ("envFrom", "configMapRef", "name"),
                           ("env", "valueFrom", "configMapKeyRef", "name")],
             "Secret": [("volumes", "secret", "secretName"), ("envFrom", "secretRef", "name"),
                        ("env", "valueFrom", "secretKeyRef", "name")]}


class KustomizeError(Exception):
    pass


def smp(base, patch, builtin: bool, path: str = ""):
    """Strategic merge (built-in kinds) or JSON merge patch (RFC 7386, CRDs) of `patch` onto `base`."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    if any(str(k).startswith("$") for k in patch):
        raise KustomizeError(f"{path}: patch directives ({[k for k in patch if str(k).startswith('$')]}) are not supported by this checker")
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = smp(out.get(k) if isinstance(out.get(k), dict) else {}, v, builtin, f"{path}.{k}")
        elif isinstance(v, list) and builtin and k in MERGE_KEYS and isinstance(out.get(k), list):
            key = MERGE_KEYS[k]
            merged = copy.deepcopy(out[k])
            for item in v:
                if not isinstance(item, dict) or key not in item:
                    raise KustomizeError(f"{path}.{k}: a patch item without its merge key {key!r}")
                for i, old in enumerate(merged):
                    if isinstance(old, dict) and old.get(key) == item[key]:
                        merged[i] = smp(old, item, builtin, f"{path}.{k}[{item[key]}]")
                        break
                else:
                    merged.append(copy.deepcopy(item))
            out[k] = merged
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_images(obj: dict, images: list[dict], matched: set[str]) -> None:
    """kustomize's image transformer: an entry matches a container image that is its name,
    optionally followed by a tag or digest (kustomize's IsImageMatched). In an overlay that is
    the image as the base has already rewritten it, not the base's input."""
    tmpl = pod_template(obj)
    if tmpl is None:
        return
    pod = tmpl.get("spec") or {}
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        image = c.get("image", "")
        for im in images:
            name = im.get("name", "")
            if not re.fullmatch(re.escape(name) + r"(:[a-zA-Z0-9_.{}-]*)?(@sha256:[a-zA-Z0-9_.{}-]*)?", image):
                continue
            matched.add(name)
            new, rest = im.get("newName", name), image[len(name):]
            if im.get("digest"):
                rest = f"@{im['digest']}"
            elif im.get("newTag"):
                rest = f":{im['newTag']}"
            c["image"] = new + rest
            break


def rename_refs(obj: dict, kind: str, old: str, new: str) -> None:
    tmpl = pod_template(obj)
    if tmpl is not None:
        pod = tmpl.get("spec") or {}
        for fields in NAME_REFS.get(kind, []):
            top, *rest = fields
            if top == "volumes":
                items = pod.get("volumes") or []
            else:
                items = [e for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])
                         for e in c.get(top) or []]
            for item in items:
                node = item
                for f in rest[:-1]:
                    node = node.get(f) if isinstance(node, dict) else None
                if isinstance(node, dict) and node.get(rest[-1]) == old:
                    node[rest[-1]] = new
    if kind in WORKLOADS and obj.get("kind") == "HorizontalPodAutoscaler":
        ref = (obj.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") == kind and ref.get("name") == old:
            ref["name"] = new


def render(kdir: Path, seen: tuple[Path, ...] = ()) -> tuple[list[dict], list[str], list[str]]:
    """Renders the kustomization in `kdir`: (objects, notes, problems). Each object carries the
    file it came from in `__origin`. What this subset cannot render raises KustomizeError; a
    problem is something kustomize would render without complaint but that is wrong."""
    kdir = kdir.resolve()
    if kdir in seen:
        raise KustomizeError(f"{rel(kdir)}: kustomization cycle")
    kfile = next((kdir / n for n in ("kustomization.yaml", "kustomization.yml", "Kustomization") if (kdir / n).is_file()), None)
    if kfile is None:
        raise KustomizeError(f"{rel(kdir)}: no kustomization.yaml")
    k = load_one(kfile)
    where = rel(kfile)
    if k.get("apiVersion") not in (None, "kustomize.config.k8s.io/v1beta1") or k.get("kind") not in (None, "Kustomization"):
        raise KustomizeError(f"{where}: apiVersion/kind is not kustomize.config.k8s.io/v1beta1 Kustomization")
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{where}: {sorted(unknown)} not supported by this checker's kustomize subset (extend scripts/check_deploy.py)")
    notes: list[str] = []
    problems: list[str] = []
    objs: list[dict] = []
    for r in k.get("resources") or []:
        p = (kdir / r).resolve()
        if p.is_dir():
            sub, subnotes, subproblems = render(p, seen + (kdir,))
            objs += sub
            notes += subnotes
            problems += subproblems
        elif p.is_file():
            for d in load_all(p):
                d["__origin"] = rel(p)
                objs.append(d)
        else:
            raise KustomizeError(f"{where}: resource {r!r} does not exist")
    for g in k.get("configMapGenerator") or []:
        extra = set(g) - {"name", "files", "literals", "behavior"}
        if extra or g.get("behavior", "create") != "create":
            raise KustomizeError(f"{where}: configMapGenerator {g.get('name')}: {sorted(extra) or g.get('behavior')} not supported by this checker")
        data = {}
        for f in g.get("files") or []:
            key, _, path = f.rpartition("=")
            p = kdir / path
            if not p.is_file():
                raise KustomizeError(f"{where}: configMapGenerator {g['name']}: file {path!r} does not exist")
            data[key or Path(path).name] = p.read_text()
        for lit in g.get("literals") or []:
            key, _, value = lit.partition("=")
            data[key] = value
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]}, "data": data,
                     "__origin": f"{where} configMapGenerator"})
        notes.append(f"{where}: ConfigMap {g['name']} generated without kustomize's content-hash suffix")
    for p in k.get("patches") or []:
        extra = set(p) - {"path", "patch", "target"}
        if extra:
            raise KustomizeError(f"{where}: patch keys {sorted(extra)} not supported by this checker")
        if "path" in p:
            ppath = kdir / p["path"]
            if not ppath.is_file():
                raise KustomizeError(f"{where}: patch {p['path']!r} does not exist")
            pdoc, origin = load_one(ppath), rel(ppath)
        else:
            pdoc, origin = yaml.safe_load(p.get("patch") or ""), f"{where} inline patch"
        if isinstance(pdoc, list):
            raise KustomizeError(f"{origin}: JSON 6902 patches are not supported by this checker; use a strategic-merge patch")
        if not isinstance(pdoc, dict):
            raise KustomizeError(f"{origin}: the patch is not a mapping")
        target = p.get("target") or {"kind": pdoc.get("kind"), "name": (pdoc.get("metadata") or {}).get("name")}
        if set(target) - {"kind", "name", "group", "version"}:
            raise KustomizeError(f"{where}: patch target keys {sorted(set(target) - {'kind', 'name', 'group', 'version'})} not supported by this checker")
        if target.get("kind") and pdoc.get("kind") and pdoc["kind"] != target["kind"]:
            raise KustomizeError(f"{origin}: the patch is a {pdoc['kind']}, its target a {target['kind']}")
        matched = 0
        for i, o in enumerate(objs):
            group_version = o.get("apiVersion", "")
            group, _, version = group_version.rpartition("/")
            if target.get("kind") and o.get("kind") != target["kind"]:
                continue
            if target.get("name") and not re.fullmatch(target["name"], (o.get("metadata") or {}).get("name", "")):
                continue
            if "group" in target and target["group"] != group or "version" in target and target["version"] != version:
                continue
            builtin = "." not in group or group.endswith(".k8s.io")
            body = {kk: vv for kk, vv in pdoc.items() if kk not in ("apiVersion", "kind", "metadata")}
            if "metadata" in pdoc:
                body["metadata"] = {kk: vv for kk, vv in pdoc["metadata"].items() if kk not in ("name", "namespace")}
            origin_o = o.pop("__origin")
            objs[i] = smp(o, body, builtin, kname(o))
            objs[i]["__origin"] = f"{origin_o} + {origin}"
            matched += 1
        if not matched:
            raise KustomizeError(f"{origin}: the patch's target {target} matches no resource of {where}")
    ns = k.get("namespace")
    if ns:
        for o in objs:
            if o.get("kind") not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
                o.setdefault("metadata", {})["namespace"] = ns
    prefix, suffix = k.get("namePrefix", ""), k.get("nameSuffix", "")
    if prefix or suffix:
        renames = []
        for o in objs:
            if o.get("kind") in ("Namespace", "CustomResourceDefinition"):
                continue
            old = (o.get("metadata") or {}).get("name")
            if not old:
                continue
            o["metadata"]["name"] = f"{prefix}{old}{suffix}"
            renames.append((o.get("kind"), old, o["metadata"]["name"]))
        for kind, old, new in renames:
            for o in objs:
                rename_refs(o, kind, old, new)
    for lab in k.get("labels") or []:
        extra = set(lab) - {"pairs", "includeSelectors", "includeTemplates"}
        if extra:
            raise KustomizeError(f"{where}: labels keys {sorted(extra)} not supported by this checker")
        pairs = lab.get("pairs") or {}
        for o in objs:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            tmpl = pod_template(o)
            if tmpl is not None and (lab.get("includeTemplates") or lab.get("includeSelectors")):
                tmpl.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            if lab.get("includeSelectors"):
                spec = o.get("spec") or {}
                if tmpl is not None:
                    spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
                elif o.get("kind") == "Service":
                    spec.setdefault("selector", {}).update(pairs)
                elif o.get("kind") == "PodDisruptionBudget":
                    spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
    images = k.get("images") or []
    matched: set[str] = set()
    for o in objs:
        set_images(o, images, matched)
    for im in images:
        if im.get("name") not in matched:
            found = sorted({c.get("image") for o in objs if pod_template(o) is not None
                            for c in (pod_template(o).get("spec") or {}).get("containers") or []})
            problems.append(f"{where}: images entry {im.get('name')!r} matches no container image, so kustomize "
                            f"ignores it silently (the images at this point: {found})")
    return objs, notes, problems


def cross_refs(objs: list[dict], notes: list[str]) -> list[str]:
    """References between the objects of one rendering: errors (and notes appended to `notes`)."""
    errors: list[str] = []
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objs:
        by_kind.setdefault(o.get("kind"), {})[(o.get("metadata") or {}).get("name")] = o
    templates = [(o, (pod_template(o).get("metadata") or {}).get("labels") or {}) for o in objs if pod_template(o) is not None]

    def selects(sel: dict) -> list[str]:
        return [kname(o) for o, labels in templates if sel and all(labels.get(k) == v for k, v in sel.items())]

    targets: dict[str, str] = {}
    for o in objs:
        spec = o.get("spec") or {}
        if o.get("kind") in ("ScaledObject", "HorizontalPodAutoscaler"):
            ref = spec.get("scaleTargetRef") or {}
            kind = ref.get("kind", "Deployment")
            if ref.get("name") not in by_kind.get(kind, {}):
                errors.append(f"{kname(o)}: scaleTargetRef {kind}/{ref.get('name')} is not in this kustomization "
                              f"(it has {sorted(by_kind.get(kind, {}))}); kustomize does not rename KEDA's scaleTargetRef")
            target = by_kind.get(kind, {}).get(ref.get("name"))
            replicas = ((target or {}).get("spec") or {}).get("replicas")
            lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
            if o.get("kind") == "ScaledObject" and isinstance(replicas, int) and not lo <= replicas <= hi:
                notes.append(f"{kname(target)} sets replicas: {replicas}, outside {kname(o)}'s "
                             f"{lo}..{hi}: KEDA scales it into that range")
            key = f"{kind}/{ref.get('name')}"
            if key in targets:
                errors.append(f"{kname(o)} and {targets[key]} both scale {key}")
            targets[key] = kname(o)
        if o.get("kind") == "Service" and not selects(spec.get("selector") or {}):
            errors.append(f"{kname(o)}: selector {spec.get('selector')} selects no pod template")
        if o.get("kind") == "Service":
            picked = [t for t, labels in templates if all(labels.get(k) == v for k, v in (spec.get("selector") or {}).items())]
            for port in spec.get("ports") or []:
                tp = port.get("targetPort")
                if isinstance(tp, str):
                    for t in picked:
                        names = [p.get("name") for c in pod_template(t)["spec"].get("containers") or [] for p in c.get("ports") or []]
                        if tp not in names:
                            errors.append(f"{kname(o)}: targetPort {tp!r} names no container port of {kname(t)}")
        if o.get("kind") == "PodDisruptionBudget" and not selects((spec.get("selector") or {}).get("matchLabels") or {}):
            errors.append(f"{kname(o)}: selector selects no pod template")
    for o, _ in templates:
        pod = pod_template(o).get("spec") or {}
        for v in pod.get("volumes") or []:
            cm = v.get("configMap")
            if cm and cm.get("name") not in by_kind.get("ConfigMap", {}) and not cm.get("optional"):
                errors.append(f"{kname(o)}: volume {v['name']} names ConfigMap {cm.get('name')}, which is not in this kustomization")
    return errors


# ---------------------------------------------------------------------------------------------
# Sections


def check_kustomizations(rep: Report, val: Validator, kdirs: list[Path]) -> set[str]:
    """Renders and validates each kustomization; returns the files it used."""
    used: set[str] = set()
    for kdir in kdirs:
        label = rel(kdir) + "/"
        try:
            objs, notes, problems = render(kdir)
        except (KustomizeError, ValueError, OSError, yaml.YAMLError) as e:
            rep.fail(f"{label}: kustomization", str(e))
            continue
        except Exception as e:  # a malformed file this subset trips over: still a failure, not a traceback
            rep.fail(f"{label}: kustomization", f"{type(e).__name__}: {e}")
            continue
        rep.result(f"{label}: kustomization parsed, every resource, patch and generator file it names exists, "
                   f"every images entry applies ({len(objs)} objects)", problems)
        for o in objs:
            origin = o.pop("__origin")
            used.update(x.split(" ")[0] for x in origin.split(" + "))
            rep.result(f"{label}: {kname(o)}  [{origin}] against {val.against(o)}",
                       val.schema_errors(o) + api_rules(o))
        rep.result(f"{label}: cross-references (scaleTargetRef, selectors, named ports, ConfigMap volumes)", cross_refs(objs, notes))
        for n in notes:
            rep.note(n)
    return used


def check_manifest_file(rep: Report, val: Validator, path: Path) -> None:
    try:
        docs = load_all(path)
    except (ValueError, OSError, yaml.YAMLError) as e:
        rep.fail(rel(path), str(e))
        return
    for o in docs:
        rep.result(f"{rel(path)}: {kname(o)} against {val.against(o)} (on its own, not through a kustomization)",
                   val.schema_errors(o) + api_rules(o))


def hadolint_findings(hadolint: str, dockerfile: Path) -> tuple[int, str]:
    p = subprocess.run([hadolint, "--no-color", "--config", rel(HADOLINT_CONFIG), rel(dockerfile)],
                       capture_output=True, text=True, cwd=ROOT)
    return p.returncode, (p.stdout + p.stderr).strip()


def dockerfile_rules(path: Path) -> list[str]:
    """Beyond hadolint: the final stage runs as a non-root user; COPY sources exist in the
    build context (the repository root, as the compose file and the README build them)."""
    errors = []
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    stages = [i for i, l in enumerate(lines) if l.upper().startswith("FROM ")]
    final = lines[stages[-1]:] if stages else lines
    users = [l.split(None, 1)[1].strip() for l in final if l.upper().startswith("USER ")]
    if not users:
        errors.append("the final stage sets no USER: the image would run as root")
    elif users[-1].split(":")[0] in ("root", "0"):
        errors.append(f"the final stage runs as {users[-1]}")
    for l in lines:
        if not l.upper().startswith(("COPY ", "ADD ")):
            continue
        args = shlex.split(l)[1:]
        if any(a.startswith("--from") for a in args):
            continue
        srcs = [a for a in args if not a.startswith("--")][:-1]
        for s in srcs:
            if not (ROOT / s).exists():
                errors.append(f"{l.split()[0]} source {s!r} does not exist in the build context (the repository root)")
    return errors


def check_dockerfiles(rep: Report, hadolint: str, files: list[Path]) -> None:
    for f in files:
        rc, out = hadolint_findings(hadolint, f)
        errors = [] if rc == 0 else [out or f"hadolint exited {rc}"]
        rep.result(f"{rel(f)}: hadolint ({rel(HADOLINT_CONFIG)}), non-root USER, COPY sources exist",
                   errors + dockerfile_rules(f))
        if rc == 0 and out:
            rep.note(f"{rel(f)}: hadolint findings below the failure threshold:\n          " + out.replace("\n", "\n          "))


def compose_commands(compose: str) -> list[list[str]]:
    cmds = [shlex.split(compose)]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        cmds.append(["docker", "compose"])
    return cmds


def check_compose(rep: Report, compose: str, path: Path) -> dict | None:
    for cmd in compose_commands(compose):
        p = subprocess.run(cmd + ["-f", str(path), "config", "-q"], capture_output=True, text=True, cwd=ROOT)
        rep.result(f"{rel(path)}: `{' '.join(cmd)} config` ({tool_version(cmd + ['version', '--short'])})",
                   [] if p.returncode == 0 else [(p.stdout + p.stderr).strip() or f"exit {p.returncode}"])
    try:
        c = load_one(path)
    except (ValueError, yaml.YAMLError) as e:
        rep.fail(rel(path), str(e))
        return None
    errors = []
    for name, s in (c.get("services") or {}).items():
        image, build = s.get("image"), s.get("build")
        if image and not build:
            repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
            if "@" not in image and (not tag or tag == "latest"):
                errors.append(f"service {name}: image {image!r} is not pinned to a tag")
        if isinstance(build, dict):
            ctx = (path.parent / build.get("context", ".")).resolve()
            if not (ctx / build.get("dockerfile", "Dockerfile")).is_file():
                errors.append(f"service {name}: build file {ctx / build.get('dockerfile', 'Dockerfile')} does not exist")
        for v in s.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else (v.get("source") if v.get("type") == "bind" else None)
            if src and src.startswith((".", "/")) and not (path.parent / src).exists():
                errors.append(f"service {name}: bind-mounted {src!r} does not exist")
    rep.result(f"{rel(path)}: pulled images pinned to a tag, build files and bind-mounted files exist", errors)
    return c


def check_prometheus(rep: Report, promtool: str, path: Path, compose: dict | None) -> dict | None:
    p = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    rep.result(f"{rel(path)}: `promtool check config` ({tool_version([promtool, '--version'])})",
               [] if p.returncode == 0 else [(p.stdout + p.stderr).strip()])
    try:
        cfg = load_one(path)
    except (ValueError, yaml.YAMLError) as e:
        rep.fail(rel(path), str(e))
        return None
    errors = []
    jobs = [j.get("job_name") for j in cfg.get("scrape_configs") or []]
    if not jobs:
        errors.append("no scrape_configs")
    if len(set(jobs)) != len(jobs) or None in jobs:
        errors.append(f"job_name missing or repeated: {jobs}")
    services = set((compose or {}).get("services") or {})
    for j in cfg.get("scrape_configs") or []:
        targets = [t for sc in j.get("static_configs") or [] for t in sc.get("targets") or []]
        if not targets:
            errors.append(f"job {j.get('job_name')}: no static targets")
        for t in targets:
            host, _, port = str(t).rpartition(":")
            if not host or not port.isdigit():
                errors.append(f"job {j.get('job_name')}: target {t!r} is not host:port")
            elif compose is not None and host not in services:
                errors.append(f"job {j.get('job_name')}: target host {host!r} is not a service of the compose file")
    rep.result(f"{rel(path)}: every job has a unique job_name and host:port targets" +
               (", each a compose service" if compose is not None else ""), errors)
    return cfg


OTEL_TOP = {"receivers", "processors", "exporters", "extensions", "connectors", "service"}


def check_otel(rep: Report, path: Path, prometheus: dict | None) -> None:
    try:
        cfg = load_one(path)
    except (ValueError, yaml.YAMLError) as e:
        rep.fail(rel(path), str(e))
        return
    errors = []
    if set(cfg) - OTEL_TOP:
        errors.append(f"unknown top-level keys {sorted(set(cfg) - OTEL_TOP)}")
    service = cfg.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        errors.append("service.pipelines is empty")
    used: set[tuple[str, str]] = set()
    connectors = set(cfg.get("connectors") or {})
    for pname, p in pipelines.items():
        if pname.split("/")[0] not in ("traces", "metrics", "logs", "profiles"):
            errors.append(f"pipeline {pname!r}: the type is not traces, metrics, logs or profiles")
        if set(p or {}) - {"receivers", "processors", "exporters"}:
            errors.append(f"pipeline {pname}: unknown keys {sorted(set(p) - {'receivers', 'processors', 'exporters'})}")
        for section, required in (("receivers", True), ("processors", False), ("exporters", True)):
            ids = (p or {}).get(section) or []
            if required and not ids:
                errors.append(f"pipeline {pname}: no {section}")
            for cid in ids:
                defined = set(cfg.get(section) or {}) | (connectors if section != "processors" else set())
                if cid not in defined:
                    errors.append(f"pipeline {pname}: {section[:-1]} {cid!r} is not defined under {section}")
                used.add((section, cid))
    for ext in service.get("extensions") or []:
        if ext not in (cfg.get("extensions") or {}):
            errors.append(f"service.extensions: {ext!r} is not defined under extensions")
    unused = [f"{s}.{cid}" for s in ("receivers", "processors", "exporters") for cid in cfg.get(s) or {} if (s, cid) not in used]
    if prometheus is not None:
        prom_ports = {str(t).rpartition(":")[2] for j in prometheus.get("scrape_configs") or []
                      for sc in j.get("static_configs") or [] for t in sc.get("targets") or []
                      if str(t).startswith("otel-collector:")}
        for eid, e in (cfg.get("exporters") or {}).items():
            if eid.split("/")[0] == "prometheus":
                port = str((e or {}).get("endpoint", "")).rpartition(":")[2]
                if prom_ports and port not in prom_ports:
                    errors.append(f"exporter {eid} listens on port {port}; Prometheus scrapes otel-collector on {sorted(prom_ports)}")
    rep.result(f"{rel(path)}: parsed; pipelines name only defined receivers, processors and exporters" +
               ("; the prometheus exporter's port is the one Prometheus scrapes" if prometheus is not None else ""), errors)
    if unused:
        rep.note(f"{rel(path)}: defined but in no pipeline (the collector ignores them): {unused}")


def tool_version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError:
        return "?"
    return ((p.stdout or p.stderr).strip().splitlines() or ["?"])[0]


# ---------------------------------------------------------------------------------------------
# Self-test: every validator rejects a known-bad input


def self_test(rep: Report, val: Validator, tools: argparse.Namespace) -> None:
    errors = []
    dep = load_one(DEPLOY / "k8s/deployment.yaml")
    bad = copy.deepcopy(dep)
    bad["spec"]["replicas"] = "two"
    if not val.schema_errors(bad):
        errors.append("the Kubernetes schemas accepted replicas: \"two\"")
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    if not val.schema_errors(bad):
        errors.append("the Kubernetes schemas accepted an unknown container field (strict mode is off?)")
    so = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
          "spec": {"scaleTargetRef": {"name": "x"}, "maxReplicaCount": "12",
                   "triggers": [{"type": "kafka", "metadata": {"topic": "t"}}], "pollingIntervall": 5}}
    if len(val.schema_errors(so)) < 3:
        errors.append(f"the KEDA schema missed a wrong type, an unknown field or a missing kafka parameter: {val.schema_errors(so)}")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "Dockerfile").write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
        if hadolint_findings(tools.hadolint, t / "Dockerfile")[0] == 0:
            errors.append("hadolint accepted an untagged base image and apt-get without cleanup")
        (t / "compose.yml").write_text("services:\n  a:\n    image: busybox:1.36\n    imagee: x\n")
        for cmd in compose_commands(tools.compose):
            if subprocess.run(cmd + ["-f", str(t / "compose.yml"), "config", "-q"], capture_output=True).returncode == 0:
                errors.append(f"`{' '.join(cmd)} config` accepted an unknown service key")
        (t / "prometheus.yml").write_text("scrape_configs:\n  - job_name: a\n    scrape_intervall: 5s\n")
        if subprocess.run([tools.promtool, "check", "config", str(t / "prometheus.yml")],
                          capture_output=True).returncode == 0:
            errors.append("promtool accepted an unknown scrape_config key")
    rep.result("self-test: each validator rejects a known-bad input (wrong type, unknown field, lint finding)", errors)


# ---------------------------------------------------------------------------------------------


def classify(path: Path) -> str:
    if path.name.startswith("Dockerfile") or path.suffix == ".Dockerfile":
        return "dockerfile"
    if path.is_dir() or path.name in ("kustomization.yaml", "kustomization.yml"):
        return "kustomization"
    try:
        docs = load_all(path)
    except (ValueError, yaml.YAMLError):
        return "yaml"
    d = docs[0] if docs else {}
    if "services" in d:
        return "compose"
    if "scrape_configs" in d or "global" in d:
        return "prometheus"
    if "receivers" in d and "service" in d:
        return "otel"
    if "apiVersion" in d and "kind" in d:
        return "manifest"
    return "yaml"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k8s-versions", required=True, help="space-separated Kubernetes versions, e.g. '1.35.0 1.37.0'")
    ap.add_argument("--hadolint", required=True)
    ap.add_argument("--promtool", required=True)
    ap.add_argument("--compose", required=True, help="the compose command, e.g. docker-compose")
    ap.add_argument("files", nargs="*", type=Path, help="check only these files")
    args = ap.parse_args()
    versions = args.k8s_versions.split()
    val = Validator(versions)
    rep = Report()

    if args.files:
        rep.section("Checking the given files")
        for f in args.files:
            f = f if f.is_absolute() else Path.cwd() / f
            kind = classify(f)
            if kind == "kustomization":
                check_kustomizations(rep, val, [f if f.is_dir() else f.parent])
            elif kind == "manifest":
                check_manifest_file(rep, val, f)
            elif kind == "dockerfile":
                check_dockerfiles(rep, args.hadolint, [f])
            elif kind == "compose":
                check_compose(rep, args.compose, f)
            elif kind == "prometheus":
                check_prometheus(rep, args.promtool, f, None)
            elif kind == "otel":
                check_otel(rep, f, None)
            else:
                rep.fail(rel(f), "not a file type this script checks (or not YAML)")
        print(f"\ncheck-deploy: {'FAILED, ' + str(rep.failures) + ' check(s)' if rep.failures else 'all checks passed'}")
        return 1 if rep.failures else 0

    rep.section("Self-test")
    self_test(rep, val, args)

    rep.section(f"Kubernetes (kubernetes-validate {KUBERNETES_VALIDATE_VERSION}, strict; "
                f"Kubernetes {' + '.join(kv.major_minor(v) for v in versions)}; kustomize subset in this script)")
    kdirs = sorted({p.parent for p in DEPLOY.rglob("kustomization.yaml")})
    used = check_kustomizations(rep, val, kdirs)
    for p in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        if rel(p) not in used and p.name != "kustomization.yaml":
            rep.note(f"{rel(p)} is named by no kustomization; validated on its own")
            check_manifest_file(rep, val, p)

    rep.section(f"Dockerfiles (hadolint: {tool_version([args.hadolint, '--version'])})")
    check_dockerfiles(rep, args.hadolint, sorted((DEPLOY / "docker").glob("Dockerfile*")))

    rep.section("Compose, Prometheus, OpenTelemetry collector")
    compose = check_compose(rep, args.compose, DEPLOY / "docker-compose.yml")
    prometheus = check_prometheus(rep, args.promtool, DEPLOY / "prometheus.yml", compose)
    check_otel(rep, DEPLOY / "otel-collector.yaml", prometheus)

    print("""
Not validated:
  - kustomize itself is not run (not in Debian 12 or on PyPI): the subset above renders what
    deploy/ uses and fails on any key it does not know; generated ConfigMaps have no hash suffix.
  - the KEDA ScaledObject is checked against a schema HAND-WRITTEN from the KEDA docs
    (deploy/schemas/keda/README.md), not against KEDA's own CRD (no registry package looked
    at ships it).
  - the OpenTelemetry collector config is not run through `otelcol validate` (no package):
    component settings are not checked, only that the pipelines name defined components.
  - nothing is built or started: no image build, no cluster (admission webhooks, quotas, the
    existence of the Secret listing-guard-kafka, GPU nodes), no compose up.""")
    print(f"\ncheck-deploy: {'FAILED, ' + str(rep.failures) + ' check(s)' if rep.failures else 'all checks passed'}")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
