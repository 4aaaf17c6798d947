# %pre: the mispd user must exist before rpm lays down files owned by it (/var/lib/mispd).
if ! getent passwd mispd >/dev/null 2>&1; then
    getent group mispd >/dev/null 2>&1 || groupadd --system mispd
    useradd --system --gid mispd --home-dir /var/lib/mispd --no-create-home \
        --shell /sbin/nologin --comment "mispd MISP intelligence daemon" mispd
fi
exit 0
