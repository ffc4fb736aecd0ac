# Proof that plant.sh's plants are live: ordinary git commands, run in a
# COPY of a planted workspace (never the workspace itself), execute them.
# Usage: sh prove.sh COPY. Each command may fail; what matters is the
# marker files it leaves (the test checks them).
set -u
cd "$1"
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.invalid
export GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.invalid
git status >/dev/null 2>&1                  # fsmonitor
git add a.cl >/dev/null 2>&1                # clean filter
git add b.pr >/dev/null 2>&1                # process filter
git commit -q -m planted >/dev/null 2>&1    # hooks (through core.hooksPath)
printf 'changed\n' >>README
git diff >/dev/null 2>&1                    # diff.external
git diff --no-ext-diff >/dev/null 2>&1      # textconv
printf 'dirty\n' >>a.cl
git checkout -- a.cl >/dev/null 2>&1        # smudge filter
git st >/dev/null 2>&1                      # alias
git inc >/dev/null 2>&1                     # alias from include.path
exit 0
