# shellcheck shell=sh
# aegisfs %pre: the `aegis` group (members may use aegisd's control socket, see socket_group
# in /etc/aegis/aegis.toml).
getent group aegis >/dev/null || groupadd --system aegis
exit 0
