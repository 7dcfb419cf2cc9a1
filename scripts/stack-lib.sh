# The compose stack under Docker or Podman: sourced by scripts/stack (start it and leave it
# running, stop it) and scripts/compose-check (start it, check it, remove it), so that the
# check proves the path users run.
#
# The caller sets ROOT (the checkout), PROJECT (the compose project name), SERVICES (what to
# run, in any order) and LOG_NAME, and may set APP (the daemon's service, default ingestor).
# Engine: Docker where a Docker engine answers (with the compose plugin), else Podman with
# podman-compose (installed here: Debian packages as root, podman-compose pinned in its own
# venv). Podman's configuration and storage stay in .compose-check/ (CONTAINERS_CONF and
# friends); nothing in /etc changes. Base images that are missing and cannot be pulled are
# replaced by TEST-ONLY stand-ins built from Debian packages (deploy/standin/build); an
# optional service (grafana) whose image cannot be had is left out, saying so.
# shellcheck shell=bash

STATE="$ROOT/.compose-check"
APP="${APP:-ingestor}"
T0=$SECONDS
STAGE="" STAGE_T0=$SECONDS TIMINGS=() STACK_UP="" FAILED_SERVICE=""
# Services that may be left out when their image cannot be had (no stand-in exists).
OPTIONAL_SERVICES=(grafana)

log() { printf '[%s %3ds] %s\n' "$LOG_NAME" "$((SECONDS - T0))" "$*"; }
fail() {
  log "FAIL: $*" >&2
  exit 1
}
stage() {
  [ -n "$STAGE" ] && TIMINGS+=("$(printf '%-28s %4ds' "$STAGE" "$((SECONDS - STAGE_T0))")")
  STAGE="$1" STAGE_T0=$SECONDS
  [ -n "$STAGE" ] && log "== $STAGE"
  return 0
}

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    fail "install these Debian packages first: $*"
  fi
  log "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$@" >"$STATE/logs/apt.log" 2>&1 || {
    apt-get update -qq >>"$STATE/logs/apt.log" 2>&1 &&
      apt-get install -y -qq --no-install-recommends "$@" >>"$STATE/logs/apt.log" 2>&1
  } || { tail -20 "$STATE/logs/apt.log" >&2; fail "apt-get install $*"; }
}

# -- the engine ---------------------------------------------------------------------------------
setup_podman() {
  local missing=() pkg
  # netavark + aardvark-dns: the services find each other by name (CNI would need dnsname).
  for pkg in podman runc netavark aardvark-dns iptables debootstrap; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} = 0 ] || apt_install "${missing[@]}"

  local conf="$STATE/podman"
  local run
  run="/run/opticodds-compose-check-$(printf %s "$ROOT" | md5sum | cut -c1-8)"
  mkdir -p "$conf/networks"
  cat >"$conf/containers.conf" <<EOF
# Written by scripts/stack-lib.sh; used through CONTAINERS_CONF by scripts/stack and
# scripts/compose-check only.
[containers]
# The default rlimits cannot be set here (setrlimit EPERM: no CAP_SYS_RESOURCE); these can.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"             # crun refuses: "cgroups in hybrid mode not supported"
cgroup_manager = "cgroupfs"  # no systemd
events_logger = "file"
tmp_dir = "$run/libpod"
[network]
network_backend = "netavark"
network_config_dir = "$conf/networks"
EOF
  cat >"$conf/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$conf/storage"
runroot = "$run/storage"
EOF
  # Short names (postgres:16) mean docker.io, as for Docker.
  cat >"$conf/registries.conf" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
  export CONTAINERS_CONF="$conf/containers.conf" CONTAINERS_STORAGE_CONF="$conf/storage.conf"
  export CONTAINERS_REGISTRIES_CONF="$conf/registries.conf"
  export BUILDAH_FORMAT=docker # keep the Dockerfile's HEALTHCHECK (OCI images drop it)

  local venv="$STATE/venv" lock="$ROOT/scripts/podman-compose.lock"
  local want
  want="$(sha256sum "$lock" | cut -c1-16)"
  if [ "$(cat "$venv/.lock" 2>/dev/null)" != "$want" ]; then
    log "installing podman-compose into $venv ($lock)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$lock" \
      >"$STATE/logs/pip.log" 2>&1 || { tail -20 "$STATE/logs/pip.log" >&2; fail "pip install"; }
    echo "$want" >"$venv/.lock"
  fi
  COMPOSE=("$venv/bin/podman-compose")
}

# Docker when its engine answers, else Podman; COMPOSE runs the project's compose file.
setup_engine() {
  mkdir -p "$STATE/logs"
  if command -v docker >/dev/null && docker info >/dev/null 2>&1 &&
    docker compose version >/dev/null 2>&1; then
    ENGINE=docker COMPOSE=(docker compose)
  else
    ENGINE=podman
    setup_podman
  fi
  log "engine: $ENGINE ($("$ENGINE" --version)); compose: $("${COMPOSE[@]}" version 2>/dev/null |
    grep -i compose | head -1)"
  COMPOSE+=(-p "$PROJECT" -f "$ROOT/docker-compose.yml")
  # The helpers below run in the project's venv (PyYAML), built as scripts/test builds it.
  PY="$ROOT/.venv/bin/python"
  "$ROOT/scripts/venv" >"$STATE/logs/venv.log" 2>&1 ||
    { tail -20 "$STATE/logs/venv.log" >&2; fail "building .venv"; }
}

# teardown [--volumes]: the project's containers and network (and its volumes: the data).
teardown() {
  local volumes="" ids label="label=com.docker.compose.project=$PROJECT"
  [ "${1:-}" = --volumes ] && volumes=-v
  # shellcheck disable=SC2086 # $volumes is empty or one flag
  timeout 180 "${COMPOSE[@]}" down $volumes >>"$STATE/logs/compose.log" 2>&1 ||
    log "compose down failed (see $STATE/logs/compose.log); removing what is left directly"
  # Whatever the tool left: containers, networks (and volumes) of this project.
  mapfile -t ids < <("$ENGINE" ps -aq --filter "$label" || true)
  [ ${#ids[@]} = 0 ] || "$ENGINE" rm -f "${ids[@]}" >/dev/null 2>&1 || true
  if [ -n "$volumes" ]; then
    mapfile -t ids < <("$ENGINE" volume ls -q | grep "^${PROJECT}_" || true)
    [ ${#ids[@]} = 0 ] || "$ENGINE" volume rm -f "${ids[@]}" >/dev/null 2>&1 || true
  fi
  mapfile -t ids < <("$ENGINE" network ls -q --filter "$label" || true)
  [ ${#ids[@]} = 0 ] || "$ENGINE" network rm "${ids[@]}" >/dev/null 2>&1 || true
  return 0
}

# -- images -------------------------------------------------------------------------------------
qualified() { # postgres:16 -> docker.io/library/postgres:16, as Docker reads a short name
  case "$1" in
    */*) case "${1%%/*}" in *.* | *:* | localhost) echo "$1" ;; *) echo "docker.io/$1" ;; esac ;;
    *) echo "docker.io/library/$1" ;;
  esac
}
image_of() { # the image: of a compose service
  "$PY" - "$1" <<'EOF'
import sys, yaml
print(yaml.safe_load(open("docker-compose.yml"))["services"][sys.argv[1]].get("image", ""))
EOF
}
have_image() { # present, or pulled now
  "$ENGINE" image inspect "$1" >/dev/null 2>&1 ||
    timeout 60 "$ENGINE" pull -q "$1" >"$STATE/logs/pull.log" 2>&1
}

# Optional services whose image cannot be had are dropped from SERVICES.
drop_unavailable() {
  local service image kept=()
  for service in "${SERVICES[@]}"; do
    if [[ " ${OPTIONAL_SERVICES[*]} " == *" $service "* ]]; then
      image="$(image_of "$service")"
      if ! have_image "$image"; then
        log "$service: image $image cannot be pulled here; the stack runs without it"
        continue
      fi
    fi
    kept+=("$service")
  done
  SERVICES=("${kept[@]}")
}

build_images() {
  stage "base images"
  drop_unavailable
  # Base images: FROM lines of the Dockerfile, image: of the services that run (but the one
  # the compose file builds itself).
  local image what bases missing=()
  mapfile -t bases < <("$PY" - "${SERVICES[@]}" <<'EOF'
import re, sys, yaml
services = yaml.safe_load(open("docker-compose.yml"))["services"]
run = [services[name] for name in sys.argv[1:]]
built = {s.get("image") for s in run if "build" in s}
images = {s["image"] for s in run if "image" in s} - built
images |= set(re.findall(r"^FROM\s+(\S+)", open("Dockerfile").read(), flags=re.M))
print("\n".join(sorted(images)))
EOF
  )
  for image in "${bases[@]}"; do
    have_image "$image" || missing+=("$image")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "cannot pull ${missing[*]}: building TEST-ONLY stand-ins (deploy/standin/build)"
    command -v debootstrap >/dev/null || apt_install debootstrap
    mapfile -t missing < <(for image in "${missing[@]}"; do qualified "$image"; done)
    "$ROOT/deploy/standin/build" "$ENGINE" "$STATE/standin" "${missing[@]}"
  fi
  for image in "${bases[@]}"; do
    what="$("$ENGINE" image inspect -f '{{index .Config.Labels "opticodds.standin"}}' "$image")"
    [ "$what" != "<no value>" ] || what=""
    log "  $image: ${what:-as pulled}"
  done

  stage "app image build"
  APP_IMAGE="$("$PY" -c 'import yaml
services = yaml.safe_load(open("docker-compose.yml"))["services"]
print(*{s["image"] for s in services.values() if "build" in s})')"
  timeout 900 "${COMPOSE[@]}" build >"$STATE/logs/build.log" 2>&1 || {
    tail -30 "$STATE/logs/build.log"
    fail "compose build"
  }
  # The image's own HEALTHCHECK (the daemon's /healthz), which migrate must not inherit.
  IMAGE_HEALTHCHECK="$("$ENGINE" image inspect "$APP_IMAGE" | "$PY" -c 'import json, sys
image = json.load(sys.stdin)[0]
check = (image.get("Config") or {}).get("Healthcheck") or image.get("Healthcheck") or {}
print(" ".join(check.get("Test", [])[:2]))')"
  log "built $APP_IMAGE (image healthcheck: ${IMAGE_HEALTHCHECK:-none})"
}

# -- the stack ----------------------------------------------------------------------------------
container() { # the container of a compose service (compose ps differs between the tools)
  "$ENGINE" ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" | head -1
}
state() { "$ENGINE" inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$(container "$1")"; }
has_healthcheck() {
  local test
  test="$("$ENGINE" inspect -f '{{if .Config.Healthcheck}}{{index .Config.Healthcheck.Test 0}}{{end}}' \
    "$(container "$1")")"
  [ -n "$test" ] && [ "$test" != NONE ]
}
healthy() {
  if [ "$ENGINE" = podman ]; then # no systemd: Podman runs a healthcheck only when asked
    podman healthcheck run "$(container "$1")" >/dev/null 2>&1
  else
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$(container "$1")")" = healthy ]
  fi
}
up() {
  log "compose up $*"
  timeout 300 "${COMPOSE[@]}" up -d --no-deps "$@" >>"$STATE/logs/compose.log" 2>&1 || {
    tail -20 "$STATE/logs/compose.log"
    fail "compose up $*"
  }
}
# wait_for SERVICE DESCRIPTION TIMEOUT COMMAND...: poll COMMAND; fail at once if SERVICE exits.
wait_for() {
  local service="$1" what="$2" timeout="$3" deadline=$((SECONDS + $3))
  shift 3
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      FAILED_SERVICE="$service"
      fail "$service: $what not within ${timeout}s"
    fi
    case "$(state "$service")" in exited* | dead*)
      # It may have ended well between the check above and this look at its state.
      "$@" && break
      FAILED_SERVICE="$service"
      fail "$service: exited ($(state "$service")) while waiting for $what"
      ;;
    esac
    sleep 1
  done
  log "$service: $what"
}
exited_ok() {
  local s
  s="$(state "$1")"
  case "$s" in
    "exited 0") return 0 ;;
    exited* | dead*) FAILED_SERVICE="$1" && fail "$1 ended with $s" ;;
    *) return 1 ;;
  esac
}
running() { [ "$(state "$1")" = "running 0" ]; }
wanted() { [[ " ${SERVICES[*]} " == *" $1 "* ]]; }

# podman-compose ignores condition: service_healthy below Podman 4.6 and Podman 4.3 cannot
# start a container whose dependencies have dependencies: the services come up in the order
# their depends_on conditions say, each once its dependencies met them.
stack_up() {
  build_images
  stage "stack up"
  STACK_UP=1
  timeout 180 "${COMPOSE[@]}" down >/dev/null 2>&1 || true # a killed run may have left it
  up postgres simulator prometheus
  wait_for postgres healthy 120 healthy postgres
  up migrate
  wait_for migrate "exited 0" 180 exited_ok migrate
  wait_for simulator healthy 120 healthy simulator
  up "$APP"
  wait_for "$APP" healthy 120 healthy "$APP"
  if wanted grafana; then
    up grafana
    wait_for grafana running 120 running grafana
  fi
}

# The last log lines of the failed service and the daemon (after a failure).
show_logs() {
  local service
  for service in $(printf '%s\n' "$FAILED_SERVICE" "$APP" | awk 'NF && !seen[$0]++'); do
    [ -n "$(container "$service")" ] || continue
    echo "---- last log lines of $service"
    "$ENGINE" logs --tail 40 "$(container "$service")" 2>&1
  done
  echo "---- (compose output: $STATE/logs/compose.log)"
}
