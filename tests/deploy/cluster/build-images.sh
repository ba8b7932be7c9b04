#!/usr/bin/env bash
# The images the cluster test runs, built here with podman (RECIPES.md, "Container image"):
# - stand-ins for the official images Docker Hub would give (not reachable from these machines),
#   built from Debian bookworm's packages under the official names, so the Dockerfile and the
#   chart's values stay unchanged: debian:bookworm-slim (mmdebstrap), python:3.11-slim,
#   postgres:15, rabbitmq:3.10-management, and the test's nginx ingress controller. Each is built
#   only when `podman image exists` says it is missing (a cached image is reused).
# - the platform's image from the checkout, `roomee:<chart appVersion>`, always rebuilt (its layers
#   are cached by podman); its build time and size are printed.
# Images the rendered chart names for the bundled PostgreSQL or RabbitMQ under another tag are
# tagged from the stand-ins when the chart renders (helm in the virtualenv).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}
VENV=${VENV:-$ROOT/.venv}
BUILD=(podman build --pull=never --network=host --runtime runc -q)

if ! podman image exists docker.io/library/debian:bookworm-slim; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  # The host's extra certificate authorities (for pip and apt through this network's proxy), and no
  # service starts from package scripts inside a build.
  mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true' \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
    --customize-hook='printf "#!/bin/sh\nexit 101\n" > "$1/usr/sbin/policy-rc.d" && chmod +x "$1/usr/sbin/policy-rc.d"' \
    bookworm "$rootfs/rootfs.tar"
  podman import -q --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
    "$rootfs/rootfs.tar" docker.io/library/debian:bookworm-slim >/dev/null
fi

stand_in() {  # stand_in NAME DIR
  if ! podman image exists "$1"; then
    "${BUILD[@]}" -t "$1" "$HERE/images/$2" >/dev/null
  fi
}
stand_in docker.io/library/python:3.11-slim python
stand_in docker.io/library/postgres:15 postgres
stand_in docker.io/library/rabbitmq:3.10-management rabbitmq
stand_in localhost/roomee-test-ingress:nginx proxy

# Other tags the chart may name for its bundled PostgreSQL / RabbitMQ point to the same stand-ins.
if [ -x "$VENV/bin/helm" ]; then
  "$VENV/bin/helm" template roomee "$ROOT/charts/roomee" 2>/dev/null \
    | sed -n 's/^ *image: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' | sort -u | while read -r image; do
      case "$image" in
        *postgres*:15*) source=docker.io/library/postgres:15 ;;
        *rabbitmq*:3*) source=docker.io/library/rabbitmq:3.10-management ;;
        *) continue ;;
      esac
      full=$image; [[ "$image" == */* ]] || full=docker.io/library/$image
      podman image exists "$full" || podman tag "$source" "$full"
    done
fi

version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/roomee/Chart.yaml")
start=$(date +%s.%N)
"${BUILD[@]}" -t "localhost/roomee:$version" "$ROOT" >/dev/null
end=$(date +%s.%N)
size=$(podman image inspect --format '{{.Size}}' "localhost/roomee:$version")
printf 'roomee:%s built in %.1f s, %d MB\n' "$version" "$(awk "BEGIN{print $end - $start}")" "$((size / 1000000))"
