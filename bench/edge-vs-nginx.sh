#!/usr/bin/env bash
# Cache-hit throughput and latency of the Reviews edge vs NGINX proxy_cache configured as the
# original deployment (keys_zone, max_size=3g, worker_connections 2000, worker_rlimit_nofile),
# in one run, on this machine, in front of the same origin, over the same warmed keys.
# The proxy under test is pinned to one core, wrk to the other (taskset). 127.0.0.1 only.
# Besides rate and p99, each proxy's CPU time per request (user + system of its processes
# over the round): when the client is the bottleneck, rates come out equal and this still
# tells the proxies apart.
#
#   bench/edge-vs-nginx.sh              # hit benchmark (identity and gzip) + miss path
#   BODY=2400 bench/edge-vs-nginx.sh    # the same with a real five-review page (2.4 KB)
#   RSS=1 bench/edge-vs-nginx.sh        # also: fill a cache of RSS_MAX (512MiB) and report RSS
#   RSS=1 RSS_BODY=0 ...                # ... with small (~60 B) pages
#   TLS=1 bench/edge-vs-nginx.sh        # hits over HTTPS instead: HTTP/1.1 with connection
#                                       # reuse (wrk), a new connection and TLS handshake per
#                                       # request (wrk, Connection: close), h2 (h2load)
#
# Knobs: KEYS (10000) DURATION (10s) ROUNDS (3) CONNS (64) WRK_THREADS (2) PROXY_CPU (0)
# CLIENT_CPU (1) BIN (a folder with prebuilt `edge` and `bench_origin` examples, for
# side-by-side runs of two builds; default: build them here) BODY (1300: bytes of a list page) RSS_MAX (512MiB) RSS_BODY (BODY)
# RSS_DURATION (60s) ONLY (a regex: run the scenarios whose name matches) H2_STREAMS (10: concurrent streams per h2load connection)
# PROXY_QUOTA (unset; a percentage of one core, root only): each proxy gets that CPU time and
# no more (a CPU cgroup each, 5 ms periods), so the proxy and not the client is the bottleneck
# even where the client's own work per request is heavy (a TLS handshake per request).
# TLS: both proxies get the same ECDSA P-256 certificate (made here with the openssl command
# line tool), TLS 1.2 and 1.3; NGINX with ssl_session_cache shared:SSL:10m as an operator
# would set it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KEYS=${KEYS:-10000}
BODY=${BODY:-1300}
RSS_MAX=${RSS_MAX:-512MiB}
RSS_BODY=${RSS_BODY:-$BODY}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-2}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
ORIGIN_PORT=${ORIGIN_PORT:-28901}
EDGE_PORT=${EDGE_PORT:-28980}
EDGE_ADMIN=${EDGE_ADMIN:-28990}
NGINX_PORT=${NGINX_PORT:-28981}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-28982}
NGINX_TLS_PORT=${NGINX_TLS_PORT:-28983}
TLS=${TLS:-0}
H2_STREAMS=${H2_STREAMS:-10}
WORK=$(mktemp -d /tmp/edge-bench.XXXXXX)
PIDS=()

CGROUPS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for g in "${CGROUPS[@]}"; do rmdir "$g" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }

# PROXY_QUOTA: a CPU cgroup per proxy (v2, else v1's cpu controller), `$1` its name, the
# processes given after it moved in.
cap_cpu() {
    [ -n "${PROXY_QUOTA:-}" ] || return 0
    local name=$1 g quota=$(( PROXY_QUOTA * 50 ))
    shift
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        g=/sys/fs/cgroup/edge-bench-$$-$name
        grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control ||
            echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
        mkdir "$g" && echo "$quota 5000" >"$g/cpu.max"
    else
        g=/sys/fs/cgroup/cpu/edge-bench-$$-$name
        mkdir "$g" && echo 5000 >"$g/cpu.cfs_period_us" && echo "$quota" >"$g/cpu.cfs_quota_us"
    fi
    CGROUPS+=("$g")
    for p in "$@"; do echo "$p" >"$g/cgroup.procs"; done
}
if [ -n "${PROXY_QUOTA:-}" ] && { [ "$(id -u)" != 0 ] || ! [[ $PROXY_QUOTA =~ ^[0-9]+$ ]] ||
    [ "$PROXY_QUOTA" -lt 20 ] || [ "$PROXY_QUOTA" -gt 100 ]; }; then
    echo "PROXY_QUOTA needs root and a whole percentage from 20 to 100 (got '$PROXY_QUOTA')" >&2
    exit 1
fi
for port in $ORIGIN_PORT $EDGE_PORT $EDGE_ADMIN $NGINX_PORT $EDGE_TLS_PORT $NGINX_TLS_PORT; do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is already in use; set ORIGIN_PORT/EDGE_PORT/EDGE_ADMIN/NGINX_PORT" >&2
        exit 1
    fi
done
if ! need nginx || ! need wrk; then
    apt-get update -qq && apt-get install -y -qq nginx-light wrk >/dev/null
fi
if [ "$TLS" = 1 ] && { ! need h2load || ! need openssl; }; then
    apt-get update -qq && apt-get install -y -qq nghttp2-client openssl >/dev/null
fi
if [ "$TLS" = 1 ]; then
    mkdir -p "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
        -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null
    chmod 644 "$WORK/tls/key.pem"
fi

if [ -z "${BIN:-}" ]; then
    echo "building (release)…" >&2
    (cd "$ROOT" && CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release -q -p reviews-proxy --examples)
    BIN="$ROOT/target/release/examples"
fi

wait_port() {
    for _ in $(seq 1 100); do
        if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    exit 1
}

# --- origin (shares the client core; it only works during warm-up and the miss runs) ---
start_origin() { # $1 = body size
    taskset -c "$CLIENT_CPU" "$BIN/bench_origin" --listen "127.0.0.1:$ORIGIN_PORT" --max-age 3600 \
        --threads 1 --body-size "$1" >"$WORK/origin.log" 2>&1 &
    ORIGIN_PID=$!
    PIDS+=($ORIGIN_PID)
    wait_port $ORIGIN_PORT
}
start_origin "$BODY"

# --- the edge ---
edge_config() { # $1 = cache size
    cat <<TOML
threads = 1
max_connections = 8000
[listen]
address = "127.0.0.1:$EDGE_PORT"
[admin]
address = "127.0.0.1:$EDGE_ADMIN"
[upstream]
keepalive_pool = 128
[[upstream.servers]]
address = "127.0.0.1:$ORIGIN_PORT"
[upstream.health]
interval = "5s"
[cache]
max_size = "$1"
default_ttl = "1h"
[[cache.routes]]
path = "/reviews"
params = ["product_id", "page", "count", "sort"]
defaults = { page = "1", count = "5", sort = "relevant" }
[[cache.routes]]
path = "/reviews/meta"
params = ["product_id"]
[shutdown]
grace_period = "0s"
graceful_timeout = "1s"
upgrade_sock = "$WORK/edge-upgrade.sock"
pid_file = "$WORK/edge.pid"
[log]
level = "warn"
format = "compact"
TOML
}
edge_config 3GiB >"$WORK/edge.toml"
if [ "$TLS" = 1 ]; then
    cat >>"$WORK/edge.toml" <<TOML
[h2]
max_requests = 0
[[listen.tls]]
address = "127.0.0.1:$EDGE_TLS_PORT"
cert = "$WORK/tls/cert.pem"
key = "$WORK/tls/key.pem"
TOML
fi
start_edge() {
    taskset -c "$PROXY_CPU" "$BIN/edge" --config "$WORK/edge.toml" >"$WORK/edge.log" 2>&1 &
    EDGE_PID=$!
    PIDS+=($EDGE_PID)
    wait_port $EDGE_PORT
}
start_edge

# --- NGINX as the original ran it (one worker on the proxy core) ---
mkdir -p "$WORK/nginx/cache" "$WORK/nginx/logs"
# NGINX workers run unprivileged: let them reach the cache directory.
chmod 755 "$WORK"
chmod -R 777 "$WORK/nginx"
nginx_location() {
    cat <<'LOC'
location / {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache reviews;
            proxy_cache_lock on;
            proxy_cache_valid 200 1h;
            add_header X-Cache-Status $upstream_cache_status;
        }
LOC
}
nginx_tls_server() {
    [ "$TLS" = 1 ] || return 0
    cat <<LOC
server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2 reuseport backlog=4096;
        ssl_certificate $WORK/tls/cert.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1h;
        $(nginx_location)
    }
LOC
}
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
# The original asked for 40000; the hard limit here is 20000, so NGINX gets what it can.
worker_rlimit_nofile 20000;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 2000; }
http {
    access_log off;
    # Connections are reused for the whole run by both proxies (NGINX's default of 1000
    # requests per connection would make wrk reconnect, and h2load, which does not, stop).
    keepalive_requests 1000000;
    proxy_cache_path $WORK/nginx/cache levels=1:2 keys_zone=reviews:100m max_size=3g inactive=60m use_temp_path=off;
    upstream api { server 127.0.0.1:$ORIGIN_PORT; keepalive 128; }
    gzip on;
    gzip_types application/json;
    gzip_min_length 1024;
    gzip_vary on;
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096;
        $(nginx_location)
    }
    $(nginx_tls_server)
}
CONF
taskset -c "$PROXY_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
PIDS+=($NGINX_PID)
wait_port $NGINX_PORT
cap_cpu edge "$EDGE_PID"
cap_cpu nginx "$NGINX_PID" $(pgrep -P "$NGINX_PID")

# --- warm both caches with the same keys ---
warm() { # $1 = port
    python3 - "$1" "$KEYS" <<'PY'
import http.client, sys
port, keys = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
statuses = {}
for rnd in range(2):
    for i in range(1, keys + 1):
        c.request("GET", f"/reviews?product_id={i}")
        r = c.getresponse(); r.read()
        s = r.getheader("X-Cache-Status", "?")
        if rnd == 1: statuses[s] = statuses.get(s, 0) + 1
print(f"  second pass over {keys} keys on :{port}: {statuses}", file=sys.stderr)
PY
}
echo "warming $KEYS keys…" >&2
warm $EDGE_PORT
warm $NGINX_PORT

cat >"$WORK/hits.lua" <<LUA
-- Random product ids over the warmed keys.
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/reviews?product_id=" .. math.random(1, $KEYS))
end
LUA
cat >"$WORK/misses.lua" <<'LUA'
-- Never-seen product ids: every request misses and fills (ids far above the warmed ones,
-- distinct per thread and per run).
local n = 0
local id = 0
local run = os.time() % 1000000
setup = function(thread) id = id + 1; thread:set("tid", id) end
request = function()
  n = n + 1
  return wrk.format("GET", "/reviews?product_id=" .. (tid * 1000000000000 + run * 100000 + n))
end
LUA

run_wrk() { # $1 port, $2 script, $3 extra header ("" for none), $4 scheme (http)
    local args=(-t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$2")
    [ -n "$3" ] && args+=(-H "$3")
    taskset -c "$CLIENT_CPU" wrk "${args[@]}" "${4:-http}://127.0.0.1:$1/" >"$WORK/wrk.out" 2>&1
    python3 - "$WORK/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
def ms(label):
    m = re.search(label + r"\s+([\d.]+)(us|ms|s)\b", t)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
avg = ms(r"Latency")
p50, p99 = ms(r"50%"), ms(r"99%")
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
sock = re.search(r"Socket errors: (.*)", t)
print(f"{rps:.0f} {avg:.3f} {p50:.3f} {p99:.3f} {errs.group(1) if errs else 0} {'yes' if sock else 'no'}")
PY
}

# h2: h2load over the warmed keys in a random order, CONNS connections of H2_STREAMS streams;
# the percentiles come from its per-request log.
run_h2load() { # $1 port
    python3 - "$1" "$KEYS" >"$WORK/uris-$1.txt" <<'PY'
import random, sys
port, keys = sys.argv[1], int(sys.argv[2])
ids = list(range(1, keys + 1)); random.shuffle(ids)
print("\n".join(f"https://127.0.0.1:{port}/reviews?product_id={i}" for i in ids))
PY
    taskset -c "$CLIENT_CPU" h2load -t1 -c"$CONNS" -m"$H2_STREAMS" -D "${DURATION%s}" --warm-up-time=1 \
        -i "$WORK/uris-$1.txt" --log-file "$WORK/h2.log" >"$WORK/h2.out" 2>&1
    python3 - "$WORK/h2.out" "$WORK/h2.log" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", t).group(1))
m = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored", t)
codes = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", t)
bad = int(m.group(1)) + int(m.group(2)) + sum(int(c) for c in codes.groups())
lat = sorted(int(l.split()[2]) / 1000 for l in open(sys.argv[2]) if l.strip())
pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))]
print(f"{rps:.0f} {sum(lat) / len(lat):.3f} {pct(0.5):.3f} {pct(0.99):.3f} {bad} no")
PY
}

# CPU time (clock ticks) a proxy has used so far: the edge process, or NGINX's master and
# workers. Per request it tells what each proxy spends even when the client, which shares
# the machine, is the bottleneck.
ticks() { # $1 = edge|nginx
    local pids=$EDGE_PID
    [ "$1" = nginx ] && pids="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
    for p in $pids; do awk '{ print $14 + $15 }' "/proc/$p/stat"; done | awk '{ s += $1 } END { print s }'
}
HZ=$(getconf CLK_TCK)
cpu_per_request() { # $1 ticks, $2 r/s: microseconds of proxy CPU per request
    awk -v t="$1" -v r="$2" -v d="${DURATION%s}" -v hz="$HZ" 'BEGIN { printf "%.0f", t / hz * 1e6 / (r * d) }'
}

# The machine is shared: runs alternate edge/nginx ROUNDS times and the medians are compared.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
printf '\n%-22s %-6s %-28s %-28s %s\n' scenario proxy 'req/s (each round)' 'p99 ms (each round)' 'CPU µs/req (each round)'
SUMMARY=""
SCENARIOS=("hit identity|wrk|" "hit gzip|wrk|Accept-Encoding: gzip" "miss (fill) identity|wrk|")
[ "$TLS" = 1 ] && SCENARIOS=("https/1.1 hit, reuse|wrk|" "https/1.1 hit, new conn|wrk|Connection: close" "h2 hit|h2load|")
for scenario in "${SCENARIOS[@]}"; do
    IFS='|' read -r name tool header <<<"$scenario"
    [[ $name =~ ${ONLY:-.} ]] || continue
    script="$WORK/hits.lua"; [[ $name == miss* ]] && script="$WORK/misses.lua"
    declare -A RPS=() P99=() CPU=()
    for _ in $(seq 1 "$ROUNDS"); do
        for proxy in edge nginx; do
            port=$EDGE_PORT; [ $proxy = nginx ] && port=$NGINX_PORT
            if [ "$TLS" = 1 ]; then
                port=$EDGE_TLS_PORT; [ $proxy = nginx ] && port=$NGINX_TLS_PORT
            fi
            before=$(ticks $proxy)
            if [ "$tool" = h2load ]; then
                read -r rps _ _ p99 errs _ <<<"$(run_h2load "$port")"
            else
                scheme=http; [ "$TLS" = 1 ] && scheme=https
                read -r rps _ _ p99 errs _ <<<"$(run_wrk "$port" "$script" "$header" "$scheme")"
            fi
            used=$(( $(ticks $proxy) - before ))
            [ "$errs" != 0 ] && echo "  $proxy: $errs non-2xx responses!" >&2
            RPS[$proxy]+="$rps "; P99[$proxy]+="$p99 "; CPU[$proxy]+="$(cpu_per_request "$used" "$rps") "
        done
    done
    for proxy in edge nginx; do
        printf '%-22s %-6s %-28s %-28s %s\n' "$name" "$proxy" "${RPS[$proxy]}" "${P99[$proxy]}" "${CPU[$proxy]}"
    done
    er=$(median <<<"${RPS[edge]}"); nr=$(median <<<"${RPS[nginx]}")
    ep=$(median <<<"${P99[edge]}"); np=$(median <<<"${P99[nginx]}")
    ec=$(median <<<"${CPU[edge]}"); nc=$(median <<<"${CPU[nginx]}")
    SUMMARY+=$(printf '| %-20s | %8s | %8s | %5.2fx | %7s | %7s | %6s | %6s |' "$name" "$er" "$nr" \
        "$(awk -v a="$er" -v b="$nr" 'BEGIN { print a / b }')" "$ep" "$np" "$ec" "$nc")$'\n'
done
echo
echo "load average before the table: $(cut -d' ' -f1-3 /proc/loadavg) (proxy and client share this 2-core machine)"
[ -n "${PROXY_QUOTA:-}" ] && echo "each proxy limited to ${PROXY_QUOTA}% of one core (PROXY_QUOTA)"
echo "Medians of $ROUNDS rounds of $DURATION, $CONNS connections, $KEYS keys, list pages of $(curl -s "http://127.0.0.1:$ORIGIN_PORT/reviews?product_id=1" | wc -c) bytes:"
echo "(µs/req: the proxy's CPU time per request, its process's user + system time over the round)"
echo "| scenario             | edge r/s | nginx r/s | ratio | edge p99 ms | nginx p99 ms | edge µs/req | nginx µs/req |"
echo "|----------------------|----------|-----------|-------|-------------|--------------|-------------|--------------|"
printf '%s' "$SUMMARY"
if [ -s "$WORK/nginx/logs/error.log" ]; then
    echo "NGINX error log (last lines):"
    tail -n 3 "$WORK/nginx/logs/error.log" | sed 's/^/  /'
fi
echo
echo "Edge metrics after the run:"
curl -s "http://127.0.0.1:$EDGE_ADMIN/metrics" | grep -E '^edge_cache_(requests_total|bytes|entries|coalesced_total)' | sed 's/^/  /'
echo "  edge RSS: $(( $(awk '/VmRSS/ {print $2}' /proc/$EDGE_PID/status) / 1024 )) MiB"

if [ "${RSS:-0}" = 1 ]; then
    echo
    kill "$EDGE_PID"; wait "$EDGE_PID" 2>/dev/null || true
    if [ "$RSS_BODY" != "$BODY" ]; then
        kill "$ORIGIN_PID"; wait "$ORIGIN_PID" 2>/dev/null || true
        start_origin "$RSS_BODY"
    fi
    page=$(curl -s "http://127.0.0.1:$ORIGIN_PORT/reviews?product_id=1" | wc -c)
    echo "RSS vs cache.max_size: filling a $RSS_MAX cache with distinct keys, pages of $page bytes…"
    edge_config "$RSS_MAX" >"$WORK/edge.toml"
    start_edge
    base=$(awk '/VmRSS/ {print $2}' /proc/$EDGE_PID/status)
    DURATION=${RSS_DURATION:-60s} run_wrk $EDGE_PORT "$WORK/misses.lua" "" >/dev/null
    curl -s "http://127.0.0.1:$EDGE_ADMIN/metrics" >"$WORK/m.txt"
    bytes=$(awk '/^edge_cache_bytes / {print $2}' "$WORK/m.txt")
    entries=$(awk '/^edge_cache_entries / {print $2}' "$WORK/m.txt")
    evictions=$(awk '/^edge_cache_evictions_total / {print $2}' "$WORK/m.txt")
    rss=$(awk '/VmRSS/ {print $2}' /proc/$EDGE_PID/status)
    echo "  max_size $RSS_MAX; counted $((${bytes%.*} / 1048576)) MiB in $entries entries; evictions $evictions"
    echo "  RSS $((base / 1024)) MiB empty → $((rss / 1024)) MiB full: the cache costs $(((rss - base) / 1024)) MiB for $RSS_MAX configured"
fi
