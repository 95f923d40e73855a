#!/usr/bin/env bash
# The official image's /entrypoint (scripts/docker/entrypoint_prod.sh), the parts the stack
# uses: the UID/GID check, umask 0002, a passwd entry for an arbitrary UID, waiting for the
# metadata DB (long-running components) and the Celery broker, `bash` and `python`
# passed through, a leading `airflow` dropped, everything else run as `airflow ...`.
AIRFLOW_COMMAND="${1:-}"
set -euo pipefail
unset PIP_USER

if [[ $(id -g) != 0 && $(id -u) != 50000 ]]; then
  echo "ERROR! Your GID must be 0 (root) when you run the image with an arbitrary UID: $(id -u):$(id -g)" >&2
  exit 1
fi
umask 0002
: "${CONNECTION_CHECK_MAX_COUNT:=20}" "${CONNECTION_CHECK_SLEEP_TIME:=3}"
if ! whoami &> /dev/null; then
  if [[ -w /etc/passwd ]]; then
    echo "${USER_NAME:-default}:x:$(id -u):0:${USER_NAME:-default} user:${AIRFLOW_USER_HOME_DIR}:/sbin/nologin" >> /etc/passwd
  fi
  export HOME="${AIRFLOW_USER_HOME_DIR}"
fi

run_check_with_retries() {
  local cmd=$1 count=0
  while true; do
    if eval "$cmd" &> /dev/null; then return 0; fi
    count=$((count + 1))
    if (( count >= CONNECTION_CHECK_MAX_COUNT )); then
      echo "ERROR! Maximum number of retries (${CONNECTION_CHECK_MAX_COUNT}) reached." >&2
      echo "Last check result: $ ${cmd}" >&2
      eval "$cmd" >&2 || true
      exit 1
    fi
    sleep "${CONNECTION_CHECK_SLEEP_TIME}"
  done
}

wait_for_celery_broker() {
  local executor broker host_port
  executor=$(airflow config get-value core executor 2> /dev/null || true)
  [[ "$executor" == CeleryExecutor ]] || return 0
  broker=$(airflow config get-value celery broker_url)
  host_port=$(python -c "import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.hostname, p.port or {'redis': 6379, 'amqp': 5672}.get(p.scheme, 6379))" "$broker")
  run_check_with_retries "nc -zvvn \$(getent hosts ${host_port% *} | cut -d' ' -f1) ${host_port#* }"
}

if [[ ${AIRFLOW_COMMAND} == airflow ]]; then
  AIRFLOW_COMMAND="${2:-}"
  shift
fi
case "${AIRFLOW_COMMAND}" in
  scheduler|dag-processor|triggerer|api-server)
    if (( CONNECTION_CHECK_MAX_COUNT > 0 )); then run_check_with_retries "airflow db check"; fi ;;
esac
if [[ -n "${_AIRFLOW_DB_MIGRATE:-}" ]]; then airflow db migrate || true; fi
if [[ ${AIRFLOW_COMMAND} == bash ]]; then shift; exec "/bin/bash" "${@}"; fi
if [[ ${AIRFLOW_COMMAND} == python ]]; then shift; exec "python" "${@}"; fi
if [[ ${AIRFLOW_COMMAND} =~ ^(scheduler|celery)$ ]] && (( CONNECTION_CHECK_MAX_COUNT > 0 )); then
  wait_for_celery_broker
fi
exec "airflow" "${@}"
