# %preun: $1 = 0 on erase, 1 on upgrade. On erase stop and disable; on upgrade leave it running.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable mispd.service mispd.socket >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop mispd.service mispd.socket >/dev/null 2>&1 || :
    fi
fi
exit 0
