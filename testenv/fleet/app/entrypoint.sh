#!/bin/sh
# Start an app host: fresh host keys (lieutenant's known_hosts is written
# from them), hello-web installed through dnf from the fleet's repository at
# $HELLO_WEB_VERSION and started, then sshd. With FLEET_ROLE=git: a bare
# repository at /srv/git/deploy.git instead.
#
# The same script starts a host again after `docker kill` + `docker start`
# (the fault tests): it keeps the host keys and the packages it has, as a
# rebooted host does. sshd is not the container's main process, so that a
# test can stop it (a host whose sshd died) without stopping the host.
set -eu
rm -f /run/fleet-ready
ssh-keygen -A >/dev/null
start_sshd() {
	# Detached (its parent, a subshell, exits), so the init reaps it; -e
	# keeps its log in `docker logs`.
	(/usr/sbin/sshd -D -e &)
}
if [ "${FLEET_ROLE:-app}" = git ]; then
	# The Git server: the deploy repository, bare, reached over SSH as deploy.
	install -d -o deploy -g deploy /srv/git
	[ -d /srv/git/deploy.git ] || su deploy -c 'git init -q --bare -b main /srv/git/deploy.git'
	start_sshd
	touch /run/fleet-ready
	exec sleep infinity
fi
version="${HELLO_WEB_VERSION:-1.0.0-1}"
i=0
until dnf -q makecache >/dev/null 2>&1; do
	i=$((i + 1))
	if [ "$i" -ge 120 ]; then
		echo "fleet-entrypoint: the repository at http://repo/ did not answer" >&2
		exit 1
	fi
	sleep 0.5
done
rpm -q hello-web >/dev/null 2>&1 || dnf install -y -q "hello-web-$version.x86_64"
service hello-web start
start_sshd
touch /run/fleet-ready
exec sleep infinity
