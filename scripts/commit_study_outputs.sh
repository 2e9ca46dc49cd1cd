#!/bin/bash
# Commit the context-use study's outputs as they are now, with its report and the README regenerated from
# exactly them:
#
#     scripts/commit_study_outputs.sh "why these outputs"
#
# The study's launchers (python -m studies.context_use.run) keep writing outputs while they run, and the report
# takes tens of seconds: an output written meanwhile would be committed beside a report that never read it
# (studies/tests/test_context_use.py::test_the_committed_report_is_what_the_outputs_give fails on a clean clone).
# So the launchers are paused (SIGSTOP) from the snapshot to the commit and resumed after, however this ends.
# Every output is written whole (a temporary file moved into place), so a paused launcher leaves only whole files
# and its own temporary ones, which are never committed.
set -eu
cd "$(dirname "$0")/.."
msg=${1:?give the commit message}
study=figures/results/context_use
py=${PYTHON:-.venv/bin/python}

pids=$(pgrep -f "studies.context_use.run" || true)
resume() { for p in $pids; do kill -CONT "$p" 2>/dev/null || true; done; }
trap resume EXIT
for p in $pids; do kill -STOP "$p"; done

snapshot() {
  git ls-files -o -m --exclude-standard "$study" | grep -v "report\.\(json\|md\)$" \
    | grep -v "\.tmp[0-9]*\(\.[a-z]*\)\?$" | sort | while read -r f; do echo "$f $(stat -c %Y "$f")"; done
}
before=$(snapshot)
OMP_WAIT_POLICY=PASSIVE "$py" -m studies.context_use.report --no-figures > /dev/null
"$py" -m studies.update_readme > /dev/null
after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "outputs changed while the report was written (a launcher not paused?); nothing committed" >&2
  exit 1
fi
files=$(echo "$after" | awk 'NF {print $1}')
[ -z "$files" ] || git add $files
git add "$study/report.json" "$study/report.md"
git commit -q -m "$msg" -- $files "$study/report.json" "$study/report.md" README.md docs/results.md
"$py" -m studies.context_use.report --check --no-figures
git log --oneline -1
