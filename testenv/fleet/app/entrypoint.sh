#!/bin/sh
# Start an app host: fresh host keys (lieutenant's known_hosts is written
# from them), hello-web installed through dnf from the fleet's repository at
# $HELLO_WEB_VERSION and started, then sshd in the foreground. With
# FLEET_ROLE=git: a bare repository at /srv/git/deploy.git instead.
set -eu
ssh-keygen -A >/dev/null
if [ "${FLEET_ROLE:-app}" = git ]; then
	# The Git server: the deploy repository, bare, reached over SSH as deploy.
	install -d -o deploy -g deploy /srv/git
	[ -d /srv/git/deploy.git ] || su deploy -c 'git init -q --bare -b main /srv/git/deploy.git'
	touch /run/fleet-ready
	exec /usr/sbin/sshd -D -e
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
dnf install -y -q "hello-web-$version.x86_64"
service hello-web start
touch /run/fleet-ready
exec /usr/sbin/sshd -D -e
