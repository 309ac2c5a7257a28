#!/usr/bin/env bash
# Start PostgreSQL, Redis, NATS (JetStream) and Mosquitto (MQTT, fire alarm boxes) on 127.0.0.1 if they are not answering.
# Used by .ci/run; safe to run any time (each start is a no-op when the service is up).
set -u
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! up 5432; then
  echo "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
if ! up 6379; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
if ! up 4222; then
  echo "starting NATS"
  mkdir -p /var/lib/nats-server 2>/dev/null
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
fi
if ! up 1883; then
  echo "starting Mosquitto"
  if command -v mosquitto >/dev/null 2>&1; then
    mosquitto -d -c /etc/mosquitto/mosquitto.conf 2>/dev/null || mosquitto -d -p 1883 || true
  fi
fi
for i in $(seq 1 30); do
  up 5432 && up 6379 && up 4222 && up 1883 && exit 0
  sleep 1
done
echo "warning: not every service answered:" $(up 5432 || echo postgres) $(up 6379 || echo redis) $(up 4222 || echo nats) $(up 1883 || echo mosquitto)
exit 0
