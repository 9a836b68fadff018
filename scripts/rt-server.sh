#!/usr/bin/env bash
# A private Request Tracker 5 (Debian's request-tracker5) for end-to-end tests.
#
#   scripts/rt-server.sh start <port> <workdir>   # prints one line once REST 2.0 answers
#   scripts/rt-server.sh stop <workdir>           # stops it and removes <workdir>
#
# With RT_SERVER_WATCH_PID=<pid> in the environment, start also leaves a
# watcher that runs stop once that process has exited (tests that start their
# own RT pass their pid: the RT goes away even when the test binary is killed).
#
# start installs request-tracker5, rt5-db-sqlite and rt5-standalone with
# apt-get when missing (apt-get update only if the install fails), then, all
# inside <workdir> (created if needed) and without touching /etc/request-tracker5,
# /var/lib/request-tracker5 or the package's database:
#   - etc/RT_SiteConfig.pm: SQLite database var/rtdb, web on 127.0.0.1:<port>,
#     logs to stderr, mail swallowed. RT reads it through RT_SITE_CONFIG and
#     RT_SITE_CONFIG_DIR (an empty etc/RT_SiteConfig.d), so the system's
#     RT_SiteConfig.d (which points at the dbconfig-common database) is skipped;
#     Mason cache, sessions and VarPath are set inside the workdir too;
#   - rt-setup-database-5 --action init: schema and core data (a fresh RT:
#     user root, password "password", queue General);
#   - etc/initialdata (loaded with --action insert): the ticket custom field
#     IncidentId applied to General, and the rights a privileged user needs on
#     General (see, create, modify, comment, own), so a test can create an
#     ordinary operator through REST 2.0 and act as them;
#   - root.token (mode 600): an RT auth token for root, for tests of
#     `Authorization: token ...`; never printed;
#   - rt-server (Starlet, 2 workers) bound to 127.0.0.1:<port>, its own
#     process group (pid in rt-server.pid, log in rt-server.log).
# It waits until GET /REST/2.0/queues/all answers 200 (60 s at most).
# Starting takes about 5 s on a 2-core machine (three short Perl runs for the
# database, the token, then the server is up within 2 s).
set -euo pipefail

RT_LIB=/usr/share/request-tracker5/lib
RT_SERVER=/usr/share/request-tracker5/libexec/rt-server
RT_SETUP=/usr/sbin/rt-setup-database-5
MARKER=.incidentd-rt-server
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

die() {
  echo "rt-server.sh: $*" >&2
  exit 1
}

usage() {
  die "usage: $0 start <port> <workdir> | stop <workdir>"
}

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null; }
}

ensure_packages() {
  local missing=()
  for p in request-tracker5 rt5-db-sqlite rt5-standalone; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "rt-server.sh: installing ${missing[*]} (apt-get)" >&2
    apt_install "${missing[@]}"
  fi
  [ -x "$RT_SERVER" ] && [ -x "$RT_SETUP" ] || die "request-tracker5 is installed but $RT_SERVER or $RT_SETUP is missing"
}

# Alive and not a zombie (a reaped-late zombie still answers kill -0).
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

start() {
  local port=$1 work=$2
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -gt 0 ] && [ "$port" -lt 65536 ] || die "bad port: $port"
  ensure_packages
  # Another server on the port would answer the readiness check for us.
  if perl -MIO::Socket::INET -e 'exit(IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $ARGV[0], Timeout => 1) ? 0 : 1)' "$port"; then
    die "127.0.0.1:$port is already in use"
  fi
  mkdir -p "$work"
  work=$(cd "$work" && pwd)
  [ -e "$work/rt-server.pid" ] && die "$work already runs an RT (stop it first)"
  touch "$work/$MARKER"
  mkdir -p "$work/etc/RT_SiteConfig.d" "$work/var/mason" "$work/var/session"
  # Perl single-quoted strings: the workdir must not carry a quote or backslash.
  case "$work" in *"'"* | *\\*) die "workdir must not contain ' or \\" ;; esac

  cat >"$work/etc/RT_SiteConfig.pm" <<EOF
# Written by scripts/rt-server.sh for a throwaway test RT.
Set(\$rtname, 'incidentd-test');
Set(\$Organization, 'incidentd-test');
Set(\$Timezone, 'UTC');
Set(\$DatabaseType, 'SQLite');
Set(\$DatabaseName, '$work/var/rtdb');
Set(\$DatabaseHost, 'localhost');
Set(\$DatabaseUser, '');
Set(\$DatabasePassword, '');
Set(\$WebPath, '');
Set(\$WebDomain, '127.0.0.1');
Set(\$WebPort, $port);
Set(\$WebBaseURL, 'http://127.0.0.1:$port');
Set(\$LogToSyslog, undef);
Set(\$LogToFile, undef);
Set(\$LogToSTDERR, 'warning');
# Tickets and comments would mail the requestors and watchers: swallow it.
Set(\$MailCommand, sub { 1 });
# The package compiles these into RT::Generated under /var; keep them here.
\$RT::VarPath = '$work/var';
\$RT::MasonDataDir = '$work/var/mason';
\$RT::MasonSessionDir = '$work/var/session';
1;
EOF

  cat >"$work/etc/initialdata" <<'EOF'
# Loaded by scripts/rt-server.sh after the core data.
@CustomFields = (
    {
        Name        => 'IncidentId',
        Type        => 'FreeformSingle',
        LookupType  => 'RT::Queue-RT::Ticket',
        Description => 'incidentd incident id (find-before-create)',
        ApplyTo     => 'General',
    },
);
@ACL = map {
    { GroupDomain => 'SystemInternal', GroupType => 'Privileged', Queue => 'General', Right => $_ }
} qw(SeeQueue ShowTicket ShowTicketComments CreateTicket ModifyTicket CommentOnTicket
     ReplyToTicket OwnTicket TakeTicket SeeCustomField ModifyCustomField);
1;
EOF

  export RT_SITE_CONFIG="$work/etc/RT_SiteConfig.pm" RT_SITE_CONFIG_DIR="$work/etc/RT_SiteConfig.d"
  local started=$SECONDS
  (
    cd "$work"
    "$RT_SETUP" --action init --skip-create
    "$RT_SETUP" --action insert --datafile "$work/etc/initialdata"
  ) >"$work/setup.log" 2>&1 || {
    tail -n 20 "$work/setup.log" >&2
    die "rt-setup-database failed (log: $work/setup.log)"
  }

  (
    umask 077
    cd "$work"
    perl -I"$RT_LIB" -e '
      use RT; RT::LoadConfig(); RT::Init(); require RT::AuthToken;
      my $u = RT::User->new(RT->SystemUser); $u->Load("root");
      my $t = RT::AuthToken->new(RT->SystemUser);
      my ($id, $msg, $auth) = $t->Create(Owner => $u->Id, Description => "incidentd tests");
      die "auth token: $msg\n" unless $id;
      print $auth, "\n";' >"$work/root.token"
  ) 2>>"$work/setup.log" || die "creating the root token failed (log: $work/setup.log)"

  # setsid: its own process group, so stop ends the Starlet master and workers
  # together and nothing else.
  # The pid is written from inside the new session (setsid forks when its
  # caller already leads a process group), then the shell becomes rt-server.
  (cd "$work" && exec setsid sh -c 'echo $$ >rt-server.pid; exec "$@"' rt-server \
    "$RT_SERVER" --host 127.0.0.1 --port "$port" --max-workers 2 \
    >"$work/rt-server.log" 2>&1 </dev/null) &
  local pid=""
  for _ in $(seq 1 50); do
    [ -s "$work/rt-server.pid" ] && pid=$(cat "$work/rt-server.pid") && break
    sleep 0.1
  done
  [ -n "$pid" ] || die "rt-server did not start (log: $work/rt-server.log)"

  local url="http://127.0.0.1:$port"
  for _ in $(seq 1 600); do
    if ! alive "$pid"; then
      tail -n 20 "$work/rt-server.log" >&2
      rm -f "$work/rt-server.pid"
      die "rt-server exited (port $port taken?); log: $work/rt-server.log"
    fi
    if perl -MHTTP::Tiny -MMIME::Base64 -e '
        my $r = HTTP::Tiny->new(timeout => 2)->get($ARGV[0],
          { headers => { Authorization => "Basic " . encode_base64("root:password", "") } });
        exit($r->{status} == 200 ? 0 : 1)' "$url/REST/2.0/queues/all" 2>/dev/null; then
      if [[ "${RT_SERVER_WATCH_PID:-}" =~ ^[0-9]+$ ]]; then
        setsid "$SELF" watch "$RT_SERVER_WATCH_PID" "$work" "$pid" </dev/null >/dev/null 2>&1 &
      fi
      echo "rt-server.sh: RT $(perl -I"$RT_LIB" -MRT -e 'print $RT::VERSION') REST 2.0 on $url (pid $pid, ready in $((SECONDS - started)) s)"
      return 0
    fi
    sleep 0.1
  done
  stop "$work" >/dev/null 2>&1 || true
  die "RT did not answer on $url within 60 s"
}

# Ends the process group rt-server leads (setsid above): master and workers.
kill_group() {
  local pid=$1
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    alive "$pid" || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
}

stop() {
  local work=$1
  [ -d "$work" ] || return 0
  [ -e "$work/$MARKER" ] || die "$work was not made by rt-server.sh start; not touching it"
  [ -s "$work/rt-server.pid" ] && kill_group "$(cat "$work/rt-server.pid")"
  rm -rf "$work"
}

# Internal: once <owner> has exited, ends RT (<rtpid>, remembered here so a
# workdir removed before stop cannot leave RT running) and removes <workdir>.
watch() {
  local owner=$1 work=$2 pid=$3
  while alive "$owner" && alive "$pid"; do
    sleep 1
  done
  alive "$pid" && kill_group "$pid"
  [ -e "$work/$MARKER" ] && rm -rf "$work"
  return 0
}

case "${1:-}" in
  start)
    [ $# = 3 ] || usage
    start "$2" "$3"
    ;;
  stop)
    [ $# = 2 ] || usage
    stop "$2"
    ;;
  watch)
    [ $# = 4 ] || usage
    watch "$2" "$3" "$4"
    ;;
  *) usage ;;
esac
