# What a hostile guest writes into its workspace so that a host-side git run
# there executes something. Usage: sh plant.sh WORKSPACE MARKERS
# (MARKERS: a directory on the host; every planted command creates a file
# there, named after what ran it). Used by the unit tests on a host
# directory and by the end-to-end tests inside the guest, where the guest
# user runs it on /workspace.
set -eu
ws="$1"
m="$2"
git_dir="$ws/.git"

cat >>"$git_dir/config" <<CONFIG
[core]
	fsmonitor = "touch $m/fsmonitor; false #"
	hooksPath = .git/evil-hooks
	pager = "touch $m/pager; cat #"
	sshCommand = "touch $m/ssh #"
	askPass = "touch $m/askpass #"
	editor = "touch $m/editor #"
[include]
	path = evil.inc
[filter "cl"]
	clean = "touch $m/clean; cat #"
	smudge = "touch $m/smudge; cat #"
[filter "pr"]
	# Alive while git writes its handshake (else git may die of SIGPIPE
	# before the next plant runs: a flaky proof), then gone: git goes on
	# without the filter.
	process = "touch $m/process; sleep 1 #"
[diff "tc"]
	textconv = "touch $m/textconv; cat #"
[diff]
	external = "touch $m/external #"
[alias]
	st = "!touch $m/alias #"
[uploadpack]
	packObjectsHook = "touch $m/packobjectshook #"
CONFIG

# include.path is relative to the including file: .git/evil.inc
cat >"$git_dir/evil.inc" <<CONFIG
[alias]
	inc = "!touch $m/include #"
CONFIG

for dir in hooks evil-hooks; do
	mkdir -p "$git_dir/$dir"
	for hook in applypatch-msg pre-applypatch post-applypatch pre-commit \
		pre-merge-commit prepare-commit-msg commit-msg post-commit pre-rebase \
		post-checkout post-merge pre-push pre-receive update proc-receive \
		post-receive post-update reference-transaction push-to-checkout \
		pre-auto-gc post-rewrite sendemail-validate fsmonitor-watchman \
		post-index-change; do
		printf '#!/bin/sh\ntouch "%s/hook-%s" 2>/dev/null\nexit 0\n' "$m" "$hook" \
			>"$git_dir/$dir/$hook"
		chmod +x "$git_dir/$dir/$hook"
	done
done

printf '*.cl filter=cl\n*.pr filter=pr\n* diff=tc\n' >"$ws/.gitattributes"
printf 'clean me\n' >"$ws/a.cl"
printf 'process me\n' >"$ws/b.pr"
