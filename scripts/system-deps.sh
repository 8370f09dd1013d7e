#!/usr/bin/env bash
# System packages the project needs that pip cannot install: the ODBC driver manager (pyodbc),
# FreeTDS (the SQL Server ODBC driver used here) and the PostgreSQL ODBC driver.
# Idempotent; installs only what is missing. Needs root (as on CI and the dev machines).
set -euo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q 'libodbc.so.2' || need+=(unixodbc)
[ -e /usr/lib/x86_64-linux-gnu/odbc/libtdsodbc.so ] || need+=(tdsodbc)
for extra in "$@"; do
  dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q "${need[@]}" >/dev/null
  }
fi
