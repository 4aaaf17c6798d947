# %postun: $1 = 0 after erase, 1 after upgrade. Configuration (%config(noreplace)), API keys and
# the state in /var/lib/mispd are kept; rpm has no purge, see docs/operations.md to remove them.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        # Upgrade: restart only if it was running, so the new binary is used.
        systemctl try-restart mispd.service >/dev/null 2>&1 || :
    fi
fi
exit 0
