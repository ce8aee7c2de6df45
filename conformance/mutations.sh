#!/usr/bin/env bash
# Deliberate breakages of the waypoint that the conformance harness must catch.
#
# Each mutation rewrites one line of the waypoint's source in a scratch worktree, builds that
# waypoint, and runs the named cases against it: the run must fail. A mutation the harness
# lets pass means a check is weaker than upstream's. A mutation whose line is gone (the code
# moved) is reported as stale: update its pattern, do not drop it.
#
#   conformance/mutations.sh            # every mutation
#   conformance/mutations.sh h2c        # those whose name contains "h2c"
#
# Slow (one waypoint build per mutation, incremental after the first); CI does not run it.
# It takes /tmp/conformance.lock around each run, as every conformance run must (the echo
# pods bind fixed loopback addresses).
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
manifests=${WAYPOINT_CONFORMANCE_DIR:-$root/../shared/conformance/gateway-api-v1.6.1}
work=${WAYPOINT_MUTATION_DIR:-${TMPDIR:-/tmp}/waypoint-mutations}
tree=$work/tree
export CARGO_TARGET_DIR=$work/target CARGO_INCREMENTAL=1

# name | file | perl substitution (one line) | cases (--only) | source (kube or files)
mutations=(
  "h2c-ignored|waypoint-core/src/config/protocol.rs|s/(\"kubernetes.io\/h2c\"\) => Some\(\(PortProtocol::Http, )AppProtocol::H2c/\${1}AppProtocol::Http1/|HTTPRouteBackendProtocolH2C|kube"
  "accepted-reason-wrong|filters/src/route/attach.rs|s/cond\(\"Accepted\", true, \"Accepted\", \"attached\"\)/cond(\"Accepted\", true, \"Attached\", \"attached\")/|HTTPRouteSimpleSameNamespace|kube"
  "mirror-to-root|waypoint-core/src/upstream/mod.rs|s/let mut req = replay.request\(\);/let mut req = replay.request(); *req.uri_mut() = http::Uri::from_static(\"\/\");/|HTTPRouteRequestMirror|kube"
  "observed-generation-zero|kube/src/status/schema.rs|s/condition\[\"observedGeneration\"\] = json!\(generation\)/condition[\"observedGeneration\"] = json!(0)/|HTTPRouteSimpleSameNamespace|kube"
)

mkdir -p "$work"
if [ ! -d "$tree" ]; then
  git -C "$root" worktree add --detach "$tree" HEAD >/dev/null
fi
git -C "$tree" checkout -q --detach "$(git -C "$root" rev-parse HEAD)"

caught=0 missed=0 stale=0
for m in "${mutations[@]}"; do
  IFS='|' read -r name file subst cases source <<<"$m"
  if [ $# -gt 0 ] && [[ $name != *"$1"* ]]; then continue; fi
  git -C "$tree" checkout -q -- .
  before=$(sha1sum "$tree/$file")
  perl -pi -e "$subst" "$tree/$file"
  if [ "$before" = "$(sha1sum "$tree/$file")" ]; then
    echo "STALE  $name: the pattern no longer matches $file"
    stale=$((stale + 1))
    continue
  fi
  (cd "$tree" && cargo build -q -p waypoint-bin -p waypoint-conformance)
  log=$work/$name.log
  set +e
  (cd "$tree" && flock /tmp/conformance.lock "$CARGO_TARGET_DIR/debug/waypoint-conformance" \
    --manifests "$manifests" --waypoint "$CARGO_TARGET_DIR/debug/waypoint" \
    --source "$source" --only "$cases" --report /dev/null) >"$log" 2>&1
  status=$?
  set -e
  # Caught: a case failed, or the suite refused to start (the base never became ready).
  why=$(grep -m1 -A1 '^FAIL ' "$log" | tail -1; grep -m1 '^waypoint-conformance: ' "$log" || true)
  if [ $status -ne 0 ] && [ -n "$why" ]; then
    echo "CAUGHT $name: $(echo "$why" | head -1 | cut -c1-200)"
    caught=$((caught + 1))
  else
    echo "MISSED $name: the cases passed against the broken waypoint (log: $log)"
    missed=$((missed + 1))
  fi
done
git -C "$tree" checkout -q -- .
echo "caught $caught, missed $missed, stale $stale"
[ $missed -eq 0 ] && [ $stale -eq 0 ]
