# shellcheck shell=sh
# aegisfs %post: aegisd's state directory (job runs, events, the audit log, I/O history), kept
# as it is when it exists; systemd rereads the unit. Nothing is started: the admin configures
# the pools, then enables aegisd; after an upgrade a running aegisd keeps serving until the
# admin restarts it (a restart unmounts and mounts the pools again).
if [ ! -d /var/lib/aegis ]; then
    install -d -m 0750 /var/lib/aegis
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
exit 0
