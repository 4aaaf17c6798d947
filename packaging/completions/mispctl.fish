# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mispctl_global_optspecs
    string join \n socket= json h/help V/version
end

function __fish_mispctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mispctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mispctl_using_subcommand
    set -l cmd (__fish_mispctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mispctl -n "__fish_mispctl_needs_command" -l socket -d 'The daemon\'s query socket' -r -F
complete -c mispctl -n "__fish_mispctl_needs_command" -l json -d 'Print the daemon\'s JSON instead of human-readable text'
complete -c mispctl -n "__fish_mispctl_needs_command" -s h -l help -d 'Print help'
complete -c mispctl -n "__fish_mispctl_needs_command" -s V -l version -d 'Print version'
complete -c mispctl -n "__fish_mispctl_needs_command" -f -a "check-config" -d 'Check a configuration file: prints "ok" or names the file, the key and what is wrong'
complete -c mispctl -n "__fish_mispctl_needs_command" -f -a "pin" -d 'Print the public-key pin (sha256//BASE64) of an https server, to paste into `pins`'
complete -c mispctl -n "__fish_mispctl_needs_command" -f -a "lookup" -d 'Look values up (IPs, domains, URLs, hashes, emails...). With no value, or `-`, reads one value per line from standard input. Exits 0 if any value is listed, 1 if none is'
complete -c mispctl -n "__fish_mispctl_needs_command" -f -a "status" -d 'Show the daemon\'s status: generation, indicator counts, each source\'s state'
complete -c mispctl -n "__fish_mispctl_needs_command" -f -a "quarantine" -d 'List quarantined values with their source and reason'
complete -c mispctl -n "__fish_mispctl_needs_command" -f -a "release" -d 'Apply a change a mass-change breaker is holding for SOURCE (root or the daemon\'s user)'
complete -c mispctl -n "__fish_mispctl_needs_command" -f -a "export" -d 'Write the current set to standard output in a consumer\'s format (streamed). Errors go to standard error only; a reader that stops early (`| head`) ends it quietly, exit 0'
complete -c mispctl -n "__fish_mispctl_needs_command" -f -a "changes" -d 'Print what was added and removed since CURSOR (`+ value` / `- value` lines, then the new cursor on standard error). Without a cursor, or with one the daemon no longer knows, the whole set comes as additions (a reset)'
complete -c mispctl -n "__fish_mispctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mispctl -n "__fish_mispctl_using_subcommand check-config" -l socket -d 'The daemon\'s query socket' -r -F
complete -c mispctl -n "__fish_mispctl_using_subcommand check-config" -l json -d 'Print the daemon\'s JSON instead of human-readable text'
complete -c mispctl -n "__fish_mispctl_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c mispctl -n "__fish_mispctl_using_subcommand pin" -l ca-file -d 'Also check the chain against this CA file (PEM) besides the system roots' -r -F
complete -c mispctl -n "__fish_mispctl_using_subcommand pin" -l timeout -d 'Connection timeout in seconds' -r
complete -c mispctl -n "__fish_mispctl_using_subcommand pin" -l socket -d 'The daemon\'s query socket' -r -F
complete -c mispctl -n "__fish_mispctl_using_subcommand pin" -l json -d 'Print the daemon\'s JSON instead of human-readable text'
complete -c mispctl -n "__fish_mispctl_using_subcommand pin" -s h -l help -d 'Print help'
complete -c mispctl -n "__fish_mispctl_using_subcommand lookup" -l socket -d 'The daemon\'s query socket' -r -F
complete -c mispctl -n "__fish_mispctl_using_subcommand lookup" -l json -d 'Print the daemon\'s JSON instead of human-readable text'
complete -c mispctl -n "__fish_mispctl_using_subcommand lookup" -s h -l help -d 'Print help'
complete -c mispctl -n "__fish_mispctl_using_subcommand status" -l socket -d 'The daemon\'s query socket' -r -F
complete -c mispctl -n "__fish_mispctl_using_subcommand status" -l json -d 'Print the daemon\'s JSON instead of human-readable text'
complete -c mispctl -n "__fish_mispctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c mispctl -n "__fish_mispctl_using_subcommand quarantine" -l source -r
complete -c mispctl -n "__fish_mispctl_using_subcommand quarantine" -l limit -r
complete -c mispctl -n "__fish_mispctl_using_subcommand quarantine" -l socket -d 'The daemon\'s query socket' -r -F
complete -c mispctl -n "__fish_mispctl_using_subcommand quarantine" -l json -d 'Print the daemon\'s JSON instead of human-readable text'
complete -c mispctl -n "__fish_mispctl_using_subcommand quarantine" -s h -l help -d 'Print help'
complete -c mispctl -n "__fish_mispctl_using_subcommand release" -l socket -d 'The daemon\'s query socket' -r -F
complete -c mispctl -n "__fish_mispctl_using_subcommand release" -l json -d 'Print the daemon\'s JSON instead of human-readable text'
complete -c mispctl -n "__fish_mispctl_using_subcommand release" -s h -l help -d 'Print help'
complete -c mispctl -n "__fish_mispctl_using_subcommand export" -l format -d 'plain (one value a line), json (JSON lines), nft (an nftables script for `nft -f` that declares table `inet mispd` with sets mispd_v4 and mispd_v6), suricata (a dataset file), zeek (Intel framework file) or rpz (DNS response policy zone)' -r
complete -c mispctl -n "__fish_mispctl_using_subcommand export" -l type -d 'Only this indicator kind or MISP type (e.g. `ip`, `domain`, `sha256`)' -r
complete -c mispctl -n "__fish_mispctl_using_subcommand export" -l source -d 'Only indicators from this source' -r
complete -c mispctl -n "__fish_mispctl_using_subcommand export" -l table -d 'nft: the table (and set-name prefix) to declare instead of `mispd`' -r
complete -c mispctl -n "__fish_mispctl_using_subcommand export" -l dataset -d 'suricata: domains (default), urls, md5, sha1, sha256, ipv4 or ipv6' -r
complete -c mispctl -n "__fish_mispctl_using_subcommand export" -l socket -d 'The daemon\'s query socket' -r -F
complete -c mispctl -n "__fish_mispctl_using_subcommand export" -l json -d 'Print the daemon\'s JSON instead of human-readable text'
complete -c mispctl -n "__fish_mispctl_using_subcommand export" -s h -l help -d 'Print help'
complete -c mispctl -n "__fish_mispctl_using_subcommand changes" -l since -d 'The cursor a previous call printed' -r
complete -c mispctl -n "__fish_mispctl_using_subcommand changes" -l wait -d 'Seconds each wait may last (the daemon caps it at 300)' -r
complete -c mispctl -n "__fish_mispctl_using_subcommand changes" -l socket -d 'The daemon\'s query socket' -r -F
complete -c mispctl -n "__fish_mispctl_using_subcommand changes" -l follow -d 'Keep going: wait for each next change and print it as it comes'
complete -c mispctl -n "__fish_mispctl_using_subcommand changes" -l json -d 'Print the daemon\'s JSON instead of human-readable text'
complete -c mispctl -n "__fish_mispctl_using_subcommand changes" -s h -l help -d 'Print help'
complete -c mispctl -n "__fish_mispctl_using_subcommand help; and not __fish_seen_subcommand_from check-config pin lookup status quarantine release export changes help" -f -a "check-config" -d 'Check a configuration file: prints "ok" or names the file, the key and what is wrong'
complete -c mispctl -n "__fish_mispctl_using_subcommand help; and not __fish_seen_subcommand_from check-config pin lookup status quarantine release export changes help" -f -a "pin" -d 'Print the public-key pin (sha256//BASE64) of an https server, to paste into `pins`'
complete -c mispctl -n "__fish_mispctl_using_subcommand help; and not __fish_seen_subcommand_from check-config pin lookup status quarantine release export changes help" -f -a "lookup" -d 'Look values up (IPs, domains, URLs, hashes, emails...). With no value, or `-`, reads one value per line from standard input. Exits 0 if any value is listed, 1 if none is'
complete -c mispctl -n "__fish_mispctl_using_subcommand help; and not __fish_seen_subcommand_from check-config pin lookup status quarantine release export changes help" -f -a "status" -d 'Show the daemon\'s status: generation, indicator counts, each source\'s state'
complete -c mispctl -n "__fish_mispctl_using_subcommand help; and not __fish_seen_subcommand_from check-config pin lookup status quarantine release export changes help" -f -a "quarantine" -d 'List quarantined values with their source and reason'
complete -c mispctl -n "__fish_mispctl_using_subcommand help; and not __fish_seen_subcommand_from check-config pin lookup status quarantine release export changes help" -f -a "release" -d 'Apply a change a mass-change breaker is holding for SOURCE (root or the daemon\'s user)'
complete -c mispctl -n "__fish_mispctl_using_subcommand help; and not __fish_seen_subcommand_from check-config pin lookup status quarantine release export changes help" -f -a "export" -d 'Write the current set to standard output in a consumer\'s format (streamed). Errors go to standard error only; a reader that stops early (`| head`) ends it quietly, exit 0'
complete -c mispctl -n "__fish_mispctl_using_subcommand help; and not __fish_seen_subcommand_from check-config pin lookup status quarantine release export changes help" -f -a "changes" -d 'Print what was added and removed since CURSOR (`+ value` / `- value` lines, then the new cursor on standard error). Without a cursor, or with one the daemon no longer knows, the whole set comes as additions (a reset)'
complete -c mispctl -n "__fish_mispctl_using_subcommand help; and not __fish_seen_subcommand_from check-config pin lookup status quarantine release export changes help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
