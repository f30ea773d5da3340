#!/usr/bin/env bash
# The README's Team walk-through on one machine, start to end: a throw-away PostgreSQL,
# the team server on a copy of examples/notes, alice asks to run `migrate` in production,
# bob and carol (group dba: the task needs two of them) approve from their own shells,
# alice runs it, anyone verifies the audit log, and bob gets a web console link.
# Everything lives in one temporary directory, removed (server and PostgreSQL stopped)
# when the script ends, however it ends. Usage: examples/team/try.sh
# ONEOFF: the oneoff to use (default: oneoff on PATH, else this repository's .venv).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
if [[ -z "${ONEOFF:-}" ]]; then
    if command -v oneoff >/dev/null; then ONEOFF="$(command -v oneoff)"; else ONEOFF="$repo/.venv/bin/oneoff"; fi
fi

# Prints a command as a reader would type it, then runs it.
step() {
    printf '\n$ %s\n' "$*" | sed "s|$ONEOFF|oneoff|g; s|$work|\$WORK|g"
    "$@"
}

bindir="$(pg_config --bindir 2>/dev/null || true)"
if [[ ! -x "$bindir/initdb" ]]; then
    bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
fi
[[ -x "$bindir/initdb" ]] || { echo "try.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 2; }

# PostgreSQL refuses to run as root: as root, it runs as the postgres user.
as_pg=()
[[ "$(id -u)" == 0 ]] && as_pg=(runuser -u postgres --)

work="$(mktemp -d /tmp/oneoff-team-XXXXXX)"
chmod 0755 "$work"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if [[ -f "$work/pg/data/postmaster.pid" ]]; then
        "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "# 1. A throw-away PostgreSQL, listening only on a Unix socket in $work/pg"
mkdir "$work/pg"
[[ "$(id -u)" == 0 ]] && chown postgres:postgres "$work/pg"
step "${as_pg[@]}" "$bindir/initdb" -D "$work/pg/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
step "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
    -o "-c listen_addresses='' -c unix_socket_directories='$work/pg'" start
# Every oneoff command here (server and CLI) shares this store.
export ONEOFF_STORE_URL="postgresql://postgres@/postgres?host=$work/pg"
step "$ONEOFF" server migrate

echo "# 2. The app (a copy of examples/notes), three people and a release key"
app="$work/notes"
mkdir "$work/keys"
cp -r "$repo/examples/notes" "$app"
rm -rf "$app/var" "$app/.oneoff"
find "$app" -name __pycache__ -prune -exec rm -rf {} +
for who in alice:developers bob:dba carol:dba; do
    name="${who%%:*}"
    step ssh-keygen -q -t ed25519 -N '' -C "$name@demo" -f "$work/keys/$name"
    read -r kind blob _ <"$work/keys/$name.pub"
    echo "$name $kind $blob $name@demo groups=${who#*:}" >>"$app/people/allowed_signers"
done
step "$ONEOFF" keys generate --out "$work/keys" | tee "$work/keys/trust.txt"
trusted="$(grep -o 'ed25519:[A-Za-z0-9+/=]*' "$work/keys/trust.txt" | head -n 1)"
# Production is protected: it runs only a release signed by a key oneoff.toml trusts.
sed -i "s|^\[release\]\$|[release]\ntrusted_keys = [\"$trusted\"]|" "$app/oneoff.toml"
grep -q "$trusted" "$app/oneoff.toml"
# Someone must be allowed to release production; the example's policies let nobody.
cat >"$app/policies/release.cedar" <<'CEDAR'
@id("dba-release-production")
permit (principal in Oneoff::Group::"dba", action == Oneoff::Action::"release", resource)
when { context.environment == "production" };
CEDAR
cd "$app"
# Production's config comes from the platform (inherit): here, this shell.
export DATABASE_URL=sqlite:///var/notes.db SECRET_KEY=demo-secret-not-for-real-use PORT=8000
step "$ONEOFF" release create --env production --key "$work/keys/release.key" --person-key "$work/keys/bob"

echo "# 3. The team server (it pins these people and policies on its first start)"
echo '$ oneoff server --app $WORK/notes --listen 127.0.0.1:0 --ready-file $WORK/ready &'
"$ONEOFF" server --app "$app" --listen 127.0.0.1:0 --ready-file "$work/ready" </dev/null >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do [[ -s "$work/ready" ]] && break; kill -0 "$server_pid" || exit 1; sleep 0.1; done
server="http://$(cat "$work/ready")"
echo "server: $server"

echo "# 4. alice (shell 1) asks to run migrate in production; bob and carol (shells 2, 3) approve"
step "$ONEOFF" request migrate --env production -p target=latest --server "$server" --key "$work/keys/alice" | tee "$work/request.txt"
id="$(grep -o 'q[0-9][0-9A-Za-z_-]*' "$work/request.txt" | head -n 1)"
step "$ONEOFF" approve "$id" --yes --server "$server" --key "$work/keys/bob"
step "$ONEOFF" approve "$id" --yes --server "$server" --key "$work/keys/carol"

echo "# 5. alice runs the approved request; anyone verifies the server's audit log"
step "$ONEOFF" run --request "$id" --server "$server" --key "$work/keys/alice"
ONEOFF_SIGNING_KEY="$work/keys/bob" step "$ONEOFF" audit verify --server "$server"

echo "# 6. bob opens the web console: open the link it prints"
step "$ONEOFF" login --web --server "$server" --key "$work/keys/bob"
