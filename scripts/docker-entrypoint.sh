#!/bin/sh
# The image's entrypoint (docs/DEPLOY.md): runs its arguments (`anykv
# node ...`, `anykv sidecar ...`) as the image's unprivileged user.
#
# Fly mounts a machine's volume at /data owned by root, hiding the image's
# own /data (which belongs to the user). Started as root, this makes the
# data directory the user's (only what is not yet: a full volume is not
# walked again at every start), then drops to the user with setpriv
# (util-linux, in every Debian) and runs the command. Started as any other
# user, it runs the command as it is.
#
# ANYKV_DATA_DIR (default /data) and ANYKV_UID / ANYKV_GID (default 10001,
# the image's `anykv` user) change where and who.
set -eu
data="${ANYKV_DATA_DIR:-/data}"
uid="${ANYKV_UID:-10001}"
gid="${ANYKV_GID:-$uid}"
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$data"
    find "$data" \( \! -user "$uid" -o \! -group "$gid" \) -exec chown "$uid:$gid" '{}' +
    exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
fi
exec "$@"
