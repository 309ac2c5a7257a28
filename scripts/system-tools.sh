#!/usr/bin/env bash
# Install the Debian tools firebox's tests and demo use (SIPp, Chromium), when the machine
# lets us: root with apt-get. Anything else prints what is missing and carries on; tests that
# need a tool say so themselves.
set -u
want=()
command -v sipp >/dev/null 2>&1 || want+=(sip-tester)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends "${want[@]}") >/tmp/firebox-apt.log 2>&1 \
    || echo "apt-get could not install ${want[*]} (see /tmp/firebox-apt.log); continuing"
else
  echo "missing system tools (${want[*]}); install them with: apt-get install -y ${want[*]}"
fi
exit 0
