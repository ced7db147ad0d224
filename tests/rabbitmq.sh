#!/bin/sh
# A private RabbitMQ node on loopback for the tests.
#
#   tests/rabbitmq.sh start NAME PORT   start NAME@localhost on 127.0.0.1:PORT
#   tests/rabbitmq.sh stop NAME         stop it and remove its files
#   tests/rabbitmq.sh ctl NAME ARGS...  rabbitmqctl against it
#
# Node files live in /tmp/ur-rabbitmq-NAME (owned by the rabbitmq user when
# run as root, because the server drops to that user).  The Erlang
# distribution port is PORT+10000.
set -eu
cmd=$1; name=$2
base=/tmp/ur-rabbitmq-$name
node=$name@localhost

as_rabbit() {  # run a RabbitMQ script as the user it wants
    script=$1; shift
    if [ "$(id -u)" = 0 ]; then
        q=""; for a in "$@"; do q="$q '$(printf %s "$a" | sed "s/'/'\\\\''/g")'"; done
        su rabbitmq -s /bin/sh -c "cd /var/lib/rabbitmq && HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/$script $q"
    else
        /usr/lib/rabbitmq/bin/$script "$@"
    fi
}

case $cmd in
start)
    port=$3
    [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || {
        echo "rabbitmq.sh: rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2; exit 3; }
    rm -rf "$base"; mkdir -p "$base/mnesia" "$base/log"
    printf '[].\n' > "$base/enabled_plugins"
    cat > "$base/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$port
loopback_users = none
CONF
    [ "$(id -u)" = 0 ] && chown -R rabbitmq:rabbitmq "$base"
    export RABBITMQ_NODENAME=$node RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT=$port RABBITMQ_DIST_PORT=$((port + 10000)) \
        RABBITMQ_MNESIA_BASE=$base/mnesia RABBITMQ_LOG_BASE=$base/log \
        RABBITMQ_CONFIG_FILE=$base/rabbitmq \
        RABBITMQ_ENABLED_PLUGINS_FILE=$base/enabled_plugins \
        RABBITMQ_PID_FILE=$base/pid \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        ERL_EPMD_ADDRESS=127.0.0.1
    # Loopback only: AMQP (the listener above), Erlang distribution (the
    # interface above) and epmd, when this node is the one that starts it
    # (an epmd already running is shared, as it was started).
    if [ "$(id -u)" = 0 ]; then
        su rabbitmq -s /bin/sh -p -c "cd /var/lib/rabbitmq && HOME=/var/lib/rabbitmq exec /usr/lib/rabbitmq/bin/rabbitmq-server" \
            > "$base/server.out" 2>&1 &
    else
        /usr/lib/rabbitmq/bin/rabbitmq-server > "$base/server.out" 2>&1 &
    fi
    # await_startup fails at once while the node is not yet registered with
    # epmd, so retry it until the deadline.
    deadline=$(( $(date +%s) + 120 ))
    until "$0" ctl "$name" await_startup >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] && sleep 0.5 && continue
        echo "rabbitmq.sh: node $node did not start; see $base/server.out and $base/log" >&2
        tail -20 "$base/server.out" >&2 || true
        exit 1
    done
    ;;
stop)
    pid=$(cat "$base/pid" 2>/dev/null || true)
    as_rabbit rabbitmqctl -n "$node" stop >/dev/null 2>&1 || true
    # A node the CLI cannot reach (wedged, or its app stopped by a test that
    # was killed) gets SIGTERM, then SIGKILL 10 s later: no stray node may
    # outlive the run.
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$base"
    ;;
ctl)
    shift 2
    as_rabbit rabbitmqctl -n "$node" "$@"
    ;;
*)
    echo "usage: $0 start NAME PORT | stop NAME | ctl NAME ARGS..." >&2; exit 2 ;;
esac
