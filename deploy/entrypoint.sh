#!/usr/bin/env bash
# First start of a node container: make this node's keys (nothing secret is in the
# image), publish the public halves on the shared trust volume, build known_hosts and
# authorized_keys from every node's published keys (host keys stay verified), write the
# agent's config, start sshd, then run the agent as the unprivileged user.
#
#   entrypoint.sh          the container's start (root)
#   entrypoint.sh trust    keys and trust files only (what tests/test_compose.py runs)
#
# Environment: JUPITER_NODE (this node's name, also its host name on the compose network),
# JUPITER_PEERS (space-separated node names to wait for), JUPITER_BUS_URL (the broker, read
# by the agent itself), and for tests the folders STATE_DIR, TRUST_DIR, AGENT_HOME.
set -euo pipefail

node=${JUPITER_NODE:?set JUPITER_NODE to the node name}
peers=${JUPITER_PEERS:-}
state_dir=${STATE_DIR:-/var/lib/jupiter}  # per-node volume: keys survive restarts
trust_dir=${TRUST_DIR:-/trust}            # shared by every node: public keys only
agent_user=${AGENT_USER:-jupiter}
agent_home=${AGENT_HOME:-/home/$agent_user}
peer_wait=${PEER_WAIT_SECONDS:-60}

log() { echo "entrypoint[$node]: $*" >&2; }

make_keys() {
    mkdir -p "$state_dir/ssh" "$agent_home/.ssh"
    chmod 700 "$state_dir/ssh" "$agent_home/.ssh"
    if [ ! -f "$state_dir/ssh/ssh_host_ed25519_key" ]; then
        log "generating the host key"
        ssh-keygen -q -t ed25519 -N '' -C "$node host" -f "$state_dir/ssh/ssh_host_ed25519_key"
    fi
    if [ ! -f "$agent_home/.ssh/id_ed25519" ]; then
        log "generating the agent's client key"
        ssh-keygen -q -t ed25519 -N '' -C "$agent_user@$node" -f "$agent_home/.ssh/id_ed25519"
    fi
}

publish_keys() {
    mkdir -p "$trust_dir/hosts" "$trust_dir/clients"
    # Write then rename: a peer reading the folder never sees half a key.
    cp "$state_dir/ssh/ssh_host_ed25519_key.pub" "$trust_dir/hosts/.$node.tmp"
    mv -f "$trust_dir/hosts/.$node.tmp" "$trust_dir/hosts/$node.pub"
    cp "$agent_home/.ssh/id_ed25519.pub" "$trust_dir/clients/.$node.tmp"
    mv -f "$trust_dir/clients/.$node.tmp" "$trust_dir/clients/$node.pub"
}

wait_for_peers() {
    local deadline=$((SECONDS + peer_wait)) peer
    for peer in $peers; do
        until [ -s "$trust_dir/hosts/$peer.pub" ] && [ -s "$trust_dir/clients/$peer.pub" ]; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                log "no keys from $peer after ${peer_wait}s: it is not trusted until restart"
                break
            fi
            sleep 1
        done
    done
}

build_trust() {
    local known="$agent_home/.ssh/known_hosts" authorized="$agent_home/.ssh/authorized_keys"
    local pub name
    : >"$known.tmp"
    : >"$authorized.tmp"
    for pub in "$trust_dir"/hosts/*.pub; do
        [ -e "$pub" ] || continue
        name=$(basename "$pub" .pub)
        # known_hosts: "<host> <type> <key>"; the host is the compose service name.
        awk -v host="$name" 'NF >= 2 { print host, $1, $2 }' "$pub" >>"$known.tmp"
    done
    for pub in "$trust_dir"/clients/*.pub; do
        [ -e "$pub" ] || continue
        cat "$pub" >>"$authorized.tmp"
    done
    chmod 600 "$known.tmp" "$authorized.tmp"
    mv -f "$known.tmp" "$known"
    mv -f "$authorized.tmp" "$authorized"
}

write_config() {
    local config="$agent_home/agent.toml"
    [ -f "$config" ] && return 0   # a mounted or earlier config wins
    cat >"$config" <<TOML
node = "$node"
host = "$node"
ssh_port = 22

[providers.transfer]
allow_roots = ["$agent_home/data"]
known_hosts = "$agent_home/.ssh/known_hosts"
client_keys = ["$agent_home/.ssh/id_ed25519"]

[providers.network]
default_user = "$agent_user"
TOML
}

trust() {
    make_keys
    publish_keys
    wait_for_peers
    build_trust
    write_config
}

case "${1:-run}" in
trust)
    trust
    ;;
run)
    trust
    mkdir -p "$agent_home/data"
    chown -R "$agent_user:$agent_user" "$agent_home"
    mkdir -p /run/sshd
    log "starting sshd"
    /usr/sbin/sshd -h "$state_dir/ssh/ssh_host_ed25519_key" -o PasswordAuthentication=no
    log "starting the agent as $agent_user"
    exec setpriv --reuid="$agent_user" --regid="$agent_user" --init-groups \
        env HOME="$agent_home" jupiter-bus agent --node "$node" --config "$agent_home/agent.toml"
    ;;
*)
    echo "usage: entrypoint.sh [run|trust]" >&2
    exit 2
    ;;
esac
