#!/bin/bash
# As the official rabbitmq image: started as root, own the data dir and drop to the rabbitmq user.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then
  chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$0" "$@"
fi
exec "$@"
