#!/usr/bin/env bash
# Summarises the skip log the tests write (tests/common/skip.rs): one line
# per skip, `<test binary> <test>`, a tab, `<what is missing>`. Prints how many
# tests skipped and why; prints nothing when none did.
set -euo pipefail
log=${1:?usage: skip-summary.sh SKIP_LOG}
[ -s "$log" ] || exit 0
n=$(cut -f1 "$log" | sort -u | wc -l)
echo
echo "make test: $n test(s) SKIPPED, in whole or in part (STROMATEKT_ALLOW_SKIP=1); what they skipped proved nothing:"
sort -u "$log" | sed 's/\t/: /; s/^/  /'
echo "make test: the reasons, by count:"
sort -u "$log" | cut -f2- | sort | uniq -c | sort -rn | sed 's/^/  /'
