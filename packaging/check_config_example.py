#!/usr/bin/env python3
"""Checks packaging/mispd.toml without mispd: the file parses as TOML, has the sections and keys
the package promises, no [[source]] is active, and the commented [[source]] examples, once
uncommented, parse and use only the agreed source keys. `mispctl check-config` is the real
validation; this catches a broken default config before that subcommand exists."""
import re
import sys
import tomllib

SOURCE_KEYS = {
    "name", "kind", "url", "api-key", "pins", "ca-file", "interval", "full-resync",
    "page-size", "timeout", "to-ids-only", "published-only", "tags", "not-tags", "types",
}
EXPECTED = {
    "daemon": {"state-dir": "/var/lib/mispd", "credentials-dir": "/etc/mispd/credentials"},
    "query": {"socket": "/run/mispd/query.sock", "socket-mode": "0660"},
    "validation": {"warninglists": ["/usr/share/mispd/warninglists"],
                   "allowlist": "/etc/mispd/allowlist.txt"},
}


def main(path: str) -> int:
    text = open(path, encoding="utf-8").read()
    errors = []
    config = tomllib.loads(text)
    for section, keys in EXPECTED.items():
        if config.get(section) != keys:
            errors.append(f"[{section}] is {config.get(section)!r}, expected {keys!r}")
    if "source" in config:
        errors.append("a [[source]] is active: the shipped config must have none")
    extra = set(config) - set(EXPECTED)
    if extra:
        errors.append(f"unexpected top-level keys {sorted(extra)}")

    # Uncomment the examples: "#[[source]]" and "#key = value"; "##" lines stay comments.
    examples = "\n".join(
        line[1:] if re.match(r"^#(\[\[source\]\]|[a-z][a-z-]* = )", line) else line
        for line in text.splitlines()
    )
    sources = tomllib.loads(examples).get("source", [])
    if len(sources) < 2:
        errors.append(f"expected a misp and a feed example, found {len(sources)} source(s)")
    for source in sources:
        unknown = set(source) - SOURCE_KEYS
        if unknown:
            errors.append(f"source {source.get('name')!r} uses unknown keys {sorted(unknown)}")
        if source.get("kind") not in ("misp", "feed"):
            errors.append(f"source {source.get('name')!r} has kind {source.get('kind')!r}")
    for error in errors:
        print(f"{path}: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "packaging/mispd.toml"))
