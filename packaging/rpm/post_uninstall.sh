# shellcheck shell=sh
# aegisfs %postun: systemd forgets the removed unit. /var/lib/aegis and files in /etc/aegis
# that rpm did not install (keyfiles, API tokens) stay; an edited aegis.toml is saved as
# aegis.toml.rpmsave. The pools' devices are never touched.
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
exit 0
