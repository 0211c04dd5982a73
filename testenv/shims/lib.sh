# Shared by the shims: find this host's state directory.
set -eu
server_ip=$(echo "${SSH_CONNECTION:?not run over ssh}" | cut -d' ' -f3)
host_dir="${LIEUTENANT_FLEET_ROOT:?}/$server_ip"
mkdir -p "$host_dir/rpmdb" "$host_dir/services"
