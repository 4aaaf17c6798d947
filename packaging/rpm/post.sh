# %post: $1 = 1 on first install, 2 on upgrade. Enable, never start: a fresh install has no source.
if [ -x /usr/bin/systemd-tmpfiles ]; then
    systemd-tmpfiles --create mispd.conf >/dev/null 2>&1 || :
fi
# As tmpfiles.d/mispd.conf says, enforced here too; key files inside are never touched.
mkdir -p /etc/mispd/credentials /var/lib/mispd
chown root:root /etc/mispd/credentials && chmod 0700 /etc/mispd/credentials
chown mispd:mispd /var/lib/mispd && chmod 0750 /var/lib/mispd
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # Works offline too (creates the [Install] symlinks), so images built without systemd running
    # get the same result.
    systemctl --no-reload enable mispd.service mispd.socket >/dev/null 2>&1 || :
    echo "mispd: installed and enabled but not started. Add a [[source]] to /etc/mispd/mispd.toml" \
         "and its API key to /etc/mispd/credentials/, then 'systemctl start mispd'."
fi
exit 0
