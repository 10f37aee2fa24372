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
    # pg_createcluster adopts a data directory by moving its config files to /etc/postgresql; a
    # Debian cluster keeps them in /etc, which went with the old droplet. Give it the files initdb
    # writes for a new cluster (local peer, host scram: never trust); postgres-config then replaces
    # pg_hba.conf and adds its settings.
    missing_conf=false
    for f in postgresql.conf pg_hba.conf pg_ident.conf; do
      [ -e "$data_dir/$f" ] || missing_conf=true
    done
    if [ "$missing_conf" = true ]; then
      scratch=$(mktemp -d /tmp/matrix-stack-initdb.XXXXXX)
      chown postgres:postgres "$scratch"
      (cd / && runuser -u postgres -- "/usr/lib/postgresql/$major/bin/initdb" -D "$scratch/data" \
        --encoding UTF8 --locale C.UTF-8 --auth-local peer --auth-host scram-sha-256 >/dev/null)
      for f in postgresql.conf pg_hba.conf pg_ident.conf; do
        [ -e "$data_dir/$f" ] || install -m 0600 -o postgres -g postgres "$scratch/data/$f" "$data_dir/$f"
      done
      rm -rf "$scratch"
    fi
    pg_createcluster "$major" main --datadir "$data_dir" >/dev/null
  else
    ms_log "creating the PostgreSQL $major cluster on the volume"
    pg_createcluster "$major" main --encoding UTF8 --locale C.UTF-8 >/dev/null
  fi
fi

# postgres-config's settings live in conf.d. The stock createcluster.conf (which adds that include
# to new clusters) is never installed, because the file above already exists when the package
# arrives; an adopted cluster gets initdb's plain postgresql.conf. Add the include if it is missing.
conf=/etc/postgresql/$major/main/postgresql.conf
restart=false
if ! grep -Eq "^[[:space:]]*include_dir[[:space:]]*=?[[:space:]]*'conf\.d'" "$conf"; then
  install -d -m 0755 -o postgres -g postgres "/etc/postgresql/$major/main/conf.d"
  printf "\n# matrix-stack: postgres-config's settings\ninclude_dir = 'conf.d'\n" >> "$conf"
  ms_log "$conf now includes conf.d"
  restart=true
fi
systemctl enable "postgresql@$major-main" >/dev/null 2>&1
if [ "$restart" = true ] && systemctl is-active --quiet "postgresql@$major-main"; then
  systemctl restart "postgresql@$major-main"
fi
systemctl start "postgresql@$major-main"
