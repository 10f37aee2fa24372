major=15
unit="postgresql@$major-main"
if ms_changed; then
  systemctl restart "$unit"
fi
systemctl is-active --quiet "$unit" || systemctl start "$unit"
for _ in $(seq 1 60); do
  runuser -u postgres -- pg_isready -q && break
  sleep 1
done
# The password file is read by psql, never passed on a command line.
runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -f /etc/matrix-stack/postgres-role.sql >/dev/null

collation=$(runuser -u postgres -- psql -X -At -c "SELECT datcollate || ' ' || datctype || ' ' || pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'synapse'")
if [ "$collation" != "C C UTF8" ]; then
  echo "matrix-stack: database synapse has collation/ctype/encoding '$collation'; Synapse needs 'C C UTF8'" >&2
  exit 1
fi
