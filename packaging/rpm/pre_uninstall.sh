# shellcheck shell=sh
# aegisfs %preun: on erase ($1 = 0, not an upgrade) stop and disable aegisd, which unmounts
# and commits its pools. The pools' devices are never touched.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now aegisd.service >/dev/null 2>&1 || :
fi
exit 0
