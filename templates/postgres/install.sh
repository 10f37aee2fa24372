# PostgreSQL on the data volume. The package's automatic cluster creation is switched off: on a
# fresh droplet whose volume already holds a cluster it fails while apt still exits 0. The
# cluster is created here, or adopted when the volume already has one.
major=15
data_dir=/var/lib/postgresql/$major/main

install -d -m 0755 /etc/postgresql-common
if ! grep -qs '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf; then
  if [ -f /etc/postgresql-common/createcluster.conf ]; then
    sed -i 's/^#\?\s*create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
  fi
  grep -qs '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf ||
    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
fi

if ! dpkg-query -W -f='${Status}' "postgresql-$major" 2>/dev/null | grep -q 'install ok installed'; then
  ms_apt install --no-install-recommends "postgresql-$major" postgresql-contrib postgresql-common
fi

chown postgres:postgres /var/lib/postgresql
if [ ! -d "/etc/postgresql/$major/main" ]; then
  if [ -f "$data_dir/PG_VERSION" ]; then
    ms_log "adopting the existing PostgreSQL $major cluster found on the volume"
    chown -R postgres:postgres "/var/lib/postgresql/$major"
    pg_createcluster "$major" main --datadir "$data_dir" >/dev/null
  else
    ms_log "creating the PostgreSQL $major cluster on the volume"
    pg_createcluster "$major" main --encoding UTF8 --locale C.UTF-8 >/dev/null
  fi
fi
systemctl enable "postgresql@$major-main" >/dev/null 2>&1
systemctl start "postgresql@$major-main"
