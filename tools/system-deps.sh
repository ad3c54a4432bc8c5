#!/usr/bin/env bash
# System packages some tests need (nginx for the load-balancer test, chromium
# for the browser test), installed when missing and apt-get can be used
# (root on Debian/Ubuntu). Elsewhere those tests skip with the reason.
set -uo pipefail
want=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || want+=(nginx-light)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: not installing ${want[*]} (needs root and apt-get); their tests will skip"
    exit 0
fi
echo "system-deps: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null 2>&1; } \
    || echo "system-deps: could not install ${want[*]}; their tests will skip"
exit 0
