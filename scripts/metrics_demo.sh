#!/usr/bin/env bash
# What /metrics shows after a demo: `mirage serve --metrics-port` (JSON logs), the Panda3D sample
# walking 300 frames against it, then one scrape of /metrics and `mirage sessions`.
#   bash scripts/metrics_demo.sh [OUT_DIR]     (writes metrics.txt, sessions.txt and server_log.jsonl)
set -euo pipefail
out="${1:-metrics_demo_out}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
token="$(python -c 'import secrets; print(secrets.token_urlsafe(24))')"
printf 'ops %s\n' "$token" > "$work/admin.tokens"; chmod 600 "$work/admin.tokens"
printf '%s\n' "$token" > "$work/admin.token"; chmod 600 "$work/admin.token"
metrics_port="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
python -m runtime serve --port 0 --metrics-port "$metrics_port" --admin-token-file "$work/admin.tokens" \
    --log-format json > "$work/serve.out" 2> "$out/server_log.jsonl" &
server=$!
for _ in $(seq 600); do
    target="$(grep -oE 'on 127\.0\.0\.1:[0-9]+' "$work/serve.out" | head -1 | cut -d' ' -f2 || true)"
    [ -n "$target" ] && break
    sleep 0.1
done
[ -n "$target" ] || { echo "mirage serve did not start" >&2; exit 1; }
python -m plugin_bridge.samples.walk --headless --frames 300 --size 128 --target "$target" > "$out/walk.json"
python -m runtime sessions --target "$target" --admin-token-file "$work/admin.token" > "$out/sessions.txt"
curl -s "http://127.0.0.1:$metrics_port/metrics" > "$out/metrics.txt"
kill -TERM "$server"; wait "$server" || true
echo "wrote $out/metrics.txt, $out/sessions.txt, $out/server_log.jsonl ($(wc -l < "$out/server_log.jsonl") lines)"
