#!/usr/bin/env bash
# Set up a host from scratch for shrike, the original oam-docker-ipam's way: declare the
# LAN and the container addresses, run the IPAM plugin, put the host on a bridge with
# the Docker network, and show the leases. Run it as root on a host with Docker.
# Running it again is fine: every step sees what is done already and leaves it.
#
#   HOST_IP=198.51.100.39 \
#   HOST_RANGE_START=198.51.100.1/24 HOST_RANGE_END=198.51.100.99/24 GATEWAY=198.51.100.254 \
#   IP_RANGE_START=198.51.100.100/24 IP_RANGE_END=198.51.100.199/24 \
#   examples/provision-host.sh
#
# Required:
#   HOST_IP             this host's own address on the LAN (it moves onto the bridge)
#   HOST_RANGE_START, HOST_RANGE_END, GATEWAY
#                       the addresses kept for hosts, with the LAN's prefix length, and
#                       the LAN's router (shrike host-range)
#   IP_RANGE_START, IP_RANGE_END
#                       the addresses handed to containers (shrike ip-range)
# Optional:
#   CLUSTER_STORE       etcd endpoints shared by the LAN's hosts (else an embedded store);
#                       SHRIKE_ETCD_* and the other variables shrike reads pass through
#   STATE_DIR           the embedded store's folder (shrike --state-dir)
#   NETWORK=mynet, BRIDGE=br0
#                       the Docker network and the bridge create-network makes
#   NETWORK_OPTIONS     more create-network options, e.g. "--persist" or "--mode macvlan"
#   PLUGIN_NAME=shrike, PLUGIN_DIR=/run/docker/plugins
#                       the plugin's name (--ipam-driver) and where dockerd finds it
#   SERVER=auto         how the plugin runs when it does not answer yet:
#                         systemd: start shrike.service (install examples/shrike.service
#                           first; its settings come from /etc/shrike/shrike.conf, which
#                           must name the same store, plugin name and folder as here);
#                         background: this script starts `shrike server` in a session of
#                           its own, its pid in PID_FILE, its output in LOG_FILE; it does
#                           not come back after a reboot;
#                         auto: systemd when systemd runs the host and knows
#                           shrike.service, else background
#   PID_FILE=/run/shrike/PLUGIN_NAME.pid, LOG_FILE=/var/log/shrike/PLUGIN_NAME.log
#   SOCKET_TIMEOUT=15   seconds to wait for the plugin to answer
#   SHRIKE=shrike       the command to run, e.g. "python3 -m shrike_cli"
set -euo pipefail

say() { printf 'provision-host: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

missing=()
for name in HOST_IP HOST_RANGE_START HOST_RANGE_END GATEWAY IP_RANGE_START IP_RANGE_END; do
    [[ -n ${!name:-} ]] || missing+=("$name")
done
((${#missing[@]} == 0)) || die "set ${missing[*]} (see the top of $0)"

NETWORK=${NETWORK:-mynet}
BRIDGE=${BRIDGE:-br0}
PLUGIN_NAME=${PLUGIN_NAME:-shrike}
PLUGIN_DIR=${PLUGIN_DIR:-/run/docker/plugins}
SERVER=${SERVER:-auto}
case $SERVER in
auto | systemd | background) ;;
*) die "SERVER=$SERVER: use auto, systemd or background" ;;
esac
PID_FILE=${PID_FILE:-/run/shrike/$PLUGIN_NAME.pid}
LOG_FILE=${LOG_FILE:-/var/log/shrike/$PLUGIN_NAME.log}
SOCKET_TIMEOUT=${SOCKET_TIMEOUT:-15}
SOCKET=$PLUGIN_DIR/$PLUGIN_NAME.sock
server_mode=$SERVER
read -ra shrike_cmd <<<"${SHRIKE:-shrike}"
read -ra network_options <<<"${NETWORK_OPTIONS:-}"
# shrike reads its store settings from the environment: every command below, and a
# server started here, use the same store.
if [[ -n ${STATE_DIR:-} ]]; then
    export SHRIKE_STATE_DIR=$STATE_DIR
fi

run_shrike() {
    say "shrike $*"
    command "${shrike_cmd[@]}" "$@"
}

# Whether something accepts connections on the plugin's socket (a socket file alone
# may be left over from a server that died).
plugin_answers() {
    [[ -S $SOCKET ]] || return 1
    python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$SOCKET" 2>/dev/null
}

systemd_knows_shrike() {
    [[ -d /run/systemd/system ]] && systemctl cat shrike.service >/dev/null 2>&1
}

start_in_background() {
    if [[ -s $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        say "shrike server $(cat "$PID_FILE") (from $PID_FILE) runs but does not answer on $SOCKET yet"
        return
    fi
    mkdir -p "$(dirname "$PID_FILE")" "$(dirname "$LOG_FILE")"
    # setsid: no terminal, so closing the session that ran this script does not stop it.
    setsid "${shrike_cmd[@]}" server --plugin-name "$PLUGIN_NAME" --plugin-dir "$PLUGIN_DIR" \
        </dev/null >>"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    say "started shrike server in the background: pid $!, log $LOG_FILE"
    if [[ -d /run/systemd/system ]]; then
        say "note: it will not start again after a reboot; install examples/shrike.service for that"
    fi
}

start_server() {
    if [[ $server_mode == auto ]]; then
        server_mode=background
        if systemd_knows_shrike; then server_mode=systemd; fi
    fi
    if [[ $server_mode == systemd ]]; then
        say "systemctl enable --now shrike.service"
        systemctl enable --now shrike.service
    else
        start_in_background
    fi
}

wait_for_plugin() {
    local deadline=$((SECONDS + SOCKET_TIMEOUT))
    until plugin_answers; do
        local logs="journalctl -u shrike.service"
        if [[ $server_mode == background ]]; then
            logs=$LOG_FILE
            if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
                tail -n 20 "$LOG_FILE" >&2 || true
                die "shrike server exited; its log: $logs"
            fi
        fi
        if ((SECONDS >= deadline)); then
            die "the plugin does not answer on $SOCKET after ${SOCKET_TIMEOUT}s; see $logs"
        fi
        sleep 0.2
    done
}

say "1/5 the LAN and the addresses kept for hosts"
run_shrike host-range --ip-start "$HOST_RANGE_START" --ip-end "$HOST_RANGE_END" --gateway "$GATEWAY"

say "2/5 the container addresses"
run_shrike ip-range --ip-start "$IP_RANGE_START" --ip-end "$IP_RANGE_END"

say "3/5 the IPAM plugin $PLUGIN_NAME"
if plugin_answers; then
    say "it already answers on $SOCKET"
else
    start_server
    wait_for_plugin
    say "it answers on $SOCKET"
fi

say "4/5 this host onto $BRIDGE, and the Docker network $NETWORK"
run_shrike create-network --ip "$HOST_IP" --name "$NETWORK" --bridge "$BRIDGE" --plugin-name "$PLUGIN_NAME" \
    ${network_options[@]+"${network_options[@]}"}

say "5/5 the leases"
run_shrike leases
say "done: containers started with --net $NETWORK get addresses from $IP_RANGE_START-$IP_RANGE_END"
